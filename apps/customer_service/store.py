"""Reads and writes of the customer-service records, and the analytics the dashboard shows.

Plain functions, a `Session` first and keyword-only arguments after, returning ORM rows (see
`models.py`) or small dataclasses. No HTTP here, no model calls, no settings.

Transactions: every function here flushes (so new rows have their ids) and none commits. The caller
owns the transaction:

    with Session() as session, session.begin():
        conversation = store.create_conversation(session, customer_ref="crm-42")
        message = store.add_message(session, conversation_id=conversation.id, role="customer", text="hi")

A missing row raises `NotFound` (a `LookupError`); a value outside its allowed set a `ValueError`.
Both are raised before anything is added to the session. Timestamps are timezone-aware UTC.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from apps.customer_service.models import (
    ACTIONS,
    CONVERSATION_STATUSES,
    ROLES,
    SUGGESTION_KINDS,
    SUGGESTION_STATUSES,
    AgentAction,
    Conversation,
    Customer,
    Message,
    Prediction,
    Suggestion,
    utcnow,
)

PREVIEW_CHARS = 80
BUCKETS = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1), "day": timedelta(days=1)}
LATENCY_KINDS = ("message", "draft")


class NotFound(LookupError):
    """The row asked for does not exist."""


@dataclass(frozen=True)
class ConversationSummary:
    """One line of the conversation list."""

    id: int
    status: str
    channel: str
    created_at: datetime
    updated_at: datetime
    customer_ref: str | None
    customer_name: str | None
    message_count: int
    last_message: str | None  # the newest message, cut to PREVIEW_CHARS


def _check(value: str, allowed: tuple[str, ...], what: str) -> None:
    if value not in allowed:
        raise ValueError(f"{what} must be one of {allowed}, not {value!r}")


def _get(session: Session, model: type, row_id: int):
    row = session.get(model, row_id)
    if row is None:
        raise NotFound(f"{model.__tablename__} {row_id} not found")
    return row


# Conversations


def create_conversation(
    session: Session,
    *,
    customer_ref: str | None = None,
    customer_name: str | None = None,
    channel: str = "chat",
) -> Conversation:
    """A new open conversation. A known `customer_ref` reuses that customer (and fills in a missing
    name); without one, the conversation gets a new anonymous customer."""
    customer = None
    if customer_ref is not None:
        customer = session.scalars(
            select(Customer).where(Customer.external_ref == customer_ref)
        ).one_or_none()
    if customer is None:
        customer = Customer(external_ref=customer_ref, name=customer_name)
        session.add(customer)
    elif customer.name is None:
        customer.name = customer_name
    conversation = Conversation(customer=customer, channel=channel, status="open")
    session.add(conversation)
    session.flush()
    return conversation


def get_conversation(session: Session, conversation_id: int) -> Conversation | None:
    return session.get(Conversation, conversation_id)


def list_conversations(
    session: Session, *, limit: int = 50, status: str | None = None
) -> list[ConversationSummary]:
    """The newest conversations first (by creation time), with their message counts and a preview
    of their newest message."""
    message_count = (
        select(func.count(Message.id)).where(Message.conversation_id == Conversation.id).scalar_subquery()
    )
    last_message = (
        select(Message.text)
        .where(Message.conversation_id == Conversation.id)
        .order_by(Message.created_at.desc(), Message.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    query = (
        select(Conversation, Customer.external_ref, Customer.name, message_count, last_message)
        .join(Customer, Conversation.customer_id == Customer.id)
        .order_by(Conversation.created_at.desc(), Conversation.id.desc())
        .limit(limit)
    )
    if status is not None:
        _check(status, CONVERSATION_STATUSES, "status")
        query = query.where(Conversation.status == status)
    return [
        ConversationSummary(
            id=conversation.id,
            status=conversation.status,
            channel=conversation.channel,
            created_at=conversation.created_at,
            updated_at=conversation.updated_at,
            customer_ref=ref,
            customer_name=name,
            message_count=count,
            last_message=None if text is None else text[:PREVIEW_CHARS],
        )
        for conversation, ref, name, count, text in session.execute(query)
    ]


def set_handoff(session: Session, *, conversation_id: int, summary: str) -> Conversation:
    """Hand the conversation to a human, with the summary they read first."""
    conversation = _get(session, Conversation, conversation_id)
    conversation.status = "handed_off"
    conversation.handoff_summary = summary
    session.flush()
    return conversation


def close_conversation(session: Session, conversation_id: int) -> Conversation:
    conversation = _get(session, Conversation, conversation_id)
    conversation.status = "closed"
    session.flush()
    return conversation


def set_csat(session: Session, *, conversation_id: int, score: int) -> Conversation:
    """The customer's satisfaction score, 1 (worst) to 5 (best)."""
    if not 1 <= score <= 5:
        raise ValueError(f"csat must be 1 to 5, not {score}")
    conversation = _get(session, Conversation, conversation_id)
    conversation.csat = score
    session.flush()
    return conversation


