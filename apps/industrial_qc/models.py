"""The industrial-QC tables: every inspection the API made, the defects it found, the operators'
feedback on it, and the settings operators changed at run time.

Tables start with `qc_` (the verticals share one database). The dashboard reads inspections by
time (rates, Pareto, alerts) and by line and station over time, so both are indexed. Feedback is
rows of its own, never a column of the inspection: each verdict keeps its time, and the newest one
counts. The image itself is a file named by its content hash (`images.py`), not a blob here.

This module is the schema and nothing else: queries live in `store.py`, the engine and
migrations in `database.py` and `migrations/`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, CheckConstraint, Float, ForeignKey, Index, Integer, MetaData, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from core_model.storage import NAMING_CONVENTION, UTCDateTime, one_of, utcnow

VERDICTS = ("confirmed", "false_alarm")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Inspection(Base):
    __tablename__ = "qc_inspections"
    __table_args__ = (
        Index("ix_qc_inspections_time", "created_at"),
        Index("ix_qc_inspections_line_station_time", "line_id", "station_id", "created_at"),
        CheckConstraint("pred_score >= 0 AND pred_score <= 1", name="pred_score"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    line_id: Mapped[str] = mapped_column(String(64))
    station_id: Mapped[str] = mapped_column(String(64))
    filename: Mapped[str | None] = mapped_column(String(255))  # as uploaded
    image_sha256: Mapped[str] = mapped_column(String(64))
    content_type: Mapped[str] = mapped_column(String(64))  # image/png, image/jpeg, ...
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    defect_class: Mapped[str] = mapped_column(String(64))  # the class head's most likely class
    class_scores: Mapped[dict[str, Any]] = mapped_column(JSON)  # {class: probability}
    pred_score: Mapped[float] = mapped_column(Float)  # max over cells of P(defect)
    passed: Mapped[bool] = mapped_column(Boolean)
    threshold: Mapped[float] = mapped_column(Float)
    anomaly_map: Mapped[dict[str, Any]] = mapped_column(JSON)  # {"rows", "cols", "values"}
    model_version: Mapped[str] = mapped_column(String(64))
    latency_ms: Mapped[float] = mapped_column(Float)


class Defect(Base):
    __tablename__ = "qc_defects"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    inspection_id: Mapped[int] = mapped_column(ForeignKey("qc_inspections.id"), index=True)
    class_name: Mapped[str] = mapped_column(String(64))
    x0: Mapped[float] = mapped_column(Float)  # pixels of the uploaded image; x1, y1 exclusive
    y0: Mapped[float] = mapped_column(Float)
    x1: Mapped[float] = mapped_column(Float)
    y1: Mapped[float] = mapped_column(Float)
    score: Mapped[float] = mapped_column(Float)


class Feedback(Base):
    __tablename__ = "qc_feedback"
    __table_args__ = (CheckConstraint(one_of("verdict", VERDICTS), name="verdict"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    inspection_id: Mapped[int] = mapped_column(ForeignKey("qc_inspections.id"), index=True)
    verdict: Mapped[str] = mapped_column(String(16))
    note: Mapped[str | None] = mapped_column(String(2000))
    operator: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Setting(Base):
    """One run-time setting (threshold, line_limits, default_line_limit) as JSON."""

    __tablename__ = "qc_settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
