"""The engine: requests in, tokens out, many at once over one model and one latent cache.

    engine = Engine(load_model("tiny"), tokenizer, EngineConfig(max_cache_tokens=4096))
    [out] = engine.generate(["Hello"], SamplingParams(max_tokens=20, temperature=0))
    async for delta in engine.stream("Hello", SamplingParams(max_tokens=20)): ...

Each `step()` asks the scheduler which tokens to compute, runs them through the model runner in
one batch, samples the next token of every sequence whose tokens are all computed, and updates
text, stop conditions and finished requests. `generate` drives steps itself; `stream` hands them
to one background thread so an asyncio server never blocks on the model.

It knows nothing of HTTP, adapters' files or chat templates.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import queue
import threading
from collections.abc import AsyncGenerator, Callable, Iterator
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import cpu_has_native_bfloat16
from ..model import MoEForCausalLM
from ..moe import use_bfloat16_experts
from ..tokenizer import Tokenizer
from .cache import BlockPool, LatentCache
from .copying import CopyIndex
from .detokenize import IncrementalDetokenizer, StopStrings
from .lora import AdapterSet
from .runner import ModelRunner, SequenceSlice
from .sampling import Sampler, SamplingParams, make_generator
from .scheduler import Scheduler, Sequence

log = logging.getLogger(__name__)

BFLOAT16_EXPERTS_FROM = 64  # token-expert pairs: a 16-token prefill chunk of a top-4 model
BFLOAT16_EXPERTS_MAX_BYTES = 2**30  # the most memory for_serving spends on bfloat16 expert copies


@dataclass(frozen=True)
class EngineConfig:
    block_size: int = 16  # tokens per cache block
    max_cache_tokens: int = 16384  # cache capacity, all sequences together
    max_batched_tokens: int = 512  # tokens computed per step (decode tokens + prefill chunks)
    max_sequences: int = 64  # sequences running at once
    prefix_caching: bool = True
    max_loras: int = 4  # LoRA adapters held in memory (least recently used evicted)
    attention_chunk: int = 1024  # cached positions expanded at a time during prefill
    cache_dtype: torch.dtype | None = None  # default: the model's dtype
    # CPU threads of the background thread that steps for `stream`. None: one fewer than the
    # process has, so the event loop that delivers each token keeps a core: with every core in
    # the step's OpenMP team, 32 streamed tokens took 3.2x as long as `generate` on 2 cores.
    worker_threads: int | None = None
    # On CPU with float32 weights: routed experts multiply steps of at least this many token-expert
    # pairs (prefill chunks) through bfloat16 copies of their weights (moe.use_bfloat16_experts).
    # None: off. `for_serving` turns it on where the CPU multiplies bfloat16 natively.
    bfloat16_experts_from: int | None = None

    @classmethod
    def for_serving(cls, model: MoEForCausalLM, **fields: Any) -> EngineConfig:
        """`EngineConfig(**fields)`, with bfloat16 experts for prefill where they pay: a CPU that
        multiplies bfloat16 natively, float32 routed experts, and their copy within
        BFLOAT16_EXPERTS_MAX_BYTES."""
        weight = model.embed_tokens.weight
        expert_params = sum(p.numel() for n, p in model.named_parameters() if ".experts." in n)
        if (
            weight.device.type == "cpu"
            and weight.dtype == torch.float32
            and cpu_has_native_bfloat16()
            and expert_params * 2 <= BFLOAT16_EXPERTS_MAX_BYTES
        ):
            fields.setdefault("bfloat16_experts_from", BFLOAT16_EXPERTS_FROM)
        return cls(**fields)


@dataclass
class RequestOutput:
    """Where a request stands after a step: everything so far, and what this step added."""

    request_id: str
    prompt_token_ids: list[int]
    token_ids: list[int]
    text: str
    delta_token_ids: list[int]
    delta_text: str
    finished: bool = False
    finish_reason: str | None = None  # "stop", "length", "abort" or "error"
    logprobs: list[float] | None = None
    top_logprobs: list[list[tuple[int, float]]] | None = None
    cached_prompt_tokens: int = 0


@dataclass
class _Followed:
    added: bool = False
    finished: bool = False


@dataclass
class _Request:
    """The engine's per-request state beside the scheduler's `Sequence`."""

    params: SamplingParams
    generator: torch.Generator | None
    detokenizer: IncrementalDetokenizer | None
    stops: StopStrings
    text: str = ""
    logprobs: list[float] = field(default_factory=list)
    top_logprobs: list[list[tuple[int, float]]] = field(default_factory=list)
    cached_prompt_tokens: int | None = None
    copy_index: CopyIndex | None = None


class Engine:
    def __init__(
        self, model: MoEForCausalLM, tokenizer: Tokenizer | None = None, config: EngineConfig | None = None
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.config = config = config or EngineConfig()
        if config.bfloat16_experts_from is not None:
            use_bfloat16_experts(model, from_pairs=config.bfloat16_experts_from)
        device = model.embed_tokens.weight.device
        num_blocks = math.ceil(config.max_cache_tokens / config.block_size)
        dtype = config.cache_dtype or model.embed_tokens.weight.dtype
        self.cache = LatentCache(
            model.config, num_blocks=num_blocks, block_size=config.block_size, dtype=dtype, device=device
        )
        self.pool = BlockPool(num_blocks)
        self.scheduler = Scheduler(
            self.pool,
            block_size=config.block_size,
            max_batched_tokens=config.max_batched_tokens,
            max_sequences=config.max_sequences,
            max_adapters=config.max_loras,
            prefix_caching=config.prefix_caching,
        )
        self.adapters = AdapterSet(model, max_loras=config.max_loras)
        self.runner = ModelRunner(model, self.cache, attention_chunk=config.attention_chunk)
        self.sampler = Sampler()
        self._sequences: dict[str, Sequence] = {}
        self._inbox: queue.SimpleQueue[tuple[str, object]] = queue.SimpleQueue()
        self._listeners: dict[str, Callable[[RequestOutput], None]] = {}
        self._ids = itertools.count()
        self._step_lock = threading.Lock()
        self._wake = threading.Event()
        self._worker: threading.Thread | None = None
        self._pending_adds = 0
        self._stopping = False
        self.error: BaseException | None = None  # the last failure of a step on the worker

    # ------------------------------------------------------------------------- requests
    def add_request(
        self,
        prompt: str | list[int],
        params: SamplingParams | None = None,
        *,
        request_id: str | None = None,
        adapter: str | None = None,
    ) -> str:
        """Queues a request (on the base model, or with a loaded LoRA adapter); it joins the
        running batch at the next step. Returns its id."""
        params = params or SamplingParams()
        prompt_ids = self.check(prompt, params)
        request_id = request_id or f"req-{next(self._ids)}"
        adapter_key = self.adapters.content_hash(adapter) if adapter else None
        sequence = Sequence(request_id, prompt_ids, params.max_tokens, adapter_key=adapter_key)
        sequence.state["adapter"] = adapter
        sequence.state["request"] = _Request(
            params=params,
            generator=make_generator(params.seed, self.cache.latents_LPW.device),
            detokenizer=IncrementalDetokenizer(self.tokenizer) if self.tokenizer else None,
            stops=StopStrings(params.stop),
            copy_index=(
                CopyIndex(params.copy_from, params.copy_weights, min_match=params.copy_min_match)
                if params.copy_bias
                else None
            ),
        )
        self._pending_adds += 1
        self._inbox.put(("add", sequence))
        self._wake.set()
        return request_id

    def submit(
        self,
        prompt: str | list[int],
        params: SamplingParams,
        *,
        request_id: str,
        adapter: str | None,
        listener: Callable[[RequestOutput], None],
    ) -> None:
        """Queues a request whose outputs go to `listener`, called on the background thread that
        steps it (started if need be), up to and including the finished one."""

        def deliver(output: RequestOutput) -> None:
            if output.finished:
                self._listeners.pop(request_id, None)
            listener(output)

        self._listeners[request_id] = deliver
        try:
            self.add_request(prompt, params, request_id=request_id, adapter=adapter)
        except BaseException:
            self._listeners.pop(request_id, None)
            raise
        self._ensure_worker()

    def load_adapter(self, name: str, path: str | Path) -> None:
        """Makes a PEFT LoRA directory available to requests as `adapter=name`."""
        adapter = self.adapters.read(name, path)  # file reading happens outside the step lock
        with self._step_lock:
            self.adapters.add(adapter)

    def unload_adapter(self, name: str) -> None:
        with self._step_lock:
            if name in self._adapters_in_use():
                raise ValueError(f"adapter {name!r} is serving requests; unload it when they finish")
            self.adapters.unregister(name)

    def _adapters_in_use(self) -> set[str]:
        return {s.state["adapter"] for s in self._sequences.values() if s.state.get("adapter")}

    def check(self, prompt: str | list[int], params: SamplingParams) -> list[int]:
        """The prompt's token ids, or ValueError saying why the request can never run."""
        prompt_ids = self._encode(prompt)
        self._check_fits(len(prompt_ids), params.max_tokens)
        if (params.stop or params.copy_until) and self.tokenizer is None:
            raise ValueError("stop and copy_until strings need a tokenizer to decode the output")
        if max(params.first_token_ids, default=0) >= self.model.config.vocab_size:
            raise ValueError(f"first_token_ids must be in [0, {self.model.config.vocab_size})")
        if max((max(s, default=0) for s in params.copy_from), default=0) >= self.model.config.vocab_size:
            raise ValueError(f"copy_from token ids must be in [0, {self.model.config.vocab_size})")
        return prompt_ids

    def abort(self, request_id: str) -> None:
        """Cancels a request: it stops at the next step and its cache blocks are freed."""
        self._inbox.put(("abort", request_id))
        self._wake.set()

    def has_unfinished(self) -> bool:
        return bool(self._sequences) or not self._inbox.empty()

    @property
    def num_waiting(self) -> int:
        """Requests not running yet: queued for the scheduler or just added."""
        return len(self.scheduler.waiting) + self._pending_adds

    @property
    def num_running(self) -> int:
        return len(self.scheduler.running)

    def _encode(self, prompt: str | list[int]) -> list[int]:
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise ValueError("a text prompt needs a tokenizer; pass token ids instead")
            prompt = self.tokenizer.encode(prompt, add_bos=self.tokenizer.bos_id is not None)
        if not prompt:
            raise ValueError("the prompt is empty")
        vocab = self.model.config.vocab_size
        if min(prompt) < 0 or max(prompt) >= vocab:
            raise ValueError(f"prompt token ids must be in [0, {vocab})")
        return list(prompt)

    def _check_fits(self, prompt_tokens: int, max_tokens: int) -> None:
        context = self.model.config.max_position_embeddings
        if prompt_tokens >= context:
            raise ValueError(f"the prompt has {prompt_tokens} tokens; the model's context is {context}")
        capacity = self.pool.num_blocks * self.config.block_size
        if prompt_tokens + max_tokens > capacity:
            raise ValueError(
                f"prompt ({prompt_tokens}) + max_tokens ({max_tokens}) exceeds the cache's {capacity} tokens"
            )

    # ------------------------------------------------------------------------- stepping
    def step(self) -> list[RequestOutput]:
        """One scheduler step; returns an output for every request that advanced or ended."""
        with self._step_lock:
            outputs = self._take_inbox()
            plan = self.scheduler.schedule()
            if plan.sequences:
                outputs += self._run(plan.sequences)
        for output in outputs:
            listener = self._listeners.get(output.request_id)
            if listener is not None:
                listener(output)
        return outputs

    def _take_inbox(self) -> list[RequestOutput]:
        outputs = []
        while not self._inbox.empty():
            action, payload = self._inbox.get()
            if action == "add":
                assert isinstance(payload, Sequence)
                self._pending_adds -= 1
                self._sequences[payload.request_id] = payload
                self.scheduler.add(payload)
            elif isinstance(payload, str) and payload in self._sequences:
                outputs.append(self._finish(self._sequences[payload], "abort", new_ids=[], new_text=""))
        return outputs

    def _run(self, planned: list[tuple[Sequence, int]]) -> list[RequestOutput]:
        parts = []
        for sequence, count in planned:
            start = sequence.num_computed
            request: _Request = sequence.state["request"]
            if request.cached_prompt_tokens is None:
                request.cached_prompt_tokens = start
            slots = self.scheduler.slots(sequence, start + count)
            parts.append((sequence.token_ids[start : start + count], SequenceSlice(start, count, slots)))
        self._select_adapters(planned)
        try:
            logits_BV = self.runner.forward(self.runner.build_batch(parts))
        finally:
            self.adapters.set_step([], self.cache.latents_LPW.device)  # nothing applies between steps
        ready, rows = [], []
        for row, (sequence, count) in enumerate(planned):
            self.scheduler.computed(sequence, count)
            if sequence.num_uncomputed == 0:
                ready.append(sequence)
                rows.append(row)
        if not ready:
            return []
        requests: list[_Request] = [s.state["request"] for s in ready]
        token_ids = [s.token_ids for s in ready]  # prompt and output: a new list each
        sampled = self.sampler.sample(
            logits_BV[rows],
            params=[r.params for r in requests],
            generators=[r.generator for r in requests],
            seen_tokens=token_ids,
            allowed_token_ids=[
                () if s.output_ids else r.params.first_token_ids for s, r in zip(ready, requests, strict=True)
            ],
            copy_token_ids=[
                r.copy_index.next_tokens(ids) if r.copy_index else {}
                for ids, r in zip(token_ids, requests, strict=True)
            ],
        )
        outputs = []
        for i, (sequence, request) in enumerate(zip(ready, requests, strict=True)):
            if request.params.logprobs is not None:
                request.logprobs.append(sampled.logprobs[i] or 0.0)
                request.top_logprobs.append(sampled.top_logprobs[i] or [])
            outputs.append(self._advance(sequence, request, sampled.token_ids[i]))
        return outputs

    def _select_adapters(self, planned: list[tuple[Sequence, int]]) -> None:
        names = [sequence.state.get("adapter") for sequence, _ in planned]
        in_use = {name for name in names if name}
        for name in in_use:
            self.adapters.get(name, in_use=in_use)  # read back from disk if it was evicted
        per_token = [name for name, (_, count) in zip(names, planned, strict=True) for _ in range(count)]
        self.adapters.set_step(per_token, self.cache.latents_LPW.device)

    def _advance(self, sequence: Sequence, request: _Request, token_id: int) -> RequestOutput:
        sequence.output_ids.append(token_id)
        params = request.params
        eos = self.model.config.eos_token_id if self.tokenizer is None else self.tokenizer.eos_id
        if token_id in params.stop_token_ids or (token_id == eos and not params.ignore_eos):
            return self._finish(sequence, "stop", new_ids=[token_id], new_text=_drain(request))
        text, stopped = "", False
        if request.detokenizer is not None:
            text, stopped = request.stops.feed(request.detokenizer.add(token_id))
        if stopped:
            return self._finish(sequence, "stop", new_ids=[token_id], new_text=text)
        out_of_room = sequence.num_tokens >= self.model.config.max_position_embeddings
        if len(sequence.output_ids) >= params.max_tokens or out_of_room:
            return self._finish(sequence, "length", new_ids=[token_id], new_text=text + _drain(request))
        request.text += text
        if request.copy_index is not None and text and params.copy_until:
            recent = request.text[-(len(text) + max(map(len, params.copy_until))) :]
            if any(until in recent for until in params.copy_until):
                request.copy_index = None  # the rest is the model's own
        return self._output(sequence, request, new_ids=[token_id], new_text=text)

    def _finish(self, sequence: Sequence, reason: str, *, new_ids: list[int], new_text: str) -> RequestOutput:
        self.scheduler.finish(sequence)
        del self._sequences[sequence.request_id]
        request: _Request = sequence.state["request"]
        request.text += new_text
        return self._output(sequence, request, new_ids=new_ids, new_text=new_text, reason=reason)

    def _output(
        self,
        sequence: Sequence,
        request: _Request,
        *,
        new_ids: list[int],
        new_text: str,
        reason: str | None = None,
    ) -> RequestOutput:
        wants_logprobs = request.params.logprobs is not None
        return RequestOutput(
            request_id=sequence.request_id,
            prompt_token_ids=sequence.prompt_ids,
            token_ids=list(sequence.output_ids),
            text=request.text,
            delta_token_ids=new_ids,
            delta_text=new_text,
            finished=reason is not None,
            finish_reason=reason,
            logprobs=list(request.logprobs) if wants_logprobs else None,
            top_logprobs=list(request.top_logprobs) if wants_logprobs else None,
            cached_prompt_tokens=request.cached_prompt_tokens or 0,
        )

    # ------------------------------------------------------------------------- front ends
    def generate(
        self,
        prompts: Seq[str | list[int]],
        params: SamplingParams | Seq[SamplingParams] | None = None,
        *,
        adapter: str | None = None,
    ) -> list[RequestOutput]:
        """Runs the prompts to completion together (all with `adapter`, if given); outputs in
        the order of the prompts."""
        params_list = list(params) if isinstance(params, Seq) else [params or SamplingParams()] * len(prompts)
        if len(params_list) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(params_list)} sampling params")
        finals: dict[str, RequestOutput] = {}

        def keep_final(output: RequestOutput) -> None:
            if output.finished:
                finals[output.request_id] = output

        ids = [f"req-{next(self._ids)}" for _ in prompts]
        try:
            for request_id, prompt, p in zip(ids, prompts, params_list, strict=True):
                self._listeners[request_id] = keep_final
                self.add_request(prompt, p, request_id=request_id, adapter=adapter)
            while len(finals) < len(ids):
                if not self.step() and self._worker is None and not self.scheduler.has_work():
                    raise RuntimeError("the engine stopped with requests unfinished")
        finally:
            for request_id in ids:
                self._listeners.pop(request_id, None)
        return [finals[request_id] for request_id in ids]

    def iterate(
        self, prompt: str | list[int], params: SamplingParams | None = None, *, adapter: str | None = None
    ) -> Iterator[RequestOutput]:
        """Synchronous streaming: an output per new token, stepping the engine as needed."""
        outputs: queue.SimpleQueue[RequestOutput] = queue.SimpleQueue()
        request_id = f"req-{next(self._ids)}"
        with self._following(
            prompt, params, request_id=request_id, adapter=adapter, listener=outputs.put
        ) as seen:
            while not seen.finished:
                if outputs.empty() and self._worker is None:
                    self.step()
                    continue
                output = outputs.get()
                seen.finished = output.finished
                yield output

    async def stream(
        self,
        prompt: str | list[int],
        params: SamplingParams | None = None,
        *,
        request_id: str | None = None,
        adapter: str | None = None,
    ) -> AsyncGenerator[RequestOutput, None]:
        """Yields an output per new token; closing or cancelling the consumer aborts the request.

        Call `check` first to turn a bad request into an error before anything is streamed.
        """
        loop = asyncio.get_running_loop()
        outputs: asyncio.Queue[RequestOutput] = asyncio.Queue()
        request_id = request_id or f"req-{next(self._ids)}"

        def deliver(output: RequestOutput) -> None:  # called on the engine's thread
            loop.call_soon_threadsafe(outputs.put_nowait, output)

        with self._following(
            prompt, params, request_id=request_id, adapter=adapter, listener=deliver
        ) as seen:
            self._ensure_worker()
            while not seen.finished:
                output = await outputs.get()
                seen.finished = output.finished
                yield output

    @contextlib.contextmanager
    def _following(
        self,
        prompt: str | list[int],
        params: SamplingParams | None,
        *,
        request_id: str,
        adapter: str | None,
        listener: Callable[[RequestOutput], None],
    ) -> Iterator[_Followed]:
        """Adds a request whose outputs go to `listener`; aborts it if the caller leaves early."""
        seen = _Followed()
        self._listeners[request_id] = listener
        try:
            self.add_request(prompt, params, request_id=request_id, adapter=adapter)
            seen.added = True
            yield seen
        finally:
            self._listeners.pop(request_id, None)
            if seen.added and not seen.finished:
                self.abort(request_id)

    def _ensure_worker(self) -> None:
        if self._worker is None:
            self._worker = threading.Thread(target=self._work, name="engine", daemon=True)
            self._worker.start()

    def _work(self) -> None:
        if self.cache.latents_LPW.device.type == "cpu":  # per thread: the caller's count is unchanged
            torch.set_num_threads(self.config.worker_threads or max(1, torch.get_num_threads() - 1))
        while not self._stopping:
            self._wake.wait()
            self._wake.clear()
            while self.has_unfinished() and not self._stopping:
                try:
                    self.step()
                except Exception as error:  # a failed step must not leave streams waiting forever
                    log.exception("engine step failed; failing the requests in flight")
                    self.error = error
                    self._fail_all()

    def _fail_all(self) -> None:
        with self._step_lock:
            self._take_inbox()
            outputs = [
                self._finish(sequence, "error", new_ids=[], new_text="")
                for sequence in list(self._sequences.values())
            ]
        for output in outputs:
            listener = self._listeners.get(output.request_id)
            if listener is not None:
                listener(output)

    def shutdown(self) -> None:
        """Stops the background thread (streams in flight end with finish_reason "error")."""
        self._stopping = True
        self._wake.set()
        if self._worker is not None:
            self._worker.join(timeout=10)
        self._fail_all()


def _drain(request: _Request) -> str:
    """Text held back by the detokenizer and the stop-string matcher, at the end of a request."""
    if request.detokenizer is None:
        return ""
    text, stopped = request.stops.feed(request.detokenizer.flush())
    return text if stopped else text + request.stops.flush()
