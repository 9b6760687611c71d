"""The code-assist API over loopback HTTP, spoken the way Tabby's editor plugins speak it: health,
server settings, completions with segments, then view / select / dismiss events and the report.

.venv/bin/python -m pytest tests/apps/code_assist/test_api.py -q
"""

from __future__ import annotations

import ast
from pathlib import Path

import httpx
import pytest

from tests.apps.code_assist.conftest import API_KEY, write_report

AUTH = {"Authorization": f"Bearer {API_KEY}"}
CART_PREFIX = "from shop.money import to_cents\n\n\ndef total(cart):\n    return sum("
CART_SUFFIX = ")\n"


@pytest.fixture(scope="module")
def http(suite) -> httpx.Client:
    with httpx.Client(base_url=f"{suite}/code", headers=AUTH, timeout=60) as client:
        yield client


def complete(http: httpx.Client, **segments) -> dict:
    body = {
        "language": "python",
        "segments": segments,
        "debug_options": {"return_snippets": True, "return_prompt": True},
    }
    response = http.post("/v1/completions", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_health_answers_without_a_key_in_tabbys_shape(suite):
    health = httpx.get(f"{suite}/code/v1/health").json()
    assert health["model"] == "embedded:code"
    assert health["device"] == "cpu" and health["cpu_count"] >= 1 and "git_describe" in health["version"]


def test_server_setting_lets_the_plugin_send_events(http):
    assert http.get("/v1beta/server_setting").json() == {"disable_client_side_telemetry": False}


def test_a_completion_has_tabbys_shape_and_an_id_for_events(http):
    out = complete(http, prefix=CART_PREFIX, suffix=CART_SUFFIX, filepath="shop/report.py")
    assert out["id"].startswith("cmpl-")
    assert [choice["index"] for choice in out["choices"]] == [0]
    assert isinstance(out["choices"][0]["text"], str)


def test_the_prompt_carries_the_repository_and_the_editors_snippets(http):
    declaration = {"filepath": "shop/tax.py", "body": "def vat(cents: int) -> int:\n    return cents // 5"}
    out = complete(
        http, prefix=CART_PREFIX, suffix=CART_SUFFIX, filepath="shop/report.py", declarations=[declaration]
    )
    files = [snippet["filepath"] for snippet in out["debug_data"]["snippets"]]
    assert files[0] == "shop/tax.py"  # the editor's declarations come first
    assert set(files[1:]) <= {"shop/cart.py", "shop/money.py"} and files[1:]  # the index's, for to_cents
    prompt = out["debug_data"]["prompt"]
    assert "# Path: shop/tax.py\n# def vat(cents: int) -> int:\n#     return cents // 5\n" in prompt
    assert prompt.startswith("<|fim_prefix|><|fim_suffix|>" + CART_SUFFIX + "<|fim_middle|>")
    assert prompt.endswith(CART_PREFIX)


def test_the_current_file_is_never_its_own_context(http):
    out = complete(http, prefix="def to_cents(x):\n    return ", suffix="\n", filepath="shop/money.py")
    assert "shop/money.py" not in [snippet["filepath"] for snippet in out["debug_data"]["snippets"]]


def test_a_completion_in_the_middle_of_a_line_stays_on_it(http):
    out = complete(http, prefix="def add(a, b):\n    return a", suffix=" + b\n", filepath="calc.py")
    assert "\n" not in out["choices"][0]["text"]


def test_a_cursor_inside_a_word_completes_that_word(http):
    prefix = "def add(a, b):\n    retur"  # tokenized " re" + "tur": healed, the model writes " return..."
    out = complete(http, prefix=prefix, suffix="\n", filepath="calc.py")
    assert out["debug_data"]["prompt"].endswith(prefix)  # the prompt shown is the editor's text
    assert out["choices"][0]["text"][:1] in ("", "n")  # " return", " returns", ... less " retur"


def test_a_completion_never_leaves_the_file_unparsable(http):
    prefix, suffix = "def area(width, height):\n    return ", "\n\n\nprint(area(2, 3))\n"  # parses as it is
    text = complete(http, prefix=prefix, suffix=suffix, filepath="geometry.py")["choices"][0]["text"]
    ast.parse(prefix + text + suffix)


def test_events_are_stored_and_reported_as_acceptance_per_language(http):
    before = {row["language"]: row for row in http.get("/v1/stats").json()["languages"]}
    go = http.post(
        "/v1/completions",
        json={
            "language": "go",
            "segments": {"prefix": "package main\n\nfunc main() {\n\t", "suffix": "\n}\n"},
        },
    ).json()
    assert (
        http.post(
            "/v1/events", json={"type": "view", "completion_id": go["id"], "choice_index": 0}
        ).status_code
        == 200
    )
    select = {"type": "select", "completion_id": go["id"], "choice_index": 0, "elapsed": 850, "view_id": "v1"}
    assert http.post("/v1/events", params={"select_kind": "line"}, json=select).status_code == 200
    after = {row["language"]: row for row in http.get("/v1/stats").json()["languages"]}
    seen = before.get("go", {"completions": 0, "views": 0, "selects": 0})
    assert after["go"]["completions"] == seen["completions"] + 1
    assert (after["go"]["views"], after["go"]["selects"]) == (seen["views"] + 1, seen["selects"] + 1)
    assert after["go"]["acceptance_rate"] == pytest.approx(after["go"]["selects"] / after["go"]["views"])


def test_an_event_for_an_unknown_completion_is_a_404_naming_it(http):
    response = http.post("/v1/events", json={"type": "view", "completion_id": "cmpl-nope"})
    assert response.status_code == 404 and "cmpl-nope" in response.text


def test_an_unknown_event_type_is_refused_naming_the_field(http):
    out = complete(http, prefix="x = ", suffix="")
    response = http.post("/v1/events", json={"type": "copy", "completion_id": out["id"]})
    assert response.status_code == 422 and "type" in response.json()["error"]["message"]


def test_a_request_without_segments_is_a_400_that_says_what_is_missing(http):
    response = http.post("/v1/completions", json={"language": "python"})
    assert response.status_code == 400 and "segments" in response.text


def test_completions_need_the_key_when_the_suite_has_one(suite):
    body = {"language": "python", "segments": {"prefix": "x = "}}
    response = httpx.post(f"{suite}/code/v1/completions", json=body)
    assert response.status_code == 401


def test_the_evaluation_reports_are_listed_and_junk_is_skipped(http, code_settings):
    folder = Path(code_settings.evaluations_dir)
    write_report(folder, pass_at_1=0.0)
    (folder / "notes.json").write_text("[1, 2]")
    [listed] = http.get("/v1/evaluations").json()
    assert (listed["benchmark"], listed["problems"], listed["pass_at"]) == ("humaneval", 2, {"pass@1": 0.0})
