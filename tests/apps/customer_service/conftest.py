"""Real servers on loopback for the console's tests: the suite (`verticals serve`, with the
customer-service router on a fresh SQLite file) and the Streamlit console pointed at it.

.venv/bin/python -m pytest tests/apps/customer_service -q -m slow

Each server runs in a subprocess on a free port, is waited for on its health route, and is stopped
after the session; its output goes to a log file whose tail is shown when it fails to come up.
VERTICALS_TEST_SUITE_URL=http://127.0.0.1:8000 runs the same tests against a suite already running
(`make run`) instead of starting one.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.loopback import free_port, start, stop, streamlit_page

ROOT = Path(__file__).resolve().parents[3]
UI_SCRIPT = ROOT / "apps" / "customer_service" / "ui.py"
SUITE_START_S = 300  # model, adapters and the MiniLM index of the demo knowledge base, on a busy CPU
CONSOLE_START_S = 60


@pytest.fixture(scope="session")
def suite_url(tmp_path_factory) -> Iterator[str]:
    """The suite's base URL: `python -m apps.cli serve` with its own database and index."""
    if url := os.environ.get("VERTICALS_TEST_SUITE_URL"):
        yield url.rstrip("/")
        return
    directory = tmp_path_factory.mktemp("suite")
    port = free_port()
    command = [
        sys.executable, "-m", "apps.cli", "serve", "--port", str(port),
        "--cs-database", f"sqlite:///{directory / 'customer_service.db'}",
        "--cs-index-dir", str(directory / "kb"), "--no-code-assist",
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    server = start(command, health=f"{url}/health", log=directory / "suite.log", timeout_s=SUITE_START_S)
    try:
        yield url
    finally:
        stop(server)


@pytest.fixture(scope="session")
def console_url(suite_url, tmp_path_factory) -> Iterator[str]:
    """The Streamlit console (`streamlit run ui.py -- --api SUITE`) on a free port."""
    log = tmp_path_factory.mktemp("console") / "console.log"
    with streamlit_page(UI_SCRIPT, args=["--api", suite_url], log=log, timeout_s=CONSOLE_START_S) as url:
        yield url
