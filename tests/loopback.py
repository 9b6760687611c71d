"""Servers on loopback for tests that talk HTTP the way clients do: a FastAPI app under a real
uvicorn in a background thread (`serving`), or a whole command (the suite, a Streamlit page) in a
subprocess on a free port, waited for on its health route (`free_port`, `start`, `stop`), or a
Streamlit page (`streamlit_page`).

It starts servers and nothing else: which app or command to run is the conftest's business.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from apps.pages import streamlit_command

ROOT = Path(__file__).resolve().parents[1]  # commands run from the repository root


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """`app` under uvicorn on a free loopback port; yields the base URL; stops the server after."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))  # the port is ours from here: no race with other tests
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


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


@contextmanager
def streamlit_page(script: Path, *, args: list[str], log: Path, timeout_s: float = 60) -> Iterator[str]:
    """`streamlit run SCRIPT -- ARGS` headless on a free loopback port; yields its URL once its
    health route answers, stops it after."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    page = start(
        streamlit_command(script, port=port, args=args),
        health=f"{url}/_stcore/health",
        log=log,
        timeout_s=timeout_s,
    )
    try:
        yield url
    finally:
        stop(page)
