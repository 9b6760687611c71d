"""`MicroBatcher`: concurrent callers' items run through one function as a batch.

    parse = MicroBatcher(lambda texts: classifier.parse(texts), max_batch=32)
    parse("I lost my card")          # from any thread; returns this item's result
    await asyncio.wrap_future(parse.submit("I lost my card"))   # the same, from an event loop

One worker thread takes the first waiting item, then every item already queued behind it (up to
`max_batch`), and calls the function once for all of them. Callers that arrive while a batch runs
share the next one. It never waits for a batch to fill.

On 2 cores one forward pass of 4 images costs far less than 4 passes of one. Industrial QC uses
it (concurrent inspections on one torch thread of the server); a model in a process of its own
batches there instead (`batching_worker.py`: customer service's three models, the fraud scorer).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class MicroBatcher(Generic[T, R]):
    def __init__(
        self,
        fn: Callable[[list[T]], list[R]],
        *,
        max_batch: int = 32,
        torch_threads: int | None = None,
        name: str = "batcher",
    ) -> None:
        """`torch_threads`: torch's CPU threads in the worker (None: the process's count); one
        keeps a pass from stalling on a core that the HTTP threads are using."""
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self._fn, self._max_batch = fn, max_batch
        self._torch_threads = torch_threads
        self._queue: queue.SimpleQueue[tuple[T, Future[R]]] = queue.SimpleQueue()
        threading.Thread(target=self._work, name=name, daemon=True).start()

    def __call__(self, item: T) -> R:
        return self.submit(item).result()

    def submit(self, item: T) -> Future[R]:
        """Queues `item` and returns at once; an event loop awaits `asyncio.wrap_future(...)`."""
        future: Future[R] = Future()
        self._queue.put((item, future))
        return future

    def _work(self) -> None:
        if self._torch_threads is not None:
            import torch  # per thread: the rest of the process keeps its count

            torch.set_num_threads(self._torch_threads)
        while True:
            batch = self._next_batch()
            try:
                results = self._fn([item for item, _ in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"{len(results)} results for a batch of {len(batch)}")
            except Exception as error:  # every caller of the batch gets the error, the worker goes on
                for _, future in batch:
                    future.set_exception(error)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                future.set_result(result)

    def _next_batch(self) -> list[tuple[T, Future[R]]]:
        batch = [self._queue.get()]
        while len(batch) < self._max_batch:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch
