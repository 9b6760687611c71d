"""The customer-service tables: customers, conversations, messages, the model's predictions for each
customer message, the suggestions shown to the agent, and what the agent did with them.

Every table starts with `cs_` because the verticals share one database. Timestamps are timezone-aware
UTC datetimes on every backend (`UTCDateTime`); JSON columns use `sqlalchemy.JSON`, which is JSON on
PostgreSQL and TEXT on SQLite.

This module is the schema and nothing else: no queries (`store.py`), no engine or migrations
(`database.py`, `migrations/`). A change here needs a new migration in `migrations/versions/`; the
test `tests/apps/customer_service/test_migrations.py` fails until the two agree.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from core_model.storage import NAMING_CONVENTION, UTCDateTime, one_of, utcnow

CONVERSATION_STATUSES = ("open", "handed_off", "closed")
ROLES = ("customer", "agent")
SUGGESTION_KINDS = ("passage", "draft")
SUGGESTION_STATUSES = ("shown", "accepted", "edited", "rejected")
ACTIONS = ("accepted", "edited", "rejected")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Customer(Base):
    __tablename__ = "cs_customers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    external_ref: Mapped[str | None] = mapped_column(String(128), unique=True)  # the CRM's id
    name: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Conversation(Base):
    __tablename__ = "cs_conversations"
    __table_args__ = (
        CheckConstraint(one_of("status", CONVERSATION_STATUSES), name="status"),
        CheckConstraint("csat BETWEEN 1 AND 5", name="csat"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("cs_customers.id"), index=True)
    channel: Mapped[str] = mapped_column(String(32), default="chat")
    status: Mapped[str] = mapped_column(String(16), default="open", index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    handoff_summary: Mapped[str | None] = mapped_column(Text)
    csat: Mapped[int | None] = mapped_column(Integer)  # customer satisfaction, 1 to 5

    customer: Mapped[Customer] = relationship()
    messages: Mapped[list[Message]] = relationship(
        back_populates="conversation", order_by="(Message.created_at, Message.id)"
    )
    suggestions: Mapped[list[Suggestion]] = relationship(order_by="(Suggestion.created_at, Suggestion.id)")


class Message(Base):
    __tablename__ = "cs_messages"
    __table_args__ = (CheckConstraint(one_of("role", ROLES), name="role"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("cs_conversations.id"), index=True)
    role: Mapped[str] = mapped_column(String(16))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    latency_ms: Mapped[float | None] = mapped_column(Float)  # parse + retrieval of this message

    conversation: Mapped[Conversation] = relationship(back_populates="messages")
    prediction: Mapped[Prediction | None] = relationship(back_populates="message")


class Prediction(Base):
    """What the model read in one customer message. The JSON lists hold what the service writes:
    the intent ranking best first (`[{"name", "confidence"}, ...]`), the extracted entities
    (`[{"entity", "value", "start", "end", ...}, ...]`) and the retrieved passages
    (`[{"source_id", "score"}, ...]`)."""

    __tablename__ = "cs_predictions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("cs_messages.id"), unique=True)
    intent: Mapped[str] = mapped_column(String(128))
    confidence: Mapped[float] = mapped_column(Float)
    out_of_scope: Mapped[bool] = mapped_column(default=False)
    intent_ranking: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    entities: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    carried_intent: Mapped[bool] = mapped_column(default=False)  # intent carried over from earlier turns
    parse_ms: Mapped[float | None] = mapped_column(Float)
    retrieval_ms: Mapped[float | None] = mapped_column(Float)
    passages: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    model_version: Mapped[str | None] = mapped_column(String(128))

    message: Mapped[Message] = relationship(back_populates="prediction")


class Suggestion(Base):
    """A retrieved passage or a drafted reply shown to the agent. `sources` lists the knowledge-base
    source ids it came from; the timings are those of a streamed draft."""

    __tablename__ = "cs_suggestions"
    __table_args__ = (
        CheckConstraint(one_of("kind", SUGGESTION_KINDS), name="kind"),
        CheckConstraint(one_of("status", SUGGESTION_STATUSES), name="status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("cs_conversations.id"), index=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("cs_messages.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    text: Mapped[str] = mapped_column(Text)
    sources: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    first_token_ms: Mapped[float | None] = mapped_column(Float)
    total_ms: Mapped[float | None] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(16), default="shown")

    actions: Mapped[list[AgentAction]] = relationship(
        back_populates="suggestion", order_by="(AgentAction.created_at, AgentAction.id)"
    )


class AgentAction(Base):
    __tablename__ = "cs_agent_actions"
    __table_args__ = (CheckConstraint(one_of("action", ACTIONS), name="action"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    suggestion_id: Mapped[int] = mapped_column(ForeignKey("cs_suggestions.id"), index=True)
    action: Mapped[str] = mapped_column(String(16))
    final_text: Mapped[str | None] = mapped_column(Text)  # what the agent sent, when it differs
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)

    suggestion: Mapped[Suggestion] = relationship(back_populates="actions")
