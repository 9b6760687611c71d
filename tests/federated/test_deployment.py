"""Flower's deployment engine on loopback, driven through the `verticals fed` commands as an
operator would: a SuperLink with TLS, SuperNode authentication and a database; SuperNodes with
their own keys, ports and records; runs started with `verticals fed run`. Processes are started
and stopped by PID (each in its own session, so a SuperNode goes down with its ClientApps)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from apps.medical.sites import split_corpus, write_site
from core_model.train.registry import AdapterRegistry
from federated import deploy
from federated.records import RoundStore
from tests.loopback import ROOT, free_port

from .conftest import ncbi

VERTICALS = str(Path(sys.executable).parent / "verticals")
START_S = 60
RUN_S = 420


def verticals(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([VERTICALS, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"verticals {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [VERTICALS, *args], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def kill(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        os.killpg(process.pid, sig)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


class Federation:
    def __init__(self, root: Path, checkpoint: Path) -> None:
        self.root, self.checkpoint = root, checkpoint
        self.port = free_port()
        self.superlink = f"localhost:{self.port}"
        self.nodes: dict[str, subprocess.Popen[bytes]] = {}
        self.connection = [
            "--superlink",
            self.superlink,
            "--ca",
            str(root / "certs" / "ca.crt"),
            "--flwr-home",
            str(root / "flwr"),
        ]

    def online(self) -> int:
        result = subprocess.run(
            deploy.flwr_command("supernode", "ls", "verticals", "--format", "json"),
            env=deploy.environment(self.root / "flwr"), capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        nodes = json.loads(result.stdout).get("nodes", []) if result.stdout.startswith("{") else []
        return sum(node["status"] == "online" for node in nodes)

    def wait_online(self, count: int) -> None:
        deadline = time.monotonic() + START_S
        while self.online() < count:
            dead = [name for name, p in self.nodes.items() if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                logs = "\n".join((self.root / f"{n}.log").read_text()[-1500:] for n in self.nodes)
                pytest.fail(
                    f"SuperNodes not online ({self.online()}/{count}; exited: {dead}):\n{logs}", pytrace=False
                )
            time.sleep(1)

    def start_node(self, name: str) -> None:
        self.nodes[name] = spawn(self.node_args(name, data=name), self.root / f"{name}.log")

    def node_args(self, name: str, *, data: str) -> list[str]:
        return [
            "fed", "supernode", "--site", name, "--data", str(self.root / "data" / data),
            "--superlink", self.superlink, "--port", str(free_port()),
            "--ca", str(self.root / "certs" / "ca.crt"), "--key", str(self.root / "keys" / name),
            "--threads", "1",
        ]  # fmt: skip

    def run(self, *settings: str) -> subprocess.Popen[str]:
        config = f'base="{self.checkpoint}" rank=2 max-length=64 batch-size=8 lr=0.01'
        args = [
            "fed", "run", *self.connection, "--rounds", "1", "--min-sites", "2", "--database", self.database,
            "--registry", str(self.root / "registry"), "--run-config", config, *settings,
        ]  # fmt: skip
        return subprocess.Popen(
            [VERTICALS, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )

    @property
    def database(self) -> str:
        return f"sqlite:///{self.root / 'rounds.db'}"


@pytest.fixture(scope="module")
def federation(tmp_path_factory, checkpoint) -> Iterator[Federation]:
    root = tmp_path_factory.mktemp("deployment")
    for name, share in split_corpus(ncbi("train", 90), ["north", "south", "east"], mode="even").items():
        write_site(root / "data" / name, share)
    verticals("fed", "certs", str(root / "certs"))
    verticals("fed", "keys", str(root / "keys"), "north", "south", "east", "rogue")
    fed = Federation(root, checkpoint)
    link_args = [
        "--certs",
        str(root / "certs"),
        "--port",
        str(fed.port),
        "--database",
        str(root / "superlink.db"),
    ]
    superlink = spawn(["fed", "superlink", *link_args], root / "superlink.log")
    try:
        deadline = time.monotonic() + START_S
        while "Uvicorn running" not in (root / "superlink.log").read_text():
            if superlink.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"the SuperLink did not start:\n{(root / 'superlink.log').read_text()[-3000:]}",
                    pytrace=False,
                )
            time.sleep(0.5)
        for name in ("north", "south", "east"):
            verticals("fed", "register", str(root / "keys" / f"{name}.pub"), "--name", name, *fed.connection)
        yield fed
    finally:
        for process in fed.nodes.values():
            kill(process, signal.SIGKILL)
        kill(superlink)


def test_two_hospitals_complete_a_round_over_tls_with_registered_keys(federation):
    federation.start_node("north")
    federation.start_node("south")
    federation.wait_online(2)
    run = federation.run()
    output, _ = run.communicate(timeout=RUN_S)
    assert run.returncode == 0, output[-3000:]
    store = RoundStore(federation.database)
    (record,) = store.rounds(store.runs()[0].id)
    store.close()
    assert sorted(record.sites) == ["north", "south"] and record.failures == 0
    assert AdapterRegistry(federation.root / "registry").version("medical") == record.adapter_version


def test_sites_are_listed_under_the_names_they_were_registered_with(federation):
    if "north" not in federation.nodes:
        federation.start_node("north")
    federation.wait_online(1)
    lines = verticals("fed", "sites", *federation.connection).stdout.splitlines()
    status = {line.split()[0]: line.split()[2] for line in lines[1:-1]}
    assert status.keys() == {"north", "south", "east"} and status["north"] == "online"
    assert lines[-1].endswith(f"of {len(status)} online")


def test_an_unregistered_key_cannot_join(federation):
    args = [*federation.node_args("rogue", data="north"), "--max-retries", "1"]
    rogue = spawn(args, federation.root / "rogue.log")
    try:
        assert rogue.wait(timeout=120) != 0
    finally:
        kill(rogue, signal.SIGKILL)
    assert "Failed to activate SuperNode" in (federation.root / "rogue.log").read_text()


def test_a_hospital_lost_mid_round_does_not_stop_the_round(federation):
    federation.start_node("east")
    federation.wait_online(3)
    run = federation.run("--strategy", "fedprox")
    lines = []
    for line in run.stdout:
        lines.append(line)
        if "configure_train: Sampled 3 nodes" in line:
            kill(federation.nodes["east"], signal.SIGKILL)  # the SuperNode and its ClientApp
    assert run.wait(timeout=RUN_S) == 0, "".join(lines)[-3000:]
    store = RoundStore(federation.database)
    (record,) = store.rounds(store.runs()[0].id)
    store.close()
    assert sorted(record.sites) == ["north", "south"] and record.failures == 1
