"""`BatchingWorker`: items sent one by one to a process of its own, which runs whatever is waiting
as one batch each time it is free.

    score = BatchingWorker(Scorer, settings, name="finance-scorer", max_batch=64)
    score.wait_ready()                     # raises the factory's own error
    await asyncio.wrap_future(score.submit(command))   # from an event loop, or
    score(command)                          # from any thread: this item's result
    intents = BatchingWorker(load_intents, "assets/intents", name="cs-intents", linger_s=0.02)

Why a process: a small model's forward pass is mostly Python dispatching tensor operations, and
that holds the interpreter lock. Several models on threads of one server, and its HTTP threads,
then queue for one lock while the cores wait; in a worker each model has a lock of its own.

Every item goes down the pipe the moment it is submitted, and the worker takes everything that
has arrived (up to `max_batch` a batch) as soon as its last batch is answered. Batching on the
caller's side instead (a thread that sends a batch, waits for its answers, then gathers the next)
left the fraud scorer, the bottleneck under 20 clients on 2 cores, idle 0.4-0.6 ms between passes
(median; p99 3-7 ms, when that thread waited for the caller's interpreter lock); here 0.2-0.3 ms
(p99 0.5-1.1 ms). One thread of the caller reads the answers; the worker has one thread, so
nothing in it competes with the function for its interpreter lock.

With `linger_s`, after a batch of n > 1 the worker waits up to that long for n items before the
next: concurrent callers come back at slightly different times, and without it the first one
back runs alone while the rest queue behind it (8 clients: batches of 7, 1, 1, 7, ...). A lone
caller still pays nothing.

The factory is a module-level function, named by module and name; it and its arguments must
pickle. It runs once in the worker, with `torch_threads` torch threads, and what it returns is
called on each batch: a list in, one result per item out. An exception fails every item of its
batch and the worker serves on. A worker that dies (killed, out of memory) fails every item it
was sent and not yet answered with `WorkerDied`; the next submit starts a new one. Items and
answers travel as pickles over the worker's stdin and stdout; its stdout prints land on stderr.
The caller closes its workers when it exits; a worker whose caller dies reads the end of its
stdin and exits.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import importlib
import itertools
import logging
import os
import pickle
import select
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import IO, Any, Generic, TypeVar

from .worker_process import Child, WorkerDied, child_main, picklable_error, send_pickle

log = logging.getLogger(__name__)
PIPE_BYTES = 1 << 20  # the items not yet read that the pipe holds (Linux's unprivileged maximum)
T = TypeVar("T")
R = TypeVar("R")


class BatchingWorker(Generic[T, R]):
    def __init__(
        self,
        factory: Callable[..., Callable[[list[T]], list[R]]],
        *args: Any,
        name: str,
        max_batch: int = 64,
        linger_s: float = 0.0,
        torch_threads: int | None = 1,
    ) -> None:
        """Starts the worker and sends it the factory; returns at once (see `wait_ready`).
        `torch_threads`: torch's CPU threads in the worker (None: torch's default, and torch is not
        imported for it)."""
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if linger_s < 0:
            raise ValueError(f"linger_s must be >= 0, got {linger_s}")
        self.name = name
        self._spec = (*factory_spec(factory, torch_threads), args, torch_threads, max_batch, linger_s)
        self._lock = threading.Lock()  # the run and its pending items; starts and stops
        # One writer on the pipe at a time. Not `_lock`: a write waits while the pipe is full, and
        # the answer reader, which needs `_lock`, must go on reading meanwhile, or a worker blocked
        # writing a large answer never reads the items that would free the pipe (a deadlock
        # reproduced with 3 MB of items sent in a burst and 200 ms batches).
        self._write_lock = threading.Lock()
        self._ids = itertools.count()
        self._run: _Run | None = None
        self._start()
        atexit.register(self.close)

    def _start(self) -> _Run:
        run = _Run(Child.start(self.name, self._spec, module=__name__, send=send_frame))
        with contextlib.suppress(OSError, AttributeError):  # Linux: the pipe holds 1 MB, not 64 kB
            fcntl.fcntl(run.child.requests.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        threading.Thread(
            target=self._read_answers, args=(run,), name=f"{self.name}-answers", daemon=True
        ).start()
        self._run = run
        return run

    def wait_ready(self) -> None:
        """Waits until the worker has built its function; raises the factory's error if it failed."""
        with self._lock:
            run = self._run or self._start()
        run.ready.result()

    def submit(self, item: T) -> Future[R]:
        """Sends `item` and returns at once; an event loop awaits `asyncio.wrap_future(...)`. The
        write waits only when the pipe is full: PIPE_BYTES of items the worker has not read yet
        (it reads them all at the end of each batch)."""
        future: Future[R] = Future()
        with self._lock:
            run = self._run or self._start()
            item_id = next(self._ids)
            run.pending[item_id] = future
        # A dead or closed worker (OSError, ValueError): its answer reader fails the item.
        with self._write_lock, contextlib.suppress(OSError, ValueError):
            send_frame(run.child.requests, (item_id, item))
        return future

    def __call__(self, item: T) -> R:
        return self.submit(item).result()

    def _read_answers(self, run: _Run) -> None:
        """The caller's thread for one worker: resolves each answered item's future, and when the
        worker exits, fails the items it still held."""
        try:
            ok, error = pickle.load(run.child.replies)
            if not ok:
                run.ready.set_exception(error)
                raise EOFError  # a worker that could not build exits
            run.ready.set_result(None)
            while True:
                item_ids, ok, value = pickle.load(run.child.replies)
                with self._lock:
                    futures = [run.pending.pop(item_id) for item_id in item_ids]
                for future, result in zip(futures, value if ok else [value] * len(futures), strict=True):
                    (future.set_result if ok else future.set_exception)(result)
        except (EOFError, pickle.UnpicklingError, OSError, ValueError):  # ValueError: closed by close()
            code = run.child.process.wait()
            run.child.close_pipes()
            with self._lock:
                if self._run is run:
                    self._run = None
                failed, run.pending = list(run.pending.values()), {}
            died = WorkerDied(f"the {self.name} worker exited with code {code}")
            if not run.ready.done():
                run.ready.set_exception(died)
            if failed:
                log.error("worker %s exited with code %s; the next item starts a new one", self.name, code)
            build_error = run.ready.exception()
            for future in failed:
                future.set_exception(build_error or died)

    def close(self) -> None:
        """Stops the worker; a later submit starts a new one."""
        with self._lock:
            run, self._run = self._run, None
        if run is not None:
            run.child.stop()


