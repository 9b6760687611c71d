"""The OpenAI-compatible HTTP API: `/v1/models`, `/v1/completions`, `/v1/chat/completions`,
`/health` and Prometheus `/metrics`, streaming by server-sent events; LoRA adapters loaded and
unloaded at run time under `/v1/adapters` (and vLLM's `/v1/load_lora_adapter`,
`/v1/unload_lora_adapter`), selected per request by `"model": "BASE:ADAPTER"`.

    app = create_app(engine, tokenizer, ServeSettings())          # a server of its own, or
    mount(app, build_context(engine, tokenizer, settings))         # beside other routers
    openai.OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="...").completions.create(...)

Routes are thin: they call `service.py` and choose between a JSON body and an event stream. This
module owns what is HTTP: status codes for `ServeError`s, OpenAI's error body
(`{"error": {"message", "type", "param", "code"}}`) for every error including FastAPI's 422s,
the Bearer check, SSE framing and noticing that a client went away. Starting a server is the
composition root's job (`apps/suite.py`, `verticals serve`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Coroutine
from contextlib import aclosing
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import HTTPBearer
from pydantic import BaseModel
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..engine import Engine
from ..tokenizer import Tokenizer
from ..worker_process import WorkerDied
from . import service
from .metrics import CONTENT_TYPE
from .schemas import (
    AdapterListOut,
    AdapterOut,
    AdapterRequest,
    ChatCompletionOut,
    ChatCompletionRequest,
    CompletionOut,
    CompletionRequest,
    ErrorDetailOut,
    ErrorOut,
    HealthOut,
    LoadLoRAAdapterRequest,
    ModelListOut,
    UnloadLoRAAdapterRequest,
)
from .service import (
    Conflict,
    InvalidRequest,
    ModelNotFound,
    QueueFull,
    ServeContext,
    ServeError,
    Unauthorized,
)
from .settings import ServeSettings

log = logging.getLogger(__name__)
T = TypeVar("T")

RETRY_AFTER_SECONDS = 1
CLIENT_CLOSED = 499  # nginx's code for "the client closed the request"; nobody reads it
_ERRORS: dict[type[ServeError], tuple[int, str]] = {
    InvalidRequest: (400, "invalid_request_error"),
    Unauthorized: (401, "authentication_error"),
    ModelNotFound: (404, "invalid_request_error"),
    Conflict: (409, "invalid_request_error"),
    QueueFull: (429, "rate_limit_error"),
}
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


# Dependencies that do no I/O are `async def`: FastAPI runs a plain `def` one in a worker thread,
# a hop per dependency per request that costs more than the check itself under load.
async def get_context(request: Request) -> ServeContext:
    context: ServeContext = request.app.state.serve
    return context


ContextDep = Annotated[ServeContext, Depends(get_context)]


class BearerKey(HTTPBearer):
    """The `--api-key` check as one dependency of the request alone (FastAPI solves each nested
    dependency and header parameter per request: this is a fifth of a score request's framework
    time less), declared to OpenAPI as a Bearer scheme, so /docs offers an Authorize button."""

    def __init__(self) -> None:
        super().__init__(
            auto_error=False, description="`Authorization: Bearer KEY` when the server has --api-key"
        )

    async def __call__(self, request: Request) -> None:  # type: ignore[override]
        service.check_api_key(request.headers.get("authorization"), ctx=request.app.state.serve)


require_api_key = BearerKey()


open_router = APIRouter()  # no key needed: load balancers probe it
router = APIRouter(dependencies=[Depends(require_api_key)])


@open_router.get("/health")
async def health() -> HealthOut:
    return HealthOut()


@router.get("/metrics")
async def metrics(ctx: ContextDep) -> Response:
    return Response(ctx.metrics.render(), media_type=CONTENT_TYPE)


@router.get("/v1/models")
async def list_models(ctx: ContextDep) -> ModelListOut:
    return service.list_models(ctx=ctx)


@router.post("/v1/completions", response_model=CompletionOut)
async def create_completion(
    body: CompletionRequest, request: Request, ctx: ContextDep
) -> Response | BaseModel:
    job = service.prepare_completion(body, ctx=ctx)
    outputs = await service.start(job, ctx=ctx)
    if body.stream:
        return event_stream(service.completion_chunks(job, outputs, ctx=ctx))
    return await unless_disconnected(request, service.completion_out(job, outputs, ctx=ctx))


@router.post("/v1/chat/completions", response_model=ChatCompletionOut)
async def create_chat_completion(
    body: ChatCompletionRequest, request: Request, ctx: ContextDep
) -> Response | BaseModel:
    job = service.prepare_chat(body, ctx=ctx)
    outputs = await service.start(job, ctx=ctx)
    if body.stream:
        return event_stream(service.chat_chunks(job, outputs, ctx=ctx))
    return await unless_disconnected(request, service.chat_out(job, outputs, ctx=ctx))


@router.get("/v1/adapters")
async def list_adapters(ctx: ContextDep) -> AdapterListOut:
    return service.list_adapters(ctx=ctx)


@router.post("/v1/adapters", status_code=201)
async def load_adapter(body: AdapterRequest, ctx: ContextDep) -> AdapterOut:
    return await service.load_adapter(name=body.name, path=body.path, ctx=ctx)


@router.delete("/v1/adapters/{name}")
async def unload_adapter(name: str, ctx: ContextDep) -> AdapterOut:
    return await service.unload_adapter(name, ctx=ctx)


@router.post("/v1/load_lora_adapter")
async def load_lora_adapter(body: LoadLoRAAdapterRequest, ctx: ContextDep) -> AdapterOut:
    """vLLM's name for POST /v1/adapters, for clients written against vLLM."""
    return await service.load_adapter(name=body.lora_name, path=body.lora_path, ctx=ctx)


