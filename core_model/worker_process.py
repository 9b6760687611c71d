"""`WorkerProcess`: a batch function that runs in a Python process of its own.

    classify = WorkerProcess(load_classifier, "assets/intents", name="cs-intents")
    classify.wait_ready()                 # raises the loader's own error (a bad path, a bad file)
    classify(["I lost my card"])          # a list in, its results out, from any thread
    parse = MicroBatcher(classify, linger_s=0.02)   # concurrent callers share one call

Why a process: a small model's forward pass is mostly Python dispatching tensor operations, and
that holds the interpreter lock. Several models on threads of one server, and its HTTP threads,
then queue for one lock while the cores wait. In a worker each model has a lock of its own. On
2 cores the customer-service API went from 46 to 77 messages a second at 8 clients this way
(benchmarks/customer_service.py, latency section).

The factory is a module-level function, named by module and name; it and its arguments must pickle.
It runs once in the worker, with `torch_threads` torch threads, and what it returns is called on
each batch. Requests and results travel as pickles over the worker's stdin and stdout pipes.
Anything that prints to stdout in the worker lands on stderr, so it cannot garble the replies.
The parent closes its workers when it exits; a worker whose parent dies reads the end of its
stdin and exits. A worker that dies (killed, out of memory) fails the batch it was running with
`WorkerDied`, and the next call starts a new one.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import logging
import os
import pickle
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

log = logging.getLogger(__name__)


class WorkerDied(RuntimeError):
    """The worker process exited while it held a request: the request has no answer."""


class WorkerProcess:
    def __init__(
        self,
        factory: Callable[..., Callable[[list], list]],
        *args: Any,
        name: str,
        torch_threads: int | None = 1,
    ):
        """Starts the worker and sends it the factory; returns at once (see `wait_ready`).
        `torch_threads`: torch's CPU threads in the worker (None: torch's default, and torch is not
        imported for it)."""
        self.name = name
        self._spec = (*factory_spec(factory, torch_threads), args, torch_threads)
        self._lock = threading.Lock()  # one request on the pipes at a time
        self._child: Child | None = Child.start(name, self._spec)
        self._ready = False  # whether the child has built its function
        atexit.register(self.close)  # the parent waits for its workers on the way out

    def wait_ready(self) -> None:
        """Waits until the worker has built its function; raises the factory's error if it failed."""
        with self._lock:
            self._await_build()

    def _await_build(self) -> Child:
        if self._child is None:  # closed, or the last one died: a new one
            self._child, self._ready = Child.start(self.name, self._spec), False
        if not self._ready:
            try:
                self._receive(self._child)
            except BaseException:
                self._stop()
                raise
            self._ready = True
        return self._child

    def __call__(self, items: list) -> list:
        with self._lock:
            child = self._await_build()
            with contextlib.suppress(OSError):  # a dead worker: the read below reports it
                send_pickle(child.requests, items)
            return self._receive(child)

    def _receive(self, child: Child) -> Any:
        try:
            ok, value = pickle.load(child.replies)
        except (EOFError, pickle.UnpicklingError, OSError):
            code = child.process.wait()
            child.close_pipes()
            self._child = None
            log.error("worker %s exited with code %s; the next call starts a new one", self.name, code)
            raise WorkerDied(f"the {self.name} worker exited with code {code}") from None
        if not ok:
            raise value
        return value

    def close(self) -> None:
        """Stops the worker; a later call starts a new one."""
        with self._lock:
            self._stop()

    def _stop(self) -> None:
        if self._child is not None:
            self._child.stop()
            self._child = None


def factory_spec(factory: Callable, torch_threads: int | None) -> tuple[str, str]:
    """The module and name a worker imports `factory` by, or a ValueError before any process
    starts (a nested function, a torch thread count under 1)."""
    if "<" in factory.__qualname__ or "." in factory.__qualname__:
        raise ValueError(f"{factory.__qualname__} is not a module-level function: workers cannot import it")
    if torch_threads is not None and torch_threads < 1:
        raise ValueError(f"torch_threads must be >= 1, got {torch_threads}")
    return factory.__module__, factory.__qualname__


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
        module: str = __name__,
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


def build_function(
    replies: IO[bytes], module: str, name: str, args: tuple, torch_threads: int | None
) -> Callable[[list], list] | None:
    """In a worker: the factory's function, after telling the parent it is ready; or None after
    sending it the factory's error."""
    try:
        if torch_threads is not None:
            import torch

            torch.set_num_threads(torch_threads)
        function: Callable[[list], list] = getattr(importlib.import_module(module), name)(*args)
    except Exception as error:
        send_pickle(replies, (False, picklable_error(error)))
        return None
    send_pickle(replies, (True, None))
    return function


def _serve(requests: IO[bytes], replies: IO[bytes]) -> None:
    """The worker's loop: build the function from the first message, then answer each batch."""
    module, name, args, torch_threads = pickle.load(requests)
    function = build_function(replies, module, name, args, torch_threads)
    if function is None:
        return
    while True:
        try:
            items = pickle.load(requests)
        except EOFError:  # the parent closed the pipe, or died
            return
        try:
            reply: tuple[bool, Any] = (True, function(items))
        except Exception as error:
            reply = (False, picklable_error(error))
        send_pickle(replies, reply)


def child_main(serve: Callable[[IO[bytes], IO[bytes]], None]) -> None:
    """A child process's entry point: `serve(requests, replies)` on its stdin and stdout."""
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # stray prints go to stderr, never into the replies
    sys.stdout = sys.stderr
    logging.basicConfig(level=logging.WARNING, format=f"%(asctime)s {sys.argv[1]} %(levelname)s %(message)s")
    with contextlib.suppress(BrokenPipeError, KeyboardInterrupt):
        serve(sys.stdin.buffer, replies)


if __name__ == "__main__":
    child_main(_serve)
