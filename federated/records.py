"""Federated runs and their rounds in SQL (SQLAlchemy; SQLite by default, any URL works), with
their own Alembic history (version table `alembic_version_federated`, tables `fl_`).

    store = RoundStore("sqlite:///runs/federated.db")      # creates or migrates the tables
    run_id = store.start_run(adapter="medical", strategy="fedavg", settings={...}, rounds=10)
    store.add_round(run_id, RoundRecord(round=1, sites=["north", "south"], examples=3210, ...))
    store.finish_run(run_id)
    store.rounds(run_id)        # [RoundRecord, ...] in round order; store.runs() newest first

A round records what crossed the network (payload bytes of the tensors, down and up), who took
part, how many records they trained on, their losses, the pooled evaluation and the published
adapter's version. Nothing about a record's content is stored, because none reaches the server.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Integer, MetaData, String, UniqueConstraint, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from core_model.storage import (
    NAMING_CONVENTION,
    Migrations,
    UTCDateTime,
    make_engine,
    session_factory,
    utcnow,
)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Run(Base):
    __tablename__ = "fl_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    adapter: Mapped[str] = mapped_column(String(128), index=True)  # the registry name it publishes
    strategy: Mapped[str] = mapped_column(String(64))
    settings: Mapped[dict] = mapped_column(JSON)
    rounds_planned: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Round(Base):
    __tablename__ = "fl_rounds"
    __table_args__ = (UniqueConstraint("run_id", "round", name="run_round"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("fl_runs.id", ondelete="CASCADE"), index=True)
    round: Mapped[int] = mapped_column(Integer)
    sites: Mapped[list] = mapped_column(JSON)  # names of the sites whose update was aggregated
    failures: Mapped[int] = mapped_column(Integer)  # sampled sites that sent no update
    examples: Mapped[int] = mapped_column(Integer)  # records trained on, all sites
    site_losses: Mapped[dict] = mapped_column(JSON)  # site -> mean local training loss
    metrics: Mapped[dict] = mapped_column(JSON)  # "server": held-out set, "sites": pooled site evaluation
    bytes_down: Mapped[int] = mapped_column(Integer)  # tensor payload sent to the sites
    bytes_up: Mapped[int] = mapped_column(Integer)  # tensor payload received from them
    seconds: Mapped[float] = mapped_column(Float)
    adapter_version: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


MIGRATIONS = Migrations(Path(__file__).parent / "migrations", "alembic_version_federated", Base.metadata)


@dataclass
class RoundRecord:
    round: int
    sites: list[str]
    examples: int
    bytes_down: int
    bytes_up: int
    seconds: float
    failures: int = 0
    site_losses: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    adapter_version: str | None = None


@dataclass
class RunRecord:
    id: int
    adapter: str
    strategy: str
    settings: dict[str, Any]
    rounds_planned: int
    started_at: datetime
    finished_at: datetime | None


class RoundStore:
    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        MIGRATIONS.upgrade(self.engine)
        self.Session = session_factory(self.engine)

    def start_run(self, *, adapter: str, strategy: str, settings: dict[str, Any], rounds: int) -> int:
        with self.Session.begin() as session:
            run = Run(adapter=adapter, strategy=strategy, settings=settings, rounds_planned=rounds)
            session.add(run)
            session.flush()
            return run.id

    def add_round(self, run_id: int, record: RoundRecord) -> None:
        with self.Session.begin() as session:
            session.add(Round(run_id=run_id, **record.__dict__))

    def finish_run(self, run_id: int) -> None:
        with self.Session.begin() as session:
            run = session.get(Run, run_id)
            if run is None:
                raise KeyError(f"no federated run {run_id}")
            run.finished_at = utcnow()

    def runs(self) -> list[RunRecord]:
        with self.Session() as session:
            rows = session.scalars(select(Run).order_by(Run.id.desc())).all()
            return [
                RunRecord(
                    r.id, r.adapter, r.strategy, r.settings, r.rounds_planned, r.started_at, r.finished_at
                )
                for r in rows
            ]

    def rounds(self, run_id: int) -> list[RoundRecord]:
        with self.Session() as session:
            rows = session.scalars(select(Round).where(Round.run_id == run_id).order_by(Round.round)).all()
            return [
                RoundRecord(
                    round=r.round, sites=r.sites, examples=r.examples, bytes_down=r.bytes_down,
                    bytes_up=r.bytes_up, seconds=r.seconds, failures=r.failures,
                    site_losses=r.site_losses, metrics=r.metrics, adapter_version=r.adapter_version,
                )
                for r in rows
            ]  # fmt: skip

    def close(self) -> None:
        self.engine.dispose()
