"""The simulated line against a stand-in of the inspection API on a real loopback server: parts go
to the stations in turn at the rate asked, one refused part is counted and the line goes on, it
waits for the API and gives up with a reason, and as a process it stops cleanly on SIGTERM.
(The dashboard's browser test runs it against the real API.)

.venv/bin/python -m pytest -q tests/apps/industrial_qc/test_replay.py
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import pytest
import uvicorn
from fastapi import FastAPI, File, Form, UploadFile
from fastapi.responses import JSONResponse
from PIL import Image

from apps.industrial_qc.client import QCClient
from apps.industrial_qc.replay import (
    ReplayError,
    Station,
    line_images,
    replay,
    stations,
    wait_for_api,
)
from tests.loopback import ROOT, free_port, serving


def stand_in(*, refuse: set[int] = frozenset()) -> tuple[FastAPI, list[tuple[str, str, str]]]:
    """A /qc stand-in that records each part (line, station, file name) and answers HTTP 500 to
    the parts whose number (from 1) is in `refuse`."""
    app, seen = FastAPI(), []

    @app.get("/qc/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.post("/qc/inspect", response_model=None)
    async def inspect(
        file: Annotated[UploadFile, File()],
        line_id: Annotated[str, Form()],
        station_id: Annotated[str, Form()],
    ):
        seen.append((line_id, station_id, file.filename or ""))
        if len(seen) in refuse:
            return JSONResponse({"error": {"message": "the model fell over"}}, status_code=500)
        return {"inspection_id": len(seen), "passed": len(seen) % 2 == 0}

    return app, seen


@pytest.fixture
def images(tmp_path) -> list[Path]:
    folder = tmp_path / "line" / "crazing"  # a class-folders layout: the replay's --data takes it
    folder.mkdir(parents=True)
    paths = [folder / f"part{n}.png" for n in range(3)]
    for n, path in enumerate(paths):
        Image.new("RGB", (8, 8), (40 * n, 0, 0)).save(path)
    return paths


def test_stations_are_lines_times_stations_in_order():
    assert stations(2, 2) == [
        Station("L1", "S1"),
        Station("L1", "S2"),
        Station("L2", "S1"),
        Station("L2", "S2"),
    ]
    with pytest.raises(ValueError, match="at least one line"):
        stations(0, 2)


def test_images_are_shuffled_and_repeated_every_one_once_per_pass(images):
    order = line_images(images, seed=0)
    first, second = [next(order) for _ in images], [next(order) for _ in images]
    assert sorted(first) == sorted(second) == sorted(images)


def test_parts_go_round_robin_and_one_refused_part_does_not_stop_the_line(images):
    app, seen = stand_in(refuse={2})
    with serving(app) as url:
        client = QCClient(url)
        report = replay(
            client, images=line_images(images, seed=0), stations=stations(2, 2), rate=0, count=6,
            stop=threading.Event(),
        )  # fmt: skip
    assert (report.posted, report.errors) == (5, 1)
    assert report.failed == 3  # the stand-in fails every other answered part: 1, 3, 5 of 6 (2 refused)
    assert [(line, station) for line, station, _ in seen] == [
        ("L1", "S1"), ("L1", "S2"), ("L2", "S1"), ("L2", "S2"), ("L1", "S1"), ("L1", "S2"),
    ]  # fmt: skip
    assert {name for _, _, name in seen} == {path.name for path in images}


def test_the_rate_spaces_the_parts(images):
    app, seen = stand_in()
    with serving(app) as url:
        report = replay(
            QCClient(url), images=line_images(images, seed=0), stations=stations(1, 1), rate=20, count=5,
            stop=threading.Event(),
        )  # fmt: skip
    assert report.posted == 5 and report.seconds >= 0.2  # 4 gaps of 1/20 s


def test_waiting_gives_up_with_a_reason_or_stops_when_asked():
    client = QCClient(f"http://127.0.0.1:{free_port()}")  # nothing listens there
    with pytest.raises(ReplayError, match="no inspection API at .* after 0 s"):
        wait_for_api(client, timeout_s=0, stop=threading.Event())
    stop = threading.Event()
    stop.set()
    assert wait_for_api(client, timeout_s=60, stop=stop) is False


@contextmanager
def listening_later(app: FastAPI, sock: socket.socket) -> Iterator[None]:
    """`app` under uvicorn on `sock`, a socket bound before (so its port refused connections
    until now, as a starting API's does)."""
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_the_process_waits_for_the_api_posts_parts_and_stops_on_sigterm(images, tmp_path):
    app, seen = stand_in()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused until the API is up
    port_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    log = tmp_path / "replay.log"
    command = [
        sys.executable, "-m", "apps.industrial_qc.replay", "--api", port_url, "--rate", "10",
        "--data", str(images[0].parents[1]), "--split", "all", "--lines", "1", "--stations", "2",
    ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        time.sleep(1)
        with listening_later(app, sock):
            deadline = time.monotonic() + 30
            while len(seen) < 3 and time.monotonic() < deadline and process.poll() is None:
                time.sleep(0.1)
            assert len(seen) >= 3, log.read_text()
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=10) == 0
    finally:
        sock.close()
        if process.poll() is None:
            process.kill()
            process.wait()
    text = log.read_text()
    assert "waiting for the inspection API" in text and "stopped:" in text
    assert {station for _, station, _ in seen} == {"S1", "S2"}
