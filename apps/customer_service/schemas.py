"""What crosses the customer-service API: request bodies (`*In`) and responses (`*Out`).

The parse result is shaped like Rasa's `/model/parse` (`intent {name, confidence}`,
`intent_ranking`, `entities [{entity, value, start, end, confidence, extractor}]`), so clients
written for a Rasa NLU server read it as they are; `out_of_scope` says the message goes to a
person. Responses are built from these models, never from table rows.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

MAX_TEXT_CHARS = 4000  # one chat message; longer bodies get a 422 that says so

Role = Literal["customer", "agent"]
Action = Literal["accepted", "edited", "rejected"]


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("text is empty; send the words of the message")
    return text


# ----------------------------------------------------------------------------- requests


class ParseIn(BaseModel):
    text: str = Field(max_length=MAX_TEXT_CHARS)

    _check_text = field_validator("text")(_not_blank)


class ConversationIn(BaseModel):
    customer_ref: str | None = Field(default=None, max_length=200)
    customer_name: str | None = Field(default=None, max_length=200)
    channel: str = Field(default="chat", max_length=40)


class MessageIn(BaseModel):
    role: Role
    text: str = Field(max_length=MAX_TEXT_CHARS)

    _check_text = field_validator("text")(_not_blank)


class FeedbackIn(BaseModel):
    action: Action
    final_text: str | None = Field(default=None, max_length=MAX_TEXT_CHARS)


class CsatIn(BaseModel):
    score: int = Field(ge=1, le=5)


# ----------------------------------------------------------------------------- responses


class IntentOut(BaseModel):
    name: str
    confidence: float


class EntityOut(BaseModel):
    entity: str
    value: Any
    start: int
    end: int
    confidence: float | None = None
    extractor: str
    valid: bool = True
    reason: str | None = None


class ParseOut(BaseModel):
    text: str
    intent: IntentOut
    intent_ranking: list[IntentOut]
    entities: list[EntityOut]
    out_of_scope: bool
    latency_ms: float


class PassageOut(BaseModel):
    source_id: str
    title: str
    text: str
    score: float


class SuggestionOut(BaseModel):
    id: int
    kind: Literal["passage", "draft"]
    text: str
    sources: list[str]
    status: str
    first_token_ms: float | None = None
    total_ms: float | None = None


class StateOut(BaseModel):
    """The dialogue state after a message: the intent in force (carried over from an earlier turn
    when this one named none) and every key field collected so far."""

    active_intent: str | None
    carried_intent: bool
    slots: dict[str, Any]
    needs_human: bool


class MessageOut(BaseModel):
    id: int
    role: Role
    text: str
    created_at: datetime
    latency_ms: float | None = None
    parse: ParseOut | None = None


class PostedMessageOut(BaseModel):
    """`POST /cs/conversations/{id}/messages`: the stored message, and for a customer's message
    what the suite made of it (its parse, the passages that answer it, suggested replies)."""

    message: MessageOut
    parse: ParseOut | None
    passages: list[PassageOut]
    suggestions: list[SuggestionOut]
    state: StateOut
    latency_ms: float


class ConversationCreatedOut(BaseModel):
    id: int


class ConversationSummaryOut(BaseModel):
    id: int
    status: str
    customer_ref: str | None
    created_at: datetime
    messages: int
    last_message: str | None


class ConversationOut(BaseModel):
    id: int
    status: str
    customer_ref: str | None
    customer_name: str | None
    created_at: datetime
    messages: list[MessageOut]
    suggestions: list[SuggestionOut]
    state: StateOut
    handoff_summary: str | None
    csat: int | None


class HandoffOut(BaseModel):
    conversation_id: int
    summary: str


class SearchOut(BaseModel):
    query: str
    passages: list[PassageOut]
    latency_ms: float


class CountOut(BaseModel):
    name: str
    count: int


class LatencyPointOut(BaseModel):
    bucket_start: datetime
    count: int
    p50_ms: float
    p99_ms: float


class AnalyticsOut(BaseModel):
    intent_mix: list[CountOut]
    # counts: total, shown (no action yet), accepted, edited, rejected, acted; rate = (accepted + edited)
    # / acted; rate_of_total = (accepted + edited) / total
    suggestions: dict[str, float]
    message_latency: list[LatencyPointOut]
    draft_first_token: list[LatencyPointOut]
