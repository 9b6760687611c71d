"""Tabby's real editor agent (npm `tabby-agent` 1.5.0) against the suite: it connects with the
suite's key, completes through LSP with our text, and its view / select events are counted.

TABBY_AGENT=.../dist/cli.js .venv/bin/python -m pytest tests/apps/code_assist/test_tabby_agent.py -q

Skipped without node or the agent: `make tabby-agent` installs it under .cache/tabby-agent, where
it is found without TABBY_AGENT.
"""

from __future__ import annotations

import os
import shutil

import httpx
import pytest

from tests.apps.code_assist.conftest import API_KEY
from tests.apps.code_assist.tabby_agent import JsonLinesAgent, LspAgent, find_cli, write_home

AUTH = {"Authorization": f"Bearer {API_KEY}"}
# Documents the embedded model completes (greedy, so the same way every time): the first it
# completes with some text is used, as the agent hands no empty completion to the editor.
CANDIDATES = [
    ('def mean(values: list[float]) -> float:\n    """The arithmetic mean."""\n    return ', "\n"),
    ("import os\n\npath = os.", "\n"),
    ("x = ", "\n"),
    ("class Cart:\n    def __init__(self):\n        self.", "\n"),
    ("def area(width, height):\n    return ", ""),
]
URI = "file:///workspace/shop/report.py"


@pytest.fixture(scope="module")
def cli():
    found = find_cli(os.environ)
    if found is None or shutil.which("node") is None:
        pytest.skip("tabby-agent needs node and its dist/cli.js: set TABBY_AGENT or run `make tabby-agent`")
    return found


@pytest.fixture(scope="module")
def http(suite):
    with httpx.Client(base_url=f"{suite}/code", headers=AUTH, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def document(http) -> tuple[str, str, str]:
    """(prefix, suffix, our completion at the cursor), asked of the server directly."""
    for prefix, suffix in CANDIDATES:
        body = {"language": "python", "segments": {"prefix": prefix, "suffix": suffix}}
        text = http.post("/v1/completions", json=body).json()["choices"][0]["text"]
        if text:
            return prefix, suffix, text
    pytest.fail(f"the model completes none of {CANDIDATES}: add a document it completes")


@pytest.fixture(scope="module")
def agent(cli, suite, tmp_path_factory):
    home = write_home(tmp_path_factory.mktemp("home"), endpoint=f"{suite}/code", token=API_KEY)
    with JsonLinesAgent(cli, home) as agent:
        assert agent.call("initialize", {"clientProperties": {"session": {"client": "pytest"}}}) is True
        yield agent


@pytest.fixture(scope="module")
def lsp(cli, suite, tmp_path_factory):
    home = write_home(tmp_path_factory.mktemp("home"), endpoint=f"{suite}/code", token=API_KEY)
    with LspAgent(cli, home) as lsp:
        client = {"name": "pytest", "version": "0"}  # processId: the agent exits if pytest dies
        lsp.request("initialize", {"processId": os.getpid(), "capabilities": {}, "clientInfo": client})
        lsp.notify("initialized", {})
        yield lsp


def python_stats(http) -> dict:
    rows = {row["language"]: row for row in http.get("/v1/stats").json()["languages"]}
    return rows.get("python", {"completions": 0, "views": 0, "selects": 0})


def test_the_agent_reads_the_temporary_home_and_phones_nowhere_else(agent, suite):
    config = agent.call("getConfig")
    assert (config["server"]["endpoint"], config["server"]["token"]) == (f"{suite}/code", API_KEY)
    assert config["anonymousUsageTracking"]["disable"] is True


def test_the_agent_connects_to_our_health_with_the_key(agent):
    status = agent.call("getStatus")
    assert status == "ready", agent.tail(f"status {status}")  # "unauthorized": the key was refused
    health = agent.call("getServerHealthState")  # our GET /code/v1/health, as the agent parsed it
    assert health is not None and health["model"] == "embedded:code", agent.tail(f"health {health}")


def test_an_lsp_completion_is_our_completion(lsp, document):
    prefix, suffix, text = document
    opened = {"uri": URI, "languageId": "python", "version": 1, "text": prefix + suffix}
    lsp.notify("textDocument/didOpen", {"textDocument": opened})
    cursor = {"line": prefix.count("\n"), "character": len(prefix.rsplit("\n", 1)[-1])}
    result = lsp.request("textDocument/completion", {"textDocument": {"uri": URI}, "position": cursor})
    [item] = result["items"]
    assert item["textEdit"] == {"newText": text, "range": {"start": cursor, "end": cursor}}
    assert item["data"]["completionId"].startswith("cmpl-")  # our id: the agent's own are "agent-..."


def test_the_agents_view_and_select_events_are_counted(agent, http, document):
    prefix, suffix, _ = document
    before = python_stats(http)
    request = {"filepath": "/workspace/shop/report.py", "language": "python", "text": prefix + suffix}
    completion = agent.call("provideCompletions", {**request, "position": len(prefix), "manually": True})
    assert completion is not None, agent.tail("provideCompletions failed")
    event = {"completion_id": completion["id"], "choice_index": 0}
    assert agent.call("postEvent", {"type": "view", **event}) is True
    assert agent.call("postEvent", {"type": "select", "select_kind": "line", "elapsed": 400, **event}) is True
    after = python_stats(http)
    assert after["completions"] == before["completions"] + 1
    assert (after["views"], after["selects"]) == (before["views"] + 1, before["selects"] + 1)
