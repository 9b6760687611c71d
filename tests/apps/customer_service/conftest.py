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
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[3]
UI_SCRIPT = ROOT / "apps" / "customer_service" / "ui.py"
SUITE_START_S = 300  # model, adapters and the MiniLM index of the demo knowledge base, on a busy CPU
CONSOLE_START_S = 60


def free_port() -> int:
    with socket.socket() as probe:  # a tiny race with other processes is acceptable in tests
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start(command: list[str], *, health: str, log: Path, timeout_s: float) -> subprocess.Popen:
    """Starts `command` (output to `log`) and returns once `health` answers 200; fails with the
    tail of the log when the process exits or `timeout_s` passes first."""
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(health, timeout=2).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            stop(process)
            tail = log.read_text(errors="replace")[-3000:]
            pytest.fail(f"{' '.join(command[:6])} ... did not come up at {health}:\n{tail}", pytrace=False)
        time.sleep(0.25)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


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
    directory = tmp_path_factory.mktemp("console")
    port = free_port()
    command = [
        sys.executable, "-m", "streamlit", "run", str(UI_SCRIPT),
        "--server.headless", "true", "--server.port", str(port), "--server.address", "127.0.0.1",
        "--browser.gatherUsageStats", "false", "--client.toolbarMode", "viewer", "--", "--api", suite_url,
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    console = start(
        command, health=f"{url}/_stcore/health", log=directory / "console.log", timeout_s=CONSOLE_START_S
    )
    try:
        yield url
    finally:
        stop(console)
