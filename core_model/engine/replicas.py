"""`EngineReplicas`: the engine on every CPU core, one process each, requests spread over them.

    spec = EngineSpec(model="embedded", device="cpu")
    engine = EngineReplicas(build_engine(spec), spec, helpers=1)   # this process + 1 helper
    engine.load_adapter("fim", "apps/code_assist/assets/fim")      # every replica loads it
    async for output in engine.stream(prompt_ids, params, adapter="fim"): ...

Why processes: on CPU a small model's decode step is thousands of tensor operations dispatched
from Python on one thread, and a second engine thread in the same process would queue for the
interpreter lock (1.07-1.41x one engine's throughput, measured). Two engine processes on 2 cores
each run as fast as one alone (the embedded model, 24 completions of 16 tokens: 2.1-2.5 s each,
against 2.1-2.7 s for one alone).

The local engine (this process) keeps every role of an `Engine`: tokenizer, model, the adapter
registry, `generate`, `iterate`, `check`, and the cache and scheduler that metrics read (those
count the local engine alone; `num_running` counts every replica). Only `stream` is spread: each
request goes to the replica with the fewest requests in flight, and among those to the one that
last served the same first cache block with the same adapter (its prefix cache holds the block).
Each helper builds its own engine from the same `EngineSpec`, so they hold the same weights. An
adapter is loaded into every replica or none. A helper that exits fails its requests in flight
(finish_reason "error") and is started again, with the adapters loaded.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import itertools
import logging
import os
import pickle
import threading
from collections import OrderedDict
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

import torch

from ..worker_process import Child, WorkerDied, child_main, picklable_error, send_pickle
from .engine import Engine, EngineConfig, RequestOutput
from .sampling import SamplingParams

log = logging.getLogger(__name__)

AFFINITY_KEYS = 4096  # first blocks remembered for routing
COMMAND_TIMEOUT_S = 300.0  # a helper's adapter load or unload (reading a file)
MAX_REPLICAS = 4  # what replicas_for picks at most
REPLICAS_MAX_WEIGHT_BYTES = 2 * 2**30  # what replicas_for lets all replicas' weights take together


@dataclass(frozen=True)
class EngineSpec:
    """How to build an engine: what each replica loads."""

    model: str  # a preset name or a checkpoint directory
    device: str = "cpu"
    dtype: torch.dtype | None = None  # None: the checkpoint's own
    quantize: str | None = None  # "int8": weight-only int8 linears and experts
    config: dict[str, Any] = field(default_factory=dict)  # EngineConfig fields over for_serving's


def build_engine(spec: EngineSpec) -> Engine:
    """The model, tokenizer and engine `spec` names, configured for serving."""
    from ..checkpoint import load_model
    from ..tokenizer import load_tokenizer
    from .quantize import quantize_int8

    tokenizer = load_tokenizer(spec.model)
    model = load_model(spec.model, device=spec.device, dtype=spec.dtype)
    if tokenizer.vocab_size > model.config.vocab_size:
        raise ValueError(
            f"the tokenizer of {spec.model} has {tokenizer.vocab_size} ids but the model embeds "
            f"only {model.config.vocab_size}"
        )
    if spec.quantize == "int8":
        quantize_int8(model)
    elif spec.quantize is not None:
        raise ValueError(f"quantize={spec.quantize!r}: expected 'int8' or None")
    return Engine(model, tokenizer, EngineConfig.for_serving(model, **spec.config))


def replicas_for(spec: EngineSpec) -> int:
    """One on CUDA (one engine batches for the whole GPU). On CPU, one per core this process may
    run on, up to MAX_REPLICAS, while the replicas' weights together fit REPLICAS_MAX_WEIGHT_BYTES."""
    from ..checkpoint import source_config

    if spec.device != "cpu":
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    bytes_per_weight = 1 if spec.quantize == "int8" else (spec.dtype or torch.bfloat16).itemsize
    weight_bytes = source_config(spec.model).num_parameters() * bytes_per_weight
    return max(1, min(cores, MAX_REPLICAS, REPLICAS_MAX_WEIGHT_BYTES // max(1, weight_bytes)))


class EngineReplicas:
    """An `Engine` (the local one) whose `stream` also runs on `helpers` processes."""

    def __init__(self, local: Engine, spec: EngineSpec, *, helpers: int) -> None:
        if helpers < 0:
            raise ValueError(f"helpers must be >= 0, got {helpers}")
        self.local, self.spec = local, spec
        self._ids = itertools.count()
        self._route_lock = threading.Lock()
        self._affinity: OrderedDict[tuple, int] = OrderedDict()  # first block -> replica index
        self._closed = False
        self.routed = [0] * (1 + helpers)  # requests streamed by each replica (0: the local one)
        self._helpers: list[_Helper] = []
        try:
            for index in range(1, helpers + 1):
                self._helpers.append(_Helper(index, spec, on_exit=self._restart))
            for helper in self._helpers:
                helper.wait_ready()
        except BaseException:
            self.shutdown()
            raise
        atexit.register(self._close_helpers)  # the parent waits for its helpers on the way out

    def __getattr__(self, name: str) -> Any:  # everything but streaming is the local engine's
        return getattr(self.local, name)

    @property
    def replicas(self) -> int:
        return 1 + len(self._helpers)

    @property
    def num_running(self) -> int:
        """Sequences running on every replica. A helper runs at most `max_sequences` of those it
        holds (the same config as the local engine's); the rest wait for a slot there."""
        slots = self.local.config.max_sequences
        return self.local.num_running + sum(min(helper.in_flight, slots) for helper in self._helpers)

    @property
    def num_waiting(self) -> int:
        """Requests waiting on every replica (what the server's `max_queue` limits)."""
        slots = self.local.config.max_sequences
        return self.local.num_waiting + sum(max(0, helper.in_flight - slots) for helper in self._helpers)

    # ------------------------------------------------------------------------- adapters
    def load_adapter(self, name: str, path: str | Path) -> None:
        """Loads the adapter into every replica, or (on any error) into none."""
        self.local.load_adapter(name, path)
        loaded: list[_Helper] = []
        try:
            for helper in self._helpers:
                helper.command("load", name, str(path))
                loaded.append(helper)
        except BaseException:
            for helper in loaded:
                with contextlib.suppress(Exception):
                    helper.command("unload", name)
            self.local.unload_adapter(name)
            raise

    def unload_adapter(self, name: str) -> None:
        """Unloads the adapter from every replica; refused while any replica serves it."""
        if any(name in helper.adapters_in_flight() for helper in self._helpers):
            raise ValueError(f"adapter {name!r} is serving requests; unload it when they finish")
        self.local.unload_adapter(name)
        for helper in self._helpers:
            helper.command("unload", name)

    # ------------------------------------------------------------------------- streaming
    async def stream(
        self,
        prompt: str | list[int],
        params: SamplingParams | None = None,
        *,
        request_id: str | None = None,
        adapter: str | None = None,
    ) -> AsyncGenerator[RequestOutput, None]:
        """`Engine.stream` on the replica `_choose` picks."""
        params = params or SamplingParams()
        prompt_ids = self.local.check(prompt, params)
        if adapter:
            self.local.adapters.content_hash(adapter)  # an unknown name fails here, as locally
        helper = self._choose(prompt_ids, adapter)
        if helper is None:
            outputs = self.local.stream(prompt_ids, params, request_id=request_id, adapter=adapter)
        else:
            outputs = self._stream_on(helper, prompt_ids, params, request_id=request_id, adapter=adapter)
        async with contextlib.aclosing(outputs):
            async for output in outputs:
                yield output

    async def _stream_on(
        self,
        helper: _Helper,
        prompt_ids: list[int],
        params: SamplingParams,
        *,
        request_id: str | None = None,
        adapter: str | None = None,
    ) -> AsyncGenerator[RequestOutput, None]:
        loop = asyncio.get_running_loop()
        outputs: asyncio.Queue[RequestOutput] = asyncio.Queue()
        request_id = request_id or f"replica-req-{next(self._ids)}"

        def deliver(output: RequestOutput) -> None:  # on the helper's reader thread
            loop.call_soon_threadsafe(outputs.put_nowait, output)

        helper.add(request_id, prompt_ids, params, adapter, deliver)
        finished = False
        try:
            while not finished:
                output = await outputs.get()
                finished = output.finished
                yield output
        finally:
            if not finished:
                helper.abort(request_id)

    def _choose(self, prompt_ids: list[int], adapter: str | None) -> _Helper | None:
        """The replica for a new request (None: the local engine)."""
        block = self.local.config.block_size
        key = (adapter, tuple(prompt_ids[:block])) if len(prompt_ids) >= block else None
        with self._route_lock:
            loads: list[int | None] = [self.local.num_running + self.local.num_waiting]
            loads += [helper.in_flight if helper.alive else None for helper in self._helpers]
            least = min(load for load in loads if load is not None)
            index = next(i for i, load in enumerate(loads) if load == least)
            preferred = self._affinity.get(key) if key is not None else None
            if preferred is not None and preferred < len(loads) and loads[preferred] == least:
                index = preferred
            self.routed[index] += 1
            if key is not None:
                self._affinity[key] = index
                self._affinity.move_to_end(key)
                if len(self._affinity) > AFFINITY_KEYS:
                    self._affinity.popitem(last=False)
        return None if index == 0 else self._helpers[index - 1]

    # ------------------------------------------------------------------------- life
    def _restart(self, gone: _Helper) -> None:
        """A helper exited: a new one in its place, with the adapters loaded (on a thread)."""
        if self._closed:
            return

        def start() -> None:
            try:
                helper = _Helper(gone.index, self.spec, on_exit=self._restart)
                helper.wait_ready()
                for name, path in dict(self.local.adapters.paths).items():
                    helper.command("load", name, str(path))
            except Exception:
                log.exception("engine replica %d could not be started again", gone.index)
                return
            self._helpers[gone.index - 1] = helper
            log.warning("engine replica %d started again", gone.index)

        threading.Thread(target=start, name=f"restart-replica-{gone.index}", daemon=True).start()

    def shutdown(self) -> None:
        """Stops the helpers and the local engine's thread."""
        self._close_helpers()
        self.local.shutdown()

    def _close_helpers(self) -> None:
        self._closed = True
        for helper in self._helpers:
            helper.close()


def _failed(request_id: str, prompt_ids: list[int]) -> RequestOutput:
    return RequestOutput(
        request_id=request_id,
        prompt_token_ids=prompt_ids,
        token_ids=[],
        text="",
        delta_token_ids=[],
        delta_text="",
        finished=True,
        finish_reason="error",
    )


class _Helper:
    """One helper process and what is in flight on it."""

    def __init__(self, index: int, spec: EngineSpec, *, on_exit: Callable[[_Helper], None]) -> None:
        self.index, self.name = index, f"engine-replica-{index}"
        self._on_exit = on_exit
        self._child = Child.start(self.name, spec, module=__name__)
        self._write_lock = threading.Lock()
        self._lock = threading.Lock()  # the two tables below
        # request id -> (its prompt, its adapter, where its outputs go)
        self._listeners: dict[str, tuple[list[int], str | None, Callable[[RequestOutput], None]]] = {}
        self._commands: dict[int, tuple[threading.Event, list[BaseException | None]]] = {}
        self._command_ids = itertools.count()
        self.alive = False
        self._closing = False

    @property
    def in_flight(self) -> int:
        return len(self._listeners)

    def adapters_in_flight(self) -> set[str | None]:
        with self._lock:
            return {adapter for _, adapter, _ in self._listeners.values()}

    @property
    def pid(self) -> int:
        return self._child.process.pid

    def wait_ready(self) -> None:
        """Waits for the helper to build its engine; raises its error if that failed."""
        try:
            kind, error = pickle.load(self._child.replies)
        except (EOFError, pickle.UnpicklingError, OSError):
            code = self._child.process.wait()
            raise WorkerDied(f"{self.name} exited with code {code} while building its engine") from None
        assert kind == "ready"
        if error is not None:
            self.close()
            raise error
        self.alive = True
        threading.Thread(target=self._read, name=f"{self.name}-reader", daemon=True).start()

    def add(
        self,
        request_id: str,
        prompt_ids: list[int],
        params: SamplingParams,
        adapter: str | None,
        listener: Callable[[RequestOutput], None],
    ) -> None:
        with self._lock:
            accepted = self.alive
            if accepted:
                self._listeners[request_id] = (prompt_ids, adapter, listener)
        if accepted and self._send(("add", request_id, prompt_ids, params, adapter)):
            return
        with self._lock:  # not sent: failed here, unless the reader found the exit first
            entry = self._listeners.pop(request_id, None) if accepted else (prompt_ids, adapter, listener)
        if entry is not None:
            listener(_failed(request_id, prompt_ids))

    def abort(self, request_id: str) -> None:
        with self._lock:
            self._listeners.pop(request_id, None)
        self._send(("abort", request_id))

    def command(self, kind: str, *args: Any) -> None:
        """Runs "load" or "unload" on the helper's engine; raises its error."""
        done, result = threading.Event(), cast(list[BaseException | None], [])  # [its error or None]
        command_id = next(self._command_ids)
        with self._lock:
            accepted = self.alive
            if accepted:
                self._commands[command_id] = (done, result)
        answered = accepted and self._send((kind, command_id, *args)) and done.wait(COMMAND_TIMEOUT_S)
        if not (answered and result):
            with self._lock:
                self._commands.pop(command_id, None)
            raise WorkerDied(f"{self.name} did not answer {kind} {args}")
        if result[0] is not None:
            raise result[0]

    def _send(self, message: tuple) -> bool:
        try:
            with self._write_lock:
                send_pickle(self._child.requests, message)
            return True
        except (OSError, ValueError):  # a dead helper's pipe (its reader reports the exit)
            return False

    def _read(self) -> None:
        replies = self._child.replies
        while True:
            try:
                message = pickle.load(replies)
            except (EOFError, pickle.UnpicklingError, OSError):
                break
            if message[0] == "out":
                output: RequestOutput = message[1]
                with self._lock:
                    entry = self._listeners.get(output.request_id)
                    if entry is not None and output.finished:
                        del self._listeners[output.request_id]
                if entry is not None:
                    entry[2](output)
            else:  # ("done", command id, error or None)
                with self._lock:
                    waiting = self._commands.pop(message[1], None)
                if waiting is not None:
                    waiting[1].append(message[2])
                    waiting[0].set()
        self._exited()

    def _exited(self) -> None:
        with self._lock:
            self.alive = False
            listeners, self._listeners = self._listeners, {}
            commands, self._commands = self._commands, {}
        for request_id, (prompt_ids, _, listener) in listeners.items():
            listener(_failed(request_id, prompt_ids))
        for done, _ in commands.values():
            done.set()  # no result: the command raises WorkerDied
        code = self._child.process.wait()
        if not self._closing:
            log.error("%s exited with code %s; %d requests failed", self.name, code, len(listeners))
            self._child.close_pipes()
            self._on_exit(self)

    def close(self) -> None:
        self._closing = True
        self._child.stop()


# ----------------------------------------------------------------------------- in the helper
def _serve(requests: IO[bytes], replies: IO[bytes]) -> None:
    """The helper's loop: build the engine from the spec, then follow the parent's messages."""
    spec: EngineSpec = pickle.load(requests)
    torch.set_num_threads(1)  # the engine's thread then runs on one core
    try:
        engine = build_engine(spec)
    except Exception as error:
        send_pickle(replies, ("ready", picklable_error(error)))
        return
    send_pickle(replies, ("ready", None))
    write_lock = threading.Lock()

    def emit(message: tuple) -> None:  # from this thread and the engine's
        with write_lock:
            send_pickle(replies, message)

    def deliver(output: RequestOutput) -> None:
        emit(("out", output))

    while True:
        try:
            message = pickle.load(requests)
        except EOFError:  # the parent closed the pipe, or died
            engine.shutdown()
            return
        kind = message[0]
        if kind == "add":
            _, request_id, prompt_ids, params, adapter = message
            try:
                engine.submit(prompt_ids, params, request_id=request_id, adapter=adapter, listener=deliver)
            except Exception:
                log.exception("request %s refused", request_id)
                deliver(_failed(request_id, prompt_ids))
        elif kind == "abort":
            engine.abort(message[1])
        else:  # ("load", id, name, path) or ("unload", id, name)
            command_id, args = message[1], message[2:]
            try:
                engine.load_adapter(*args) if kind == "load" else engine.unload_adapter(*args)
                emit(("done", command_id, None))
            except Exception as error:
                emit(("done", command_id, picklable_error(error)))


if __name__ == "__main__":
    child_main(_serve)