# Messages and predictions


def add_message(
    session: Session, *, conversation_id: int, role: str, text: str, latency_ms: float | None = None
) -> Message:
    """A message at the end of the conversation; the conversation's `updated_at` moves to now."""
    _check(role, ROLES, "role")
    conversation = _get(session, Conversation, conversation_id)
    message = Message(conversation=conversation, role=role, text=text, latency_ms=latency_ms)
    session.add(message)
    conversation.updated_at = utcnow()
    session.flush()
    return message


def set_message_latency(session: Session, *, message_id: int, latency_ms: float) -> Message:
    """The message's processing time (parse + retrieval), known only after it was stored."""
    message = _get(session, Message, message_id)
    message.latency_ms = latency_ms
    session.flush()
    return message


def add_prediction(
    session: Session,
    *,
    message_id: int,
    intent: str,
    confidence: float,
    out_of_scope: bool = False,
    intent_ranking: list[dict[str, Any]] | None = None,
    entities: list[dict[str, Any]] | None = None,
    carried_intent: bool = False,
    parse_ms: float | None = None,
    retrieval_ms: float | None = None,
    passages: list[dict[str, Any]] | None = None,
    model_version: str | None = None,
) -> Prediction:
    """What the model read in a message (one prediction per message). JSON shapes: see `Prediction`."""
    _get(session, Message, message_id)
    prediction = Prediction(
        message_id=message_id,
        intent=intent,
        confidence=confidence,
        out_of_scope=out_of_scope,
        intent_ranking=intent_ranking or [],
        entities=entities or [],
        carried_intent=carried_intent,
        parse_ms=parse_ms,
        retrieval_ms=retrieval_ms,
        passages=passages or [],
        model_version=model_version,
    )
    session.add(prediction)
    session.flush()
    return prediction


def conversation_history(
    session: Session, conversation_id: int, *, last: int | None = None
) -> list[tuple[Message, Prediction | None]]:
    """The conversation's messages, oldest first, each with its prediction (None for an agent's
    message, or one not parsed); only the `last` ones when given."""
    _get(session, Conversation, conversation_id)
    query = (
        select(Message, Prediction)
        .outerjoin(Prediction, Prediction.message_id == Message.id)
        .where(Message.conversation_id == conversation_id)
        .order_by(Message.created_at.desc(), Message.id.desc())
    )
    if last is not None:
        query = query.limit(last)
    return [(message, prediction) for message, prediction in reversed(session.execute(query).all())]


@dataclass(frozen=True, slots=True)
class Turn:
    role: str
    text: str


@dataclass(frozen=True, slots=True)
class Parsed:
    intent: str
    out_of_scope: bool
    entities: list[dict[str, Any]]


def recent_turns(session: Session, conversation_id: int, *, last: int) -> list[tuple[Turn, Parsed | None]]:
    """The conversation's `last` messages, oldest first, as `conversation_history` gives them but
    only what the dialogue state and a retrieval query read: the role and text, and the intent,
    scope and entities of the parse. Plain rows, no ORM objects and none of the parse's other JSON:
    a message's request reads them every time (whole rows took a third of its time at 8 clients)."""
    _get(session, Conversation, conversation_id)
    query = (
        select(Message.role, Message.text, Prediction.intent, Prediction.out_of_scope, Prediction.entities)
        .outerjoin(Prediction, Prediction.message_id == Message.id)
        .where(Message.conversation_id == conversation_id)
        .order_by(Message.created_at.desc(), Message.id.desc())
        .limit(last)
    )
    return [
        (Turn(role, text), None if intent is None else Parsed(intent, out_of_scope, entities))
        for role, text, intent, out_of_scope, entities in reversed(session.execute(query).all())
    ]


# Suggestions and the agent's actions


def add_suggestion(
    session: Session,
    *,
    conversation_id: int,
    message_id: int,
    kind: str,
    text: str,
    sources: list[str],
    first_token_ms: float | None = None,
    total_ms: float | None = None,
) -> Suggestion:
    """A passage or draft shown to the agent for `message_id`, with status "shown". `sources` are
    the knowledge-base source ids it came from. A streamed draft is stored empty and filled in by
    `update_suggestion`."""
    _check(kind, SUGGESTION_KINDS, "kind")
    _get(session, Conversation, conversation_id)
    _get(session, Message, message_id)
    suggestion = Suggestion(
        conversation_id=conversation_id,
        message_id=message_id,
        kind=kind,
        text=text,
        sources=sources,
        first_token_ms=first_token_ms,
        total_ms=total_ms,
        status="shown",
    )
    session.add(suggestion)
    session.flush()
    return suggestion


