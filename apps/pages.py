"""The Streamlit pages as processes: every vertical's page is started the same way.

    page = page_process(UI_SCRIPT, api="http://127.0.0.1:8000", port=8505, args=["--refresh", "5"])

A page is `streamlit run SCRIPT -- --api API ARGS`, headless, on loopback unless `host` says
otherwise, with usage statistics off and the viewer's toolbar. The caller owns the process: it
waits for it or stops it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path


def page_process(
    script: Path,
    *,
    api: str,
    port: int,
    host: str = "127.0.0.1",
    api_key: str | None = None,
    args: Sequence[str] = (),
) -> subprocess.Popen[bytes]:
    """`script` under `streamlit run` against the API at `api`, with the page's own `args`."""
    command = streamlit_command(script, port=port, host=host, args=["--api", api, *args])
    # NOTE: the key travels in the page's environment (its `--api-key` default), not in argv,
    # which `ps` shows to every user of the machine.
    env = {**os.environ, "VERTICALS_API_KEY": api_key} if api_key else None
    return subprocess.Popen(command, env=env)


def streamlit_command(
    script: Path, *, port: int, host: str = "127.0.0.1", args: Sequence[str] = ()
) -> list[str]:
    """The argv of `streamlit run SCRIPT -- ARGS`, headless, statistics off, the viewer's toolbar."""
    return [
        sys.executable, "-m", "streamlit", "run", str(script),
        "--server.headless", "true", "--server.port", str(port), "--server.address", host,
        "--browser.gatherUsageStats", "false", "--client.toolbarMode", "viewer", "--", *args,
    ]  # fmt: skip
