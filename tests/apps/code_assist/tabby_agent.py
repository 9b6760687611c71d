"""Tabby's editor agent (the npm package `tabby-agent`, 1.5.0) as a subprocess for tests: found,
configured through a temporary HOME, and spoken to over stdio in either of its two protocols.

    LspAgent        `cli.js --lsp --stdio`: LSP with Content-Length framing (initialize,
                    textDocument/didOpen, textDocument/completion); 1.5.0 has no inlineCompletion
                    and no telemetry over LSP.
    JsonLinesAgent  `cli.js`: the agent's own protocol, one JSON array a line,
                    `[id, {"func": name, "args": [...]}]` -> `[id, result]` (events come as
                    `[0, {"event": ...}]`); it exposes every agent function, `postEvent` included.

The agent reads `~/.tabby-client/agent/config.toml`, so HOME points at a temporary folder holding
the suite's endpoint and key, with anonymous usage tracking off (it would post to app.tabbyml.com)
and debug logs, whose tail every failure shows. Every wait has a timeout: an agent that does not
answer fails the test with its stderr and log, it never hangs the suite. This module starts no
server and makes no assertion about our API (`test_tabby_agent.py` does).
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Self

ROOT = Path(__file__).resolve().parents[3]
INSTALLED = ROOT / ".cache/tabby-agent/node_modules/tabby-agent/dist/cli.js"  # `make tabby-agent`
TIMEOUT = 30.0  # seconds for any one answer; a completion on the embedded model takes about 1 s
TAIL_CHARS = 3000


def find_cli(environ: dict[str, str]) -> Path | None:
    """The agent's `dist/cli.js`: $TABBY_AGENT, else the Makefile's install; None when absent."""
    cli = Path(environ["TABBY_AGENT"]) if environ.get("TABBY_AGENT") else INSTALLED
    return cli if cli.is_file() else None


def write_home(home: Path, *, endpoint: str, token: str) -> Path:
    """A HOME whose agent config points at `endpoint` with `token` and phones nowhere else."""
    config = home / ".tabby-client/agent/config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(  # json.dumps quotes a string the way TOML's basic strings want
        f"[server]\nendpoint = {json.dumps(endpoint)}\ntoken = {json.dumps(token)}\n\n"
        '[logs]\nlevel = "debug"\n\n[anonymousUsageTracking]\ndisable = true\n',
        encoding="utf-8",
    )
    return home


class AgentError(RuntimeError):
    """The agent answered with an error, did not answer in time, or exited."""


class AgentProcess:
    """The node process, a thread reading its messages into a queue, and one draining stderr."""

    args: tuple[str, ...] = ()

    def __init__(self, cli: Path, home: Path) -> None:
        node = shutil.which("node")
        if node is None:
            raise FileNotFoundError("node is not on PATH")
        self.home = home
        self.process = subprocess.Popen(
            [node, str(cli), *self.args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={"PATH": os.environ.get("PATH", ""), "HOME": str(home)},  # no proxies, no real HOME
            cwd=home,
        )
        self.messages: queue.Queue[Any] = queue.Queue()
        self.stderr = bytearray()
        self.next_id = 1
        threading.Thread(target=self._read_all, daemon=True).start()
        threading.Thread(target=self._drain_stderr, daemon=True).start()

    def read_message(self) -> Any:
        """One message from stdout; None at the end of the stream."""
        raise NotImplementedError

    def write_message(self, message: Any) -> None:
        raise NotImplementedError

    def _read_all(self) -> None:
        try:
            while (message := self.read_message()) is not None:
                self.messages.put(message)
        finally:
            self.messages.put(None)

    def _drain_stderr(self) -> None:
        while chunk := self.process.stderr.read1(4096):
            self.stderr += chunk

    def _write(self, data: bytes) -> None:
        try:
            self.process.stdin.write(data)
            self.process.stdin.flush()
        except (BrokenPipeError, ValueError):
            raise AgentError(self.tail("the agent closed its stdin")) from None

    def next_message(self, waiting_for: str, *, deadline: float, timeout: float) -> Any:
        try:
            message = self.messages.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise AgentError(self.tail(f"no answer to {waiting_for} within {timeout:.0f} s")) from None
        if message is None:
            self.messages.put(None)  # every later wait sees the end too
            try:
                code = self.process.wait(timeout=1)
            except subprocess.TimeoutExpired:
                code = None  # it closed stdout but lives on: close() ends it
            raise AgentError(self.tail(f"the agent exited ({code}) before {waiting_for}"))
        return message

    def tail(self, reason: str) -> str:
        """`reason`, then the ends of the agent's stderr and of its log file."""
        log = self.home / ".tabby-client/agent/logs/current.log"
        log_text = log.read_text(encoding="utf-8", errors="replace") if log.exists() else "(none)"
        stderr = self.stderr.decode(errors="replace")[-TAIL_CHARS:]
        return f"{reason}\n--- agent stderr ---\n{stderr}\n--- agent log ---\n{log_text[-TAIL_CHARS:]}"

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # both modes finalize and exit on SIGTERM
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class LspAgent(AgentProcess):
    """An LSP client: requests wait for their answer; the server's own requests are answered
    (null: this client has no configuration and accepts any registration); notifications are kept."""

    args = ("--lsp", "--stdio")

    def __init__(self, cli: Path, home: Path) -> None:
        super().__init__(cli, home)
        self.notifications: list[dict] = []

    def read_message(self) -> dict | None:
        headers = {}
        while (line := self.process.stdout.readline()) not in (b"\r\n", b"\n"):
            if not line:
                return None
            name, _, value = line.decode("ascii").partition(":")
            headers[name.strip().lower()] = value.strip()
        return json.loads(self.process.stdout.read(int(headers["content-length"])))

    def write_message(self, message: dict) -> None:
        body = json.dumps({"jsonrpc": "2.0", **message}).encode()
        self._write(b"Content-Length: %d\r\n\r\n" % len(body) + body)

    def notify(self, method: str, params: Any = None) -> None:
        self.write_message({"method": method, "params": params})

    def request(self, method: str, params: Any = None, *, timeout: float = TIMEOUT) -> Any:
        request_id, self.next_id = self.next_id, self.next_id + 1
        self.write_message({"id": request_id, "method": method, "params": params})
        deadline = time.monotonic() + timeout
        while True:
            message = self.next_message(method, deadline=deadline, timeout=timeout)
            if "method" in message and "id" in message:  # the server asks us something
                self.write_message({"id": message["id"], "result": self._answer(message)})
            elif "method" in message:
                self.notifications.append(message)
            elif message.get("id") == request_id:
                if "error" in message:
                    raise AgentError(self.tail(f"{method} failed: {message['error']}"))
                return message.get("result")

    @staticmethod
    def _answer(message: dict) -> Any:
        if message["method"] == "workspace/configuration":
            return [None] * len(message["params"]["items"])
        return None

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.request("shutdown", timeout=5)
                self.notify("exit")
            except AgentError:
                pass  # terminated below
        super().close()


class JsonLinesAgent(AgentProcess):
    """The agent's own protocol: `call("provideCompletions", request)` -> its result; the agent's
    events (statusChanged, configUpdated, ...) are kept in `events`."""

    def __init__(self, cli: Path, home: Path) -> None:
        super().__init__(cli, home)
        self.events: list[dict] = []

    def read_message(self) -> list | None:
        while line := self.process.stdout.readline():
            try:
                message = json.loads(line)
            except ValueError:
                continue  # the agent's dependencies print plain lines to stdout too
            if isinstance(message, list) and len(message) == 2:
                return message
        return None

    def write_message(self, message: list) -> None:
        self._write(json.dumps(message).encode() + b"\n")

    def call(self, func: str, *args: Any, timeout: float = TIMEOUT) -> Any:
        request_id, self.next_id = self.next_id, self.next_id + 1
        self.write_message([request_id, {"func": func, "args": list(args)}])
        deadline = time.monotonic() + timeout
        while True:
            message_id, payload = self.next_message(func, deadline=deadline, timeout=timeout)
            if message_id == 0:
                self.events.append(payload)
            elif message_id == request_id:
                return payload  # null when the agent failed: its log says why
