"""The suite's app with the code-assist router, served by a real uvicorn on loopback: the embedded
model, the shipped code adapter, a fresh SQLite file and the index of a tiny repository; and the
Streamlit page (`ui.py`) pointed at it, in a subprocess on a free port.

.venv/bin/python -m pytest tests/apps/code_assist -q
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from apps.code_assist.repository_index import RepositoryIndex
from apps.code_assist.settings import CodeAssistSettings
from apps.suite import create_app
from core_model.serve import ServeSettings
from tests.loopback import ROOT, serving, streamlit_page

API_KEY = "test-key"
UI_SCRIPT = ROOT / "apps" / "code_assist" / "ui.py"
UI_START_S = 60

REPOSITORY = {
    "shop/money.py": '''
        def to_cents(amount: float) -> int:
            """Whole cents, rounded half up."""
            return int(round(amount * 100))
    ''',
    "shop/cart.py": """
        from shop.money import to_cents


        class Cart:
            def __init__(self):
                self.items = []

            def add(self, name: str, price: float) -> None:
                self.items.append((name, to_cents(price)))
    """,
}


def write_repository(root: Path) -> Path:
    for path, text in REPOSITORY.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return root


@pytest.fixture(scope="session")
def index_dir(tmp_path_factory) -> Path:
    repository = write_repository(tmp_path_factory.mktemp("repository"))
    return RepositoryIndex.build(repository, progress=False).save(tmp_path_factory.mktemp("index") / "index")


@pytest.fixture(scope="session")
def code_settings(tmp_path_factory, index_dir) -> CodeAssistSettings:
    directory = tmp_path_factory.mktemp("code_assist")
    return CodeAssistSettings(
        database_url=f"sqlite:///{directory / 'code_assist.db'}",
        index_dir=str(index_dir),
        evaluations_dir=str(directory / "evaluations"),
    )


@pytest.fixture(scope="session")
def suite(code_settings) -> Iterator[str]:
    """The base URL of the suite (the model API and /code, no other vertical), with an API key."""
    app = create_app(ServeSettings(model="embedded", api_key=API_KEY), code_assist=code_settings)
    with serving(app) as url:
        yield url


@pytest.fixture(scope="session")
def ui_url(suite, tmp_path_factory) -> Iterator[str]:
    """The code-assist page (`streamlit run ui.py -- --api SUITE --api-key KEY`) on a free port."""
    log = tmp_path_factory.mktemp("code_ui") / "ui.log"
    with streamlit_page(UI_SCRIPT, args=["--api", suite, "--api-key", API_KEY], log=log) as url:
        yield url


def write_report(folder: Path, *, pass_at_1: float = 0.0) -> Path:
    """A small `verticals code eval` report of two HumanEval problems, as the API lists it."""
    folder.mkdir(parents=True, exist_ok=True)
    report = {
        "settings": {
            "benchmark": "humaneval",
            "model": "embedded",
            "adapter": None,
            "samples": 1,
            "temperature": 0.0,
        },
        "pass@1": pass_at_1,
        "statuses": {"passed": round(2 * pass_at_1), "failed": 2 - round(2 * pass_at_1)},
        "problems": [{"task_id": "HumanEval/0"}, {"task_id": "HumanEval/1"}],
    }
    # One name for every test: the folder holds one report whichever test runs first.
    path = folder / "humaneval-embedded.json"
    path.write_text(json.dumps(report))
    return path