def get_suggestion(session: Session, suggestion_id: int) -> Suggestion | None:
    return session.get(Suggestion, suggestion_id)


def update_suggestion(
    session: Session,
    *,
    suggestion_id: int,
    first_token_ms: float | None = None,
    total_ms: float | None = None,
    text: str | None = None,
) -> Suggestion:
    """Fill in a streamed draft as it goes: the time to its first token, then its full text and total
    time. Arguments left as None keep their stored value."""
    suggestion = _get(session, Suggestion, suggestion_id)
    if first_token_ms is not None:
        suggestion.first_token_ms = first_token_ms
    if total_ms is not None:
        suggestion.total_ms = total_ms
    if text is not None:
        suggestion.text = text
    session.flush()
    return suggestion


def record_action(
    session: Session, *, suggestion_id: int, action: str, final_text: str | None = None
) -> AgentAction:
    """What the agent did with a suggestion; the suggestion's status becomes `action` (the latest
    action wins). `final_text` is what the agent sent, for an edit."""
    _check(action, ACTIONS, "action")
    suggestion = _get(session, Suggestion, suggestion_id)
    agent_action = AgentAction(suggestion=suggestion, action=action, final_text=final_text)
    session.add(agent_action)
    suggestion.status = action
    session.flush()
    return agent_action


# Analytics


def intent_mix(session: Session, *, since: datetime | None = None) -> list[tuple[str, int]]:
    """How many customer messages were read as each intent, most frequent first (ties by name);
    `since` filters on the message's time."""
    count = func.count(Prediction.id)
    query = (
        select(Prediction.intent, count)
        .join(Message, Prediction.message_id == Message.id)
        .group_by(Prediction.intent)
        .order_by(count.desc(), Prediction.intent)
    )
    if since is not None:
        query = query.where(Message.created_at >= since)
    return [(intent, n) for intent, n in session.execute(query)]


def acceptance_rate(session: Session, *, since: datetime | None = None, kind: str | None = None) -> dict:
    """Suggestions by status, and how often the agent used them.

    Returns {"total", "shown", "accepted", "edited", "rejected", "acted", "rate", "rate_of_total"}:
    "shown" counts suggestions still without an action, "acted" = accepted + edited + rejected,
    "rate" = (accepted + edited) / acted, "rate_of_total" = (accepted + edited) / total; a rate with
    nothing to divide by is 0.0 (numbers only, for the dashboard)."""
    query = select(Suggestion.status, func.count(Suggestion.id)).group_by(Suggestion.status)
    if since is not None:
        query = query.where(Suggestion.created_at >= since)
    if kind is not None:
        query = query.where(Suggestion.kind == kind)
    counts = Counter(dict(session.execute(query).all()))
    used = counts["accepted"] + counts["edited"]
    acted = used + counts["rejected"]
    total = acted + counts["shown"]
    return {
        "total": total,
        **{status: counts[status] for status in SUGGESTION_STATUSES},
        "acted": acted,
        "rate": used / acted if acted else 0.0,
        "rate_of_total": used / total if total else 0.0,
    }


def latency_percentiles(
    session: Session, *, kind: str = "message", bucket: str = "hour", since: datetime | None = None
) -> list[dict]:
    """P50 and P99 of one latency per time bucket, oldest bucket first:
    `[{"bucket_start": datetime, "count": int, "p50_ms": float, "p99_ms": float}, ...]`.

    `kind` is "message" (a message's `latency_ms`: parse + retrieval) or "draft" (a draft's
    `first_token_ms`); `bucket` is "minute", "hour" or "day", in UTC. The numbers are selected and
    the percentiles computed here, so that every database gives the same answer."""
    _check(kind, LATENCY_KINDS, "kind")
    _check(bucket, tuple(BUCKETS), "bucket")
    groups: dict[datetime, list[float]] = {}
    for created_at, value in session.execute(_latency_query(kind, since)):
        groups.setdefault(_floor(created_at, BUCKETS[bucket]), []).append(value)
    return [
        {
            "bucket_start": start,
            "count": len(values),
            "p50_ms": percentile(values, 50),
            "p99_ms": percentile(values, 99),
        }
        for start, values in sorted(groups.items())
    ]


def _latency_query(kind: str, since: datetime | None):
    if kind == "message":
        created_at, value = Message.created_at, Message.latency_ms
        query = select(created_at, value)
    else:
        created_at, value = Suggestion.created_at, Suggestion.first_token_ms
        query = select(created_at, value).where(Suggestion.kind == "draft")
    query = query.where(value.is_not(None))
    return query if since is None else query.where(created_at >= since)


def _floor(moment: datetime, width: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return epoch + (moment - epoch) // width * width


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile with linear interpolation between the closest ranks (numpy's default)."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)