@router.post("/v1/unload_lora_adapter")
async def unload_lora_adapter(body: UnloadLoRAAdapterRequest, ctx: ContextDep) -> AdapterOut:
    """vLLM's name for DELETE /v1/adapters/{name}."""
    return await service.unload_adapter(body.lora_name, ctx=ctx)


# ----------------------------------------------------------------------------- streaming


def event_stream(chunks: AsyncGenerator[BaseModel, None]) -> StreamingResponse:
    """`data: {chunk}` events, then `data: [DONE]`.

    NOTE: when the client disconnects, Starlette cancels the sending task but does not close the
    iterator, which may be parked at a `yield`; the background task closes it, which reaches
    `engine.stream` and aborts the request.
    """
    events = _sse(chunks)
    return StreamingResponse(
        events, media_type="text/event-stream", headers=SSE_HEADERS, background=BackgroundTask(events.aclose)
    )


async def _sse(chunks: AsyncGenerator[BaseModel, None]) -> AsyncGenerator[str, None]:
    async with aclosing(chunks):
        try:
            async for chunk in chunks:
                yield f"data: {chunk.model_dump_json()}\n\n"
        except Exception as error:  # the status is sent already; tell the client in the stream
            log.exception("stream failed")
            detail = ErrorDetailOut(message=str(error) or type(error).__name__, type="server_error")
            yield f"data: {ErrorOut(error=detail).model_dump_json()}\n\n"
    yield "data: [DONE]\n\n"


async def unless_disconnected(request: Request, work: Coroutine[Any, Any, T]) -> T | Response:
    """Runs `work` to its end unless the client disconnects first; then cancels it (which aborts
    the engine request) and answers nobody."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnect(request))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        raise
    finally:
        gone.cancel()
    if task.done():
        return task.result()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    log.info("client disconnected; request cancelled")
    return Response(status_code=CLIENT_CLOSED)


async def _disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


# ----------------------------------------------------------------------------- errors


def error_response(
    status: int,
    message: str,
    *,
    type: str,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = ErrorOut(error=ErrorDetailOut(message=message, type=type, param=param, code=code))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


async def _on_serve_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, ServeError)
    status, kind = next(v for cls, v in _ERRORS.items() if isinstance(error, cls))
    headers = {}
    if isinstance(error, QueueFull):
        headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    if isinstance(error, Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    return error_response(
        status, error.message, type=kind, param=error.param, code=error.code, headers=headers
    )


async def _on_invalid_body(request: Request, error: Exception) -> JSONResponse:
    """FastAPI's 422, in OpenAI's error body; the message and `param` name the field."""
    assert isinstance(error, RequestValidationError)
    problems = list(error.errors())
    if not problems:
        return error_response(422, "invalid request", type="invalid_request_error")
    if problems[0]["type"] == "json_invalid":
        reason = problems[0].get("ctx", {}).get("error", problems[0]["msg"])
        return error_response(422, f"the body is not valid JSON: {reason}", type="invalid_request_error")
    fields = [[str(part) for part in p["loc"] if part != "body"] for p in problems]
    message = "; ".join(f"{'.'.join(f) or 'body'}: {p['msg']}" for f, p in zip(fields, problems, strict=True))
    param = fields[0][0] if fields[0] else None
    return error_response(422, message, type="invalid_request_error", param=param)


async def _on_worker_died(request: Request, error: Exception) -> JSONResponse:
    """A model's worker process died during the request (`core_model.worker_process`): the next
    call starts a new one, so the client may retry."""
    message = f"{error}; the next request starts a new one, retry it"
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
    return error_response(503, message, type="server_error", headers=headers)


async def _on_http_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StarletteHTTPException)
    return error_response(
        error.status_code, str(error.detail), type="invalid_request_error", headers=dict(error.headers or {})
    )


# ----------------------------------------------------------------------------- assembly


def mount(app: FastAPI, ctx: ServeContext) -> None:
    """Adds the routes and OpenAI-style error bodies to `app` (the suite's app, or `create_app`'s)."""
    app.state.serve = ctx
    app.include_router(open_router)
    app.include_router(router)
    app.add_exception_handler(ServeError, _on_serve_error)
    app.add_exception_handler(RequestValidationError, _on_invalid_body)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(WorkerDied, _on_worker_died)


def create_app(engine: Engine, tokenizer: Tokenizer, settings: ServeSettings) -> FastAPI:
    app = FastAPI(title="verticals", summary="OpenAI-compatible API of the suite's model")
    mount(app, service.build_context(engine, tokenizer, settings))
    return app
