"""The operators' desk as processes: the defect dashboard (`ui.py` under `streamlit run`) and the
simulated line (`replay.py`), each started in a subprocess for `verticals qc ui` and `make run`.

    page = ui_process(api="http://127.0.0.1:8000", port=8505)
    line = start_replay(api="http://127.0.0.1:8000", rate=2, model="apps/industrial_qc/assets/model")

It starts processes and nothing else: the caller (the `verticals` command) owns them and stops
them. Neither process imports torch's model code: both talk to the API over HTTP.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from apps.pages import page_process

DEFAULT_UI_PORT = 8505
UI_SCRIPT = Path(__file__).resolve().parent / "ui.py"
REPLAY_LOG = Path("runs/qc/replay.log")


def ui_process(
    *, api: str, port: int, host: str = "127.0.0.1", api_key: str | None = None, refresh: float = 5
) -> subprocess.Popen[bytes]:
    """`streamlit run ui.py` (the dashboard) against the API at `api`, redrawn every `refresh` s."""
    return page_process(
        UI_SCRIPT, api=api, port=port, host=host, api_key=api_key, args=["--refresh", f"{refresh:g}"]
    )


def replay_process(
    *,
    api: str,
    rate: float,
    log: Path = REPLAY_LOG,
    lines: int = 2,
    stations: int = 2,
    api_key: str | None = None,
    data: str | Path | None = None,
    count: int | None = None,
) -> subprocess.Popen[bytes]:
    """`python -m apps.industrial_qc.replay` in a subprocess (it waits for the API), its log
    appended to `log`; it runs until stopped (SIGTERM) unless `count` parts end it."""
    command = [
        sys.executable, "-m", "apps.industrial_qc.replay", "--api", api, "--rate", f"{rate:g}",
        "--lines", str(lines), "--stations", str(stations),
    ]  # fmt: skip
    if data is not None:
        command += ["--data", str(data)]
    if count is not None:
        command += ["--count", str(count)]
    env = {**os.environ, "VERTICALS_API_KEY": api_key} if api_key else None
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)


def start_replay(
    *, api: str, rate: float, model: str | Path, api_key: str | None = None, log: Path = REPLAY_LOG
) -> subprocess.Popen[bytes] | None:
    """`make run`'s simulated line: the replay in a subprocess that waits for the API, or None
    (and a line saying why) when there is no inspection model at `model` for the API to serve."""
    from .model import CARD, WEIGHTS  # the model module imports torch: only here

    if not ((Path(model) / WEIGHTS).is_file() and (Path(model) / CARD).is_file()):
        print(f"verticals: no inspection model at {model}, so no simulated line: train one first", flush=True)
        return None
    print(f"verticals: a simulated line posts {rate:g} parts/s to the inspection API once it is up ({log})")
    return replay_process(api=api, rate=rate, log=log, api_key=api_key)