class _Run:
    """One worker process and the items sent to it that it has not answered."""

    def __init__(self, child: Child) -> None:
        self.child = child
        self.ready: Future[None] = Future()
        self.pending: dict[int, Future[Any]] = {}


def factory_spec(factory: Callable, torch_threads: int | None) -> tuple[str, str]:
    """The module and name a worker imports `factory` by, or a ValueError before any process
    starts (a nested function, a torch thread count under 1)."""
    if "<" in factory.__qualname__ or "." in factory.__qualname__:
        raise ValueError(f"{factory.__qualname__} is not a module-level function: workers cannot import it")
    if torch_threads is not None and torch_threads < 1:
        raise ValueError(f"torch_threads must be >= 1, got {torch_threads}")
    return factory.__module__, factory.__qualname__


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


def send_frame(pipe: IO[bytes], value: Any) -> None:
    """`value` pickled behind its length (4 bytes, little-endian): what `_Frames` reads."""
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    pipe.write(len(data).to_bytes(4, "little") + data)
    pipe.flush()


class _Frames:
    """The worker's side of its stdin: the frames `send_frame` wrote, read from the raw pipe, so
    that it can take all that have arrived without waiting (one thread: nothing to lock)."""

    def __init__(self, fd: int) -> None:
        self.fd, self.buffer, self.ended = fd, bytearray(), False

    def read(self, *, wait: bool) -> list[Any]:
        """The frames complete so far; with `wait`, at least one unless the pipe has ended."""
        frames = self._complete()
        while wait and not frames and not self.ended:
            self._fill()
            frames = self._complete()
        while not self.ended and select.select([self.fd], [], [], 0)[0]:
            self._fill()
        return frames + self._complete()

    def read_for(self, count: int, seconds: float) -> list[Any]:
        """The frames complete within `seconds`, returning as soon as there are `count`."""
        deadline = time.monotonic() + seconds
        frames = self._complete()
        while len(frames) < count and not self.ended:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                break
            self._fill()
            frames += self._complete()
        return frames

    def _fill(self) -> None:
        data = os.read(self.fd, 1 << 16)
        self.buffer += data
        self.ended = not data

    def _complete(self) -> list[Any]:
        frames = []
        while len(self.buffer) >= 4:
            size = int.from_bytes(self.buffer[:4], "little")
            if len(self.buffer) < 4 + size:
                break
            frames.append(pickle.loads(self.buffer[4 : 4 + size]))
            del self.buffer[: 4 + size]
        return frames


def _serve(requests: IO[bytes], replies: IO[bytes]) -> None:
    """The worker: build the function, then answer everything that has arrived each time it is
    free, `max_batch` at a time (after lingering for as many as the last batch had)."""
    frames = _Frames(requests.fileno())
    arrived = frames.read(wait=True)
    if not arrived:  # the caller went before sending anything
        return
    (module, name, args, torch_threads, max_batch, linger_s), *early = arrived
    function = build_function(replies, module, name, args, torch_threads)
    if function is None:
        return
    waiting: deque[tuple[int, Any]] = deque(early)  # items sent before it was built
    expected = 1  # the last batch's size: how many callers are likely to come back
    while True:
        waiting.extend(frames.read(wait=not waiting))
        if not waiting:  # the caller closed the pipe, or died
            return
        if linger_s and len(waiting) < expected:  # expected <= max_batch: a batch's size
            waiting.extend(frames.read_for(expected - len(waiting), linger_s))
        batch = [waiting.popleft() for _ in range(min(max_batch, len(waiting)))]
        expected = len(batch)
        item_ids = [item_id for item_id, _ in batch]
        try:
            results = function([item for _, item in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{len(results)} results for a batch of {len(batch)}")
            answer: tuple[list[int], bool, Any] = (item_ids, True, results)
        except Exception as error:
            answer = (item_ids, False, picklable_error(error))
        send_pickle(replies, answer)


if __name__ == "__main__":
    child_main(_serve)
