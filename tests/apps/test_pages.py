"""The one way every vertical starts its Streamlit page: a real page comes up on the port asked
for, and an API key travels in its environment, never on its command line.

.venv/bin/python -m pytest -q tests/apps/test_pages.py
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from apps.pages import page_process
from tests.loopback import free_port, stop


def test_a_page_comes_up_and_keeps_the_key_off_its_command_line(tmp_path):
    script = tmp_path / "page.py"
    script.write_text("import streamlit as st\nst.write('hello')\n")
    port = free_port()
    page = page_process(
        script, api="http://127.0.0.1:1", port=port, api_key="s3cret", args=["--refresh", "5"]
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert page.poll() is None and time.monotonic() < deadline, "the page did not come up"
            time.sleep(0.25)
        command = list(map(str, page.args))  # type: ignore[arg-type]
        assert command[command.index("--") :] == ["--", "--api", "http://127.0.0.1:1", "--refresh", "5"]
        assert not any("s3cret" in part for part in command)
        environ = Path(f"/proc/{page.pid}/environ")
        if environ.exists():  # Linux: the key is in the page's environment instead
            assert b"VERTICALS_API_KEY=s3cret" in environ.read_bytes().split(b"\0")
    finally:
        stop(page)
