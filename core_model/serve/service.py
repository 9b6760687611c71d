"""What the OpenAI-compatible routes do, as plain functions: OpenAI requests in, `*Out` models out.

    job = prepare_completion(body, ctx=ctx)          # checks + prompt ids + SamplingParams
    outputs = await start(job, ctx=ctx)              # queue check, engine.stream, first output
    return await completion_out(job, outputs, ctx=ctx)   # or: completion_chunks(...) to stream

    await load_adapter(name="sql", path="/adapters/sql", ctx=ctx)   # then model="BASE:sql" selects it

Rule breaks raise `ServeError`s (`InvalidRequest`, `ModelNotFound`, `Conflict`, `QueueFull`,
`Unauthorized`); `api.py` turns them into status codes. Nothing here builds an HTTP response or
frames SSE.

A request's `model` is the served name (the base model) or `BASE:ADAPTER`, a LoRA adapter the
engine has loaded. Every accepted adapter request holds its adapter (`AdapterHolds`) until its
outputs close, and an adapter with holders is not unloaded: the engine itself only sees requests
once its worker has picked them up, and an adapter unloaded in between would fail its next step.

Closing the output iterator at any point (client gone, task cancelled) closes `engine.stream`,
which aborts the request in the engine and frees its cache blocks; every layer below therefore
wraps the one it consumes in `aclosing`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import time
import uuid
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from pathlib import Path

from ..engine import Engine, RequestOutput, SamplingParams
from ..engine.lora import AdapterError
from ..fim import fim_template
from ..tokenizer import Tokenizer
from .adapters import AdapterHolds, register_adapter
from .metrics import ServeMetrics
from .schemas import (
    AdapterListOut,
    AdapterOut,
    ChatChoiceOut,
    ChatChunkChoiceOut,
    ChatCompletionChunkOut,
    ChatCompletionOut,
    ChatCompletionRequest,
    ChatLogprobsOut,
    ChatMessageOut,
    CompletionChoiceOut,
    CompletionLogprobsOut,
    CompletionOut,
    CompletionRequest,
    DeltaOut,
    ModelListOut,
    ModelOut,
    SamplingFields,
    TextPart,
    TokenLogprobOut,
    TopLogprobOut,
    UsageOut,
)
from .settings import ServeSettings

log = logging.getLogger(__name__)
Outputs = AsyncGenerator[RequestOutput, None]
DEFAULT_COMPLETION_TOKENS = 16  # OpenAI's default for /v1/completions


class ServeError(Exception):
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code


class InvalidRequest(ServeError):
    """A well-formed request that breaks a rule (n, max_tokens, context length, ...)."""


class Unauthorized(ServeError):
    code = "invalid_api_key"


class ModelNotFound(ServeError):
    code = "model_not_found"


class Conflict(ServeError):
    """The server's state forbids it now: an adapter's name is taken, or requests are using it."""


class QueueFull(ServeError):
    code = "queue_full"


@dataclass(frozen=True)
class ServeContext:
    """Everything the routes depend on, built once per app."""

    engine: Engine
    tokenizer: Tokenizer
    metrics: ServeMetrics
    settings: ServeSettings
    started: int  # unix seconds, the `created` of /v1/models
    holds: AdapterHolds = field(default_factory=AdapterHolds)
    adapter_lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one load or unload at a time

    @property
    def model_name(self) -> str:
        return self.settings.model_name

    @property
    def context_length(self) -> int:
        return self.engine.model.config.max_position_embeddings

    @property
    def cache_tokens(self) -> int:
        return self.engine.pool.num_blocks * self.engine.config.block_size


def build_context(engine: Engine, tokenizer: Tokenizer, settings: ServeSettings) -> ServeContext:
    metrics = ServeMetrics(engine, model_name=settings.model_name)
    return ServeContext(engine, tokenizer, metrics, settings, started=int(time.time()))


@dataclass(frozen=True)
class Job:
    """One accepted request, ready for the engine."""

    request_id: str  # also the response's id
    created: int  # unix seconds
    arrival: float  # perf_counter(), for the latency metrics
    model: str  # as the client named it: the base, or BASE:ADAPTER
    adapter: str | None
    prompt_ids: list[int]
    params: SamplingParams
    include_usage: bool  # stream a last chunk holding the usage


# ----------------------------------------------------------------------------- checks and jobs


def check_api_key(authorization: str | None, *, ctx: ServeContext) -> None:
    """Raises Unauthorized unless no key is set or `authorization` is `Bearer <key>`."""
    key = ctx.settings.api_key
    if key is None:
        return
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip().encode(), key.encode()):
        raise Unauthorized("a valid API key is required: send the header `Authorization: Bearer <key>`")


def list_models(*, ctx: ServeContext) -> ModelListOut:
    """The base model, then one entry per loaded adapter (`BASE:NAME`, `parent` the base, `root`
    its directory), as vLLM lists its LoRA modules."""
    base = ModelOut(
        id=ctx.model_name, created=ctx.started, root=ctx.settings.model, max_model_len=ctx.context_length
    )
    adapters = [
        ModelOut(
            id=_adapter_model(name, ctx=ctx),
            created=ctx.started,
            root=str(path),
            parent=ctx.model_name,
            max_model_len=ctx.context_length,
        )
        for name, path in _adapter_paths(ctx).items()
    ]
    return ModelListOut(data=[base, *adapters])


def prepare_completion(body: CompletionRequest, *, ctx: ServeContext) -> Job:
    adapter = _check_common(body, ctx=ctx)
    if body.echo:
        raise InvalidRequest("echo is not supported", param="echo")
    if body.best_of not in (None, 1):
        raise InvalidRequest("best_of must be 1", param="best_of")
    prompt_ids = _completion_prompt(body, ctx.tokenizer)
    max_tokens = DEFAULT_COMPLETION_TOKENS if body.max_tokens is None else body.max_tokens
    params = _sampling_params(body, max_tokens=max_tokens, logprobs=body.logprobs, names={})
    if body.suffix is not None:  # the middle ends where the model family ends a fill
        stops = fim_template(ctx.tokenizer).stop_ids(ctx.tokenizer)
        params = dataclasses.replace(params, stop_token_ids=params.stop_token_ids + stops)
    _check_length(len(prompt_ids), params.max_tokens, ctx=ctx, param="max_tokens")
    return _job("cmpl", body, prompt_ids, params, adapter=adapter, ctx=ctx)


def prepare_chat(body: ChatCompletionRequest, *, ctx: ServeContext) -> Job:
    adapter = _check_common(body, ctx=ctx)
    if body.tools:
        raise InvalidRequest("tools are not supported", param="tools")
    if body.top_logprobs is not None and not body.logprobs:
        raise InvalidRequest("top_logprobs needs logprobs to be true", param="top_logprobs")
    # developer is OpenAI's newer name for system.
    messages = [
        {"role": "system" if m.role == "developer" else m.role, "content": _text(m.content)}
        for m in body.messages
    ]
    try:
        prompt_ids = ctx.tokenizer.encode_chat(messages, add_generation_prompt=True)
    except ValueError as error:
        raise InvalidRequest(str(error), param="messages") from None
    name = "max_completion_tokens" if body.max_completion_tokens is not None else "max_tokens"
    requested = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    room = min(ctx.context_length, ctx.cache_tokens) - len(prompt_ids)
    max_tokens = requested if requested is not None else max(room, 1)
    logprobs = (body.top_logprobs or 0) if body.logprobs else None
    names = {"max_tokens": name, "logprobs": "top_logprobs"}
    params = _sampling_params(body, max_tokens=max_tokens, logprobs=logprobs, names=names)
    params = dataclasses.replace(params, stop_token_ids=params.stop_token_ids + ctx.tokenizer.chat_stop_ids)
    _check_length(len(prompt_ids), params.max_tokens, ctx=ctx, param=name)
    return _job("chatcmpl", body, prompt_ids, params, adapter=adapter, ctx=ctx)


def _check_common(body: SamplingFields, *, ctx: ServeContext) -> str | None:
    """Checks what both endpoints share; returns the adapter that `model` selects (None: the base)."""
    adapter = adapter_of(body.model, ctx=ctx)
    if body.n != 1:
        raise InvalidRequest("n must be 1", param="n")
    for name in ("presence_penalty", "frequency_penalty"):
        if getattr(body, name):
            raise InvalidRequest(f"{name} is not supported; use repetition_penalty", param=name)
    if body.logit_bias:
        raise InvalidRequest("logit_bias is not supported", param="logit_bias")
    return adapter


def adapter_of(model: str | None, *, ctx: ServeContext) -> str | None:
    """The adapter a request's `model` selects: None for the base (or no model), NAME for BASE:NAME;
    ModelNotFound for any other model or an adapter that is not loaded."""
    if model is None or model == ctx.model_name:
        return None
    base, colon, name = model.rpartition(":")  # adapter names hold no ':'; the base's name may
    if not colon or base != ctx.model_name:
        raise ModelNotFound(
            f"the model {model!r} does not exist; this server serves {ctx.model_name!r} and its "
            f"adapters as '{ctx.model_name}:NAME'",
            param="model",
        )
    if name not in ctx.engine.adapters.paths:
        raise ModelNotFound(
            f"the adapter {name!r} (model {model!r}) is not loaded; loaded: {_loaded(ctx)}", param="model"
        )
    return name


def _completion_prompt(body: CompletionRequest, tokenizer: Tokenizer) -> list[int]:
    if body.suffix is not None:
        if not isinstance(body.prompt, str):
            raise InvalidRequest("suffix needs a text prompt, not token ids", param="suffix")
        try:
            text = tokenizer.fim_prompt(body.prompt, body.suffix)
        except ValueError as error:
            raise InvalidRequest(f"suffix: {error}", param="suffix") from None
    elif isinstance(body.prompt, str):
        text = body.prompt
    else:
        return list(body.prompt)  # token ids go as they are; the engine checks their range
    return tokenizer.encode(text, add_bos=tokenizer.bos_id is not None)


def _text(content: str | list[TextPart] | None) -> str:
    if content is None:
        return ""
    return content if isinstance(content, str) else "".join(part.text for part in content)


def _sampling_params(
    body: SamplingFields, *, max_tokens: int, logprobs: int | None, names: dict[str, str]
) -> SamplingParams:
    """SamplingParams from the body; its validation error names the field, as the client spelt it."""
    stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
    try:
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=1.0 if body.temperature is None else body.temperature,
            top_p=1.0 if body.top_p is None else body.top_p,
            top_k=0 if body.top_k in (None, -1) else body.top_k,  # vLLM spells "off" as -1
            repetition_penalty=1.0 if body.repetition_penalty is None else body.repetition_penalty,
            stop=stop,
            ignore_eos=body.ignore_eos,
            seed=body.seed,
            logprobs=logprobs,
        )
    except ValueError as error:
        field, _, rule = str(error).partition(" ")
        field = names.get(field, field)
        raise InvalidRequest(f"{field} {rule}", param=field) from None


def _check_length(prompt_tokens: int, max_tokens: int, *, ctx: ServeContext, param: str) -> None:
    # A prompt that alone fills the context is the engine's to refuse (with its own message).
    context = ctx.context_length
    if prompt_tokens < context and prompt_tokens + max_tokens > context:
        raise InvalidRequest(
            f"{param} ({max_tokens}) + the prompt's {prompt_tokens} tokens exceed the model's context "
            f"of {context} tokens; ask for at most {context - prompt_tokens}",
            param=param,
        )


def _job(
    prefix: str,
    body: SamplingFields,
    prompt_ids: list[int],
    params: SamplingParams,
    *,
    adapter: str | None,
    ctx: ServeContext,
) -> Job:
    return Job(
        request_id=f"{prefix}-{uuid.uuid4().hex}",
        created=int(time.time()),
        arrival=time.perf_counter(),
        model=ctx.model_name if adapter is None else _adapter_model(adapter, ctx=ctx),
        adapter=adapter,
        prompt_ids=prompt_ids,
        params=params,
        include_usage=bool(body.stream and body.stream_options and body.stream_options.include_usage),
    )


# ----------------------------------------------------------------------------- running


async def start(job: Job, *, ctx: ServeContext) -> Outputs:
    """Hands the job to the engine. The engine's refusals (prompt too long for the context or the
    cache, token ids out of range, no free adapter slot) are raised here, before a response starts."""
    waiting = ctx.engine.num_waiting
    if waiting >= ctx.settings.max_queue:
        raise QueueFull(f"{waiting} requests are waiting (max_queue {ctx.settings.max_queue}); retry later")
    try:
        ctx.engine.check(job.prompt_ids, job.params)
    except ValueError as error:
        param = "max_tokens" if "max_tokens" in str(error) else "prompt"
        raise InvalidRequest(str(error), param=param) from None
    if job.adapter is not None:
        adapter_of(job.model, ctx=ctx)  # still loaded (an unload may not slip between check and hold)
        _check_adapter_slot(job.adapter, ctx=ctx)
    stream = ctx.engine.stream(job.prompt_ids, job.params, request_id=job.request_id, adapter=job.adapter)
    outputs = ctx.metrics.track(stream, arrival=job.arrival)
    if job.adapter is None:
        return outputs
    ctx.metrics.count_adapter_request(job.adapter)
    return ctx.holds.hold(job.adapter, outputs)


def _check_adapter_slot(adapter: str, *, ctx: ServeContext) -> None:
    """The engine keeps at most `max_loras` adapters in memory and refuses a request (in the middle
    of the stream) when all of them serve others; refuse it here instead, while a 429 can be sent."""
    held = ctx.holds.names()
    slots = ctx.engine.config.max_loras
    if adapter not in held and len(held) >= slots:
        raise QueueFull(
            f"requests hold all {slots} adapter slots ({', '.join(sorted(held))}); retry later",
            param="model",
        )


async def _last(outputs: Outputs) -> RequestOutput:
    final = None
    async with aclosing(outputs):
        async for output in outputs:
            final = output
    assert final is not None and final.finished, "engine.stream ends with a finished output"
    return final


def _usage(output: RequestOutput) -> UsageOut:
    prompt, completion = len(output.prompt_token_ids), len(output.token_ids)
    return UsageOut(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


# ----------------------------------------------------------------------------- /v1/adapters


def list_adapters(*, ctx: ServeContext) -> AdapterListOut:
    return AdapterListOut(data=[_adapter_out(n, p, ctx=ctx) for n, p in _adapter_paths(ctx).items()])


async def load_adapter(*, name: str, path: str, ctx: ServeContext) -> AdapterOut:
    """Reads a PEFT LoRA directory (off the event loop) and serves it as `BASE:name`."""
    async with ctx.adapter_lock:
        if name in ctx.engine.adapters.paths:
            loaded_from = ctx.engine.adapters.paths[name]
            raise Conflict(
                f"adapter {name!r} is loaded already (from {loaded_from}); unload it first",
                code="adapter_exists",
            )
        try:
            await asyncio.to_thread(register_adapter, ctx.engine, name, path)
        except AdapterError as error:
            raise InvalidRequest(str(error)) from None
    log.info("loaded adapter %r from %s", name, path)
    return _adapter_out(name, Path(path), ctx=ctx)


async def unload_adapter(name: str, *, ctx: ServeContext) -> AdapterOut:
    """Forgets an adapter; Conflict while requests use it (they are not cut short)."""
    async with ctx.adapter_lock:
        path = ctx.engine.adapters.paths.get(name)
        if path is None:
            raise ModelNotFound(f"unknown adapter {name!r}; loaded: {_loaded(ctx)}")
        users = ctx.holds.count(name)
        if users:
            raise Conflict(
                f"adapter {name!r} is serving {users} request(s); unload it when they finish",
                code="adapter_in_use",
            )
        try:
            # On the event loop, so that no request can take the adapter between check and unload;
            # it waits for the engine's current step at most.
            ctx.engine.unload_adapter(name)
        except ValueError as error:  # a request from outside this server (the engine's own check)
            raise Conflict(str(error), code="adapter_in_use") from None
    log.info("unloaded adapter %r", name)
    return AdapterOut(name=name, model=_adapter_model(name, ctx=ctx), path=str(path), resident=False)


def _adapter_paths(ctx: ServeContext) -> dict[str, Path]:
    return dict(ctx.engine.adapters.paths)  # a copy: a load on another thread may add to it


def _adapter_model(name: str, *, ctx: ServeContext) -> str:
    return f"{ctx.model_name}:{name}"


def _adapter_out(name: str, path: Path, *, ctx: ServeContext) -> AdapterOut:
    resident = name in ctx.engine.adapters.resident
    return AdapterOut(name=name, model=_adapter_model(name, ctx=ctx), path=str(path), resident=resident)


def _loaded(ctx: ServeContext) -> str:
    return ", ".join(repr(name) for name in _adapter_paths(ctx)) or "none"


# ----------------------------------------------------------------------------- /v1/completions


async def completion_out(job: Job, outputs: Outputs, *, ctx: ServeContext) -> CompletionOut:
    final = await _last(outputs)
    logprobs = None
    if job.params.logprobs is not None:
        logprobs = _completion_logprobs(final, range(len(final.token_ids)), ctx.tokenizer.decode, offset=0)
    choice = CompletionChoiceOut(text=final.text, finish_reason=final.finish_reason, logprobs=logprobs)
    return CompletionOut(
        id=job.request_id, created=job.created, model=job.model, choices=[choice], usage=_usage(final)
    )


async def completion_chunks(
    job: Job, outputs: Outputs, *, ctx: ServeContext
) -> AsyncGenerator[CompletionOut, None]:
    """One chunk per output that adds text (or a token, when logprobs are asked), the last with
    its finish_reason; then, with include_usage, a chunk with no choices and the usage."""
    wants_logprobs = job.params.logprobs is not None
    text_length, final = 0, None
    async with aclosing(outputs):
        async for output in outputs:
            final = output
            if not (output.delta_text or output.finished or (wants_logprobs and output.delta_token_ids)):
                continue  # the detokenizer holds text back (a partial character or stop string)
            logprobs = None
            if wants_logprobs:
                logprobs = _completion_logprobs(
                    output, _delta(output), ctx.tokenizer.decode, offset=text_length
                )
            choice = CompletionChoiceOut(
                text=output.delta_text, finish_reason=output.finish_reason, logprobs=logprobs
            )
            yield CompletionOut(id=job.request_id, created=job.created, model=job.model, choices=[choice])
            text_length += len(output.delta_text)
    if job.include_usage and final is not None:
        yield CompletionOut(
            id=job.request_id, created=job.created, model=job.model, choices=[], usage=_usage(final)
        )


def _delta(output: RequestOutput) -> range:
    """Positions in output.token_ids of the tokens this output added."""
    return range(len(output.token_ids) - len(output.delta_token_ids), len(output.token_ids))


def _completion_logprobs(
    output: RequestOutput, positions: range, decode: Callable[[list[int]], str], *, offset: int
) -> CompletionLogprobsOut:
    assert output.logprobs is not None and output.top_logprobs is not None
    tokens = [decode([output.token_ids[i]]) for i in positions]
    offsets = []
    for token in tokens:
        offsets.append(offset)
        offset += len(token)
    return CompletionLogprobsOut(
        tokens=tokens,
        token_logprobs=[output.logprobs[i] for i in positions],
        top_logprobs=[{decode([t]): lp for t, lp in output.top_logprobs[i]} for i in positions],
        text_offset=offsets,
    )


# ----------------------------------------------------------------------------- /v1/chat/completions


async def chat_out(job: Job, outputs: Outputs, *, ctx: ServeContext) -> ChatCompletionOut:
    final = await _last(outputs)
    logprobs = None
    if job.params.logprobs is not None:
        logprobs = _chat_logprobs(final, range(len(final.token_ids)), ctx.tokenizer.decode)
    choice = ChatChoiceOut(
        message=ChatMessageOut(content=final.text), finish_reason=final.finish_reason, logprobs=logprobs
    )
    return ChatCompletionOut(
        id=job.request_id, created=job.created, model=job.model, choices=[choice], usage=_usage(final)
    )


async def chat_chunks(
    job: Job, outputs: Outputs, *, ctx: ServeContext
) -> AsyncGenerator[ChatCompletionChunkOut, None]:
    """OpenAI's sequence: a chunk with the role, chunks of content, an empty delta with the
    finish_reason; then, with include_usage, a chunk with no choices and the usage."""

    def chunk(
        delta: DeltaOut, *, finish_reason: str | None = None, logprobs: ChatLogprobsOut | None = None
    ) -> ChatCompletionChunkOut:
        choice = ChatChunkChoiceOut(delta=delta, finish_reason=finish_reason, logprobs=logprobs)
        return ChatCompletionChunkOut(
            id=job.request_id, created=job.created, model=job.model, choices=[choice]
        )

    wants_logprobs = job.params.logprobs is not None
    yield chunk(DeltaOut(role="assistant", content=""))
    final = None
    async with aclosing(outputs):
        async for output in outputs:
            final = output
            if output.delta_text or (wants_logprobs and output.delta_token_ids):
                logprobs = (
                    _chat_logprobs(output, _delta(output), ctx.tokenizer.decode) if wants_logprobs else None
                )
                yield chunk(DeltaOut(content=output.delta_text), logprobs=logprobs)
            if output.finished:
                yield chunk(DeltaOut(), finish_reason=output.finish_reason)
    if job.include_usage and final is not None:
        yield ChatCompletionChunkOut(
            id=job.request_id, created=job.created, model=job.model, choices=[], usage=_usage(final)
        )


def _chat_logprobs(
    output: RequestOutput, positions: range, decode: Callable[[list[int]], str]
) -> ChatLogprobsOut:
    assert output.logprobs is not None and output.top_logprobs is not None

    def top(token_id: int, logprob: float) -> TopLogprobOut:
        token = decode([token_id])
        return TopLogprobOut(token=token, logprob=logprob, bytes=list(token.encode()))

    content = []
    for i in positions:
        chosen = top(output.token_ids[i], output.logprobs[i])
        alternatives = [top(t, lp) for t, lp in output.top_logprobs[i]]
        content.append(TokenLogprobOut(**chosen.model_dump(), top_logprobs=alternatives))
    return ChatLogprobsOut(content=content)
