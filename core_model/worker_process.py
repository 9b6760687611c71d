"""Child processes spoken to in pickles over their stdin and stdout: what `BatchingWorker` (a batch
function in a process of its own) and the engine's replicas (`core_model.engine.replicas`) run on.

    child = Child.start("cs-intents", spec, module="core_model.batching_worker")   # python -m module
    send_pickle(child.requests, value)
    child_main(serve)                     # the child's entry point: serve(requests, replies)

A child's stdout carries its replies; anything it prints lands on stderr, so it cannot garble
them. A child whose parent dies reads the end of its stdin and exits.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import subprocess
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

log = logging.getLogger(__name__)


class WorkerDied(RuntimeError):
    """The worker process exited while it held a request: the request has no answer."""


@dataclass
class Child:
    """A Python child process spoken to in pickles over its stdin and stdout (a worker here, an
    engine replica in `core_model.engine.replicas`)."""

    process: subprocess.Popen[bytes]
    requests: IO[bytes]  # its stdin
    replies: IO[bytes]  # its stdout

    @classmethod
    def start(
        cls,
        name: str,
        spec: Any,
        *,
        module: str,
        send: Callable[[IO[bytes], Any], None] | None = None,
    ) -> Child:
        """A new process running `python -m module name`, sent `spec` (what it is to build) by
        `send` (default `send_pickle`)."""
        env = os.environ | {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        command = [sys.executable, "-m", module, name]
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        assert process.stdin is not None and process.stdout is not None
        child = cls(process, process.stdin, process.stdout)
        (send or send_pickle)(child.requests, spec)
        return child

    def close_pipes(self) -> None:
        for pipe in (self.requests, self.replies):
            with contextlib.suppress(OSError):  # a dead worker's pipe may fail to flush
                pipe.close()

    def stop(self) -> None:
        """Closes its stdin (the worker reads the end and exits) and waits for it, 10 s at most."""
        with contextlib.suppress(OSError):
            self.requests.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.close_pipes()


def send_pickle(pipe: IO[bytes], value: Any) -> None:
    pickle.dump(value, pipe, protocol=pickle.HIGHEST_PROTOCOL)
    pipe.flush()


def picklable_error(error: BaseException) -> BaseException:
    """`error` itself when it pickles, else a RuntimeError with its type, message and traceback."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        text = "".join(traceback.format_exception(error))
        return RuntimeError(f"{type(error).__name__}: {error}\n{text}")


def child_main(serve: Callable[[IO[bytes], IO[bytes]], None]) -> None:
    """A child process's entry point: `serve(requests, replies)` on its stdin and stdout."""
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # stray prints go to stderr, never into the replies
    sys.stdout = sys.stderr
    logging.basicConfig(level=logging.WARNING, format=f"%(asctime)s {sys.argv[1]} %(levelname)s %(message)s")
    with contextlib.suppress(BrokenPipeError, KeyboardInterrupt):
        serve(sys.stdin.buffer, replies)
