"""The code-assist tables: each completion served, and what the editor reported about it.

Tables start with `ca_` because the verticals share one database; timestamps are UTC on every
backend (`core_model.storage.UTCDateTime`). This module is the schema and nothing else: no
queries (`store.py`), no engine or migrations (`database.py`, `migrations/`). A change here needs
a new migration; `tests/apps/code_assist/test_store.py` fails until the two agree.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, Float, ForeignKey, Integer, MetaData, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from core_model.storage import NAMING_CONVENTION, UTCDateTime, one_of, utcnow

EVENT_TYPES = ("view", "select", "dismiss")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Completion(Base):
    """One request answered: where the cursor was, what was offered, how long it took."""

    __tablename__ = "ca_completions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # "cmpl-<uuid>", as sent to the editor
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    language: Mapped[str] = mapped_column(String(64), index=True)  # as the editor named it
    filepath: Mapped[str | None] = mapped_column(String(1024))
    user: Mapped[str | None] = mapped_column(String(256))
    model: Mapped[str] = mapped_column(String(256))  # base, or "base:adapter"
    snippets: Mapped[int] = mapped_column(Integer, default=0)  # repository snippets in the prompt
    text: Mapped[str] = mapped_column(Text)  # choice 0 after post-processing ("" when dropped)
    raw_text: Mapped[str] = mapped_column(Text)  # what the model wrote
    latency_ms: Mapped[float] = mapped_column(Float)


class Event(Base):
    """An editor's report on a completion: shown (view), accepted (select) or dismissed."""

    __tablename__ = "ca_events"
    __table_args__ = (CheckConstraint(one_of("type", EVENT_TYPES), name="type"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    completion_id: Mapped[str] = mapped_column(
        ForeignKey("ca_completions.id", ondelete="CASCADE"), index=True
    )
    type: Mapped[str] = mapped_column(String(16))
    choice_index: Mapped[int] = mapped_column(Integer, default=0)
    view_id: Mapped[str | None] = mapped_column(String(128))
    elapsed_ms: Mapped[int | None] = mapped_column(Integer)  # for select: how long the completion was shown
    select_kind: Mapped[str | None] = mapped_column(String(16))  # "line" when one line was accepted
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
