"""The finance-risk tables: every transaction the scorer has seen, with the features and the score
it was given, and the fraud labels that arrive later (a chargeback, an analyst's verdict), each
with its own arrival time.

Tables start with `fr_` (the verticals share one database). A transaction's histories are read by
customer and time and by terminal and time, so both pairs are indexed, and analysts read a day's
transactions by time. Labels are rows of their
own, never a column of the transaction: what was known at a given time stays answerable (the
terminal risk of a transaction may only read labels that had arrived).

This module is the schema and nothing else: queries live in `store.py`, the engine and
migrations in `database.py` and `migrations/`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, CheckConstraint, Float, ForeignKey, Index, Integer, MetaData, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from core_model.storage import NAMING_CONVENTION, UTCDateTime, one_of, utcnow

LABEL_SOURCES = ("chargeback", "analyst", "import")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Transaction(Base):
    __tablename__ = "fr_transactions"
    __table_args__ = (
        Index("ix_fr_transactions_customer_time", "customer_id", "timestamp"),
        Index("ix_fr_transactions_terminal_time", "terminal_id", "timestamp"),
        Index("ix_fr_transactions_time", "timestamp"),  # a day's transactions, for the analysts
        CheckConstraint("amount >= 0", name="amount"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    transaction_id: Mapped[str] = mapped_column(String(64), unique=True)  # the issuer's id
    customer_id: Mapped[str] = mapped_column(String(64))
    terminal_id: Mapped[str] = mapped_column(String(64))
    amount: Mapped[float] = mapped_column(Float)
    timestamp: Mapped[datetime] = mapped_column(UTCDateTime())
    features: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # FEATURES as scored
    score: Mapped[float | None] = mapped_column(Float)
    reasons: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # {"features": [...], "events": [...]}
    model_version: Mapped[str | None] = mapped_column(String(64))
    scored_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Label(Base):
    __tablename__ = "fr_labels"
    __table_args__ = (
        CheckConstraint("fraud IN (0, 1)", name="fraud"),
        CheckConstraint(one_of("source", LABEL_SOURCES), name="source"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    transaction_id: Mapped[str] = mapped_column(ForeignKey("fr_transactions.transaction_id"), index=True)
    fraud: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(16))
    arrived_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
