"""The customer-service HTTP API, mounted under `/cs` in the suite's FastAPI app.

    POST /cs/parse                              {"text"} -> Rasa-shaped parse
    POST /cs/conversations                      -> {"id"}
    GET  /cs/conversations                      newest first
    POST /cs/conversations/{id}/messages        {"role", "text"} -> parse, passages, suggestions
    GET  /cs/conversations/{id}                 messages with their parses, suggestions, state
    GET  /cs/conversations/{id}/draft           server-sent events: start, delta..., done
    POST /cs/conversations/{id}/handoff         the summary for a person taking over
    POST /cs/conversations/{id}/csat            {"score": 1-5}
    POST /cs/suggestions/{id}/feedback          {"action": "accepted"|"edited"|"rejected", "final_text"}
    GET  /cs/kb/search?q=...&k=4                passages with their source ids
    GET  /cs/analytics                          intent mix, acceptance rate, latency P50/P99 per hour

Routes are thin: they call `service.py` and turn its `NotFound` / `Invalid` into 404 / 400 with
a message; FastAPI's 422s name the field at fault. Model calls run in FastAPI's thread pool
(plain `def` routes), so the event loop keeps streaming drafts meanwhile.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import StreamingResponse

from .schemas import (
    AnalyticsOut,
    ConversationCreatedOut,
    ConversationIn,
    ConversationOut,
    ConversationSummaryOut,
    CsatIn,
    FeedbackIn,
    HandoffOut,
    MessageIn,
    ParseIn,
    ParseOut,
    PostedMessageOut,
    SearchOut,
    SuggestionOut,
)
from .service import CustomerService, Invalid, NotFound, ServiceError

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
MAX_K = 20


def get_service(request: Request) -> CustomerService:
    service: CustomerService = request.app.state.customer_service
    return service


ServiceDep = Annotated[CustomerService, Depends(get_service)]
router = APIRouter(prefix="/cs", tags=["customer service"])


def _http(error: ServiceError) -> HTTPException:
    return HTTPException(status_code=404 if isinstance(error, NotFound) else 400, detail=str(error))


@router.post("/parse")
def parse(body: ParseIn, service: ServiceDep) -> ParseOut:
    return service.parse(body.text)


@router.post("/conversations", status_code=201)
def create_conversation(service: ServiceDep, body: ConversationIn | None = None) -> ConversationCreatedOut:
    return service.create_conversation(body or ConversationIn())


@router.get("/conversations")
def list_conversations(
    service: ServiceDep, limit: Annotated[int, Query(ge=1, le=500)] = 50
) -> list[ConversationSummaryOut]:
    return service.list_conversations(limit=limit)


@router.get("/conversations/{conversation_id}")
def get_conversation(conversation_id: int, service: ServiceDep) -> ConversationOut:
    try:
        return service.get_conversation(conversation_id)
    except ServiceError as error:
        raise _http(error) from None


@router.post("/conversations/{conversation_id}/messages", status_code=201)
def post_message(conversation_id: int, body: MessageIn, service: ServiceDep) -> PostedMessageOut:
    try:
        return service.post_message(conversation_id, body)
    except ServiceError as error:
        raise _http(error) from None


@router.get("/conversations/{conversation_id}/draft")
async def draft(conversation_id: int, service: ServiceDep) -> StreamingResponse:
    events = service.draft(conversation_id)
    try:  # the first event comes after every check, so a bad request is a 4xx, not a broken stream
        first = await anext(events)
    except ServiceError as error:
        raise _http(error) from None
    return StreamingResponse(_sse(first, events), media_type="text/event-stream", headers=SSE_HEADERS)


async def _sse(first: tuple[str, dict[str, Any]], events: AsyncIterator[tuple[str, dict[str, Any]]]):
    yield _event(*first)
    try:
        async for event, data in events:
            yield _event(event, data)
    except ServiceError as error:
        yield _event("error", {"message": str(error)})


def _event(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


@router.post("/conversations/{conversation_id}/handoff")
def handoff(conversation_id: int, service: ServiceDep) -> HandoffOut:
    try:
        return service.handoff(conversation_id)
    except ServiceError as error:
        raise _http(error) from None


@router.post("/conversations/{conversation_id}/csat")
def csat(conversation_id: int, body: CsatIn, service: ServiceDep) -> ConversationOut:
    try:
        return service.record_csat(conversation_id, body.score)
    except ServiceError as error:
        raise _http(error) from None


@router.post("/suggestions/{suggestion_id}/feedback")
def feedback(suggestion_id: int, body: FeedbackIn, service: ServiceDep) -> SuggestionOut:
    try:
        return service.feedback(suggestion_id, body)
    except ServiceError as error:
        raise _http(error) from None


@router.get("/kb/search")
def search(
    service: ServiceDep,
    q: Annotated[str, Query(max_length=1000)],
    k: Annotated[int, Query(ge=1, le=MAX_K)] = 4,
) -> SearchOut:
    try:
        return service.search(q, k=k)
    except Invalid as error:
        raise _http(error) from None


@router.get("/analytics")
def analytics(service: ServiceDep) -> AnalyticsOut:
    return service.analytics()


def mount(app: FastAPI, service: CustomerService) -> None:
    app.state.customer_service = service
    app.include_router(router)
