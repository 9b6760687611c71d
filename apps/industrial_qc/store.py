"""Inspections, their defects, operator feedback and run-time settings in SQL, and what the
dashboard reads back from them.

    store = InspectionStore("sqlite:///runs/qc.db")               # migrates the tables first
    ids = store.add_inspections([row], defects=[[{"class": "scratches", "box": [...], "score": 0.9}]])
    store.inspections(line_id="L1", failed=True, limit=50)        # newest first, with defects
    store.add_feedback(ids[0], verdict="false_alarm", note=None, operator="ana", at=now)
    store.failure_counts(since=a_day_ago, bucket_s=3600)          # per hour, line and station, in SQL
    store.put_settings({"threshold": 0.7})

Inspections come back as plain dicts (the table's columns, `defects` and the newest `feedback`),
never as rows bound to a session. No HTTP here, and no model.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from core_model.storage import make_engine, session_factory, time_bucket

from .database import MIGRATIONS
from .models import Defect, Feedback, Inspection, Setting

COLUMNS = [column.key for column in Inspection.__table__.columns]


class UnknownInspection(LookupError):
    """An inspection id the store does not hold."""


class InspectionStore:
    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        MIGRATIONS.upgrade(self.engine)
        self.Session = session_factory(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    # --------------------------------------------------------------------------- writing
    def add_inspections(
        self, rows: Sequence[dict[str, Any]], *, defects: Sequence[Sequence[dict[str, Any]]]
    ) -> list[int]:
        """Stores the inspections and their defects ({"class", "box", "score"}) in one database
        transaction (all or none); returns their ids in order."""
        with self.Session.begin() as session:
            inspections = [Inspection(**row) for row in rows]
            session.add_all(inspections)
            session.flush()  # gives the ids
            session.add_all(
                Defect(inspection_id=inspection.id, class_name=d["class"], score=d["score"],
                       **dict(zip(("x0", "y0", "x1", "y1"), d["box"], strict=True)))
                for inspection, found in zip(inspections, defects, strict=True) for d in found
            )  # fmt: skip
            return [inspection.id for inspection in inspections]

    def add_feedback(
        self, inspection_id: int, *, verdict: str, note: str | None, operator: str | None, at: datetime
    ) -> dict[str, Any]:
        with self.Session.begin() as session:
            if session.get(Inspection, inspection_id) is None:
                raise UnknownInspection(f"no inspection {inspection_id}")
            feedback = Feedback(
                inspection_id=inspection_id, verdict=verdict, note=note, operator=operator, created_at=at
            )
            session.add(feedback)
        return _feedback(feedback)

    # --------------------------------------------------------------------------- reading
    def inspection(self, inspection_id: int) -> dict[str, Any]:
        with self.Session() as session:
            row = session.get(Inspection, inspection_id)
            if row is None:
                raise UnknownInspection(f"no inspection {inspection_id}")
            return self._described(session, [row])[0]

    def inspections(
        self,
        *,
        line_id: str | None = None,
        station_id: str | None = None,
        failed: bool | None = None,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        """The newest `limit` inspections that match, newest first."""
        query = select(Inspection)
        if line_id is not None:
            query = query.where(Inspection.line_id == line_id)
        if station_id is not None:
            query = query.where(Inspection.station_id == station_id)
        if failed is not None:
            query = query.where(Inspection.passed.is_(not failed))
        query = query.order_by(Inspection.created_at.desc(), Inspection.id.desc()).limit(limit)
        with self.Session() as session:
            return self._described(session, list(session.scalars(query)))

    @staticmethod
    def _described(session: Session, rows: list[Inspection]) -> list[dict[str, Any]]:
        """`rows` as dicts with their defects (best first) and newest feedback (or None)."""
        ids = [row.id for row in rows]
        defects: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
        feedback: dict[int, dict[str, Any]] = {}
        if ids:
            found = session.scalars(
                select(Defect).where(Defect.inspection_id.in_(ids)).order_by(Defect.score.desc(), Defect.id)
            )
            for d in found:
                defects[d.inspection_id].append(
                    {"class": d.class_name, "box": [d.x0, d.y0, d.x1, d.y1], "score": d.score}
                )
            verdicts = session.scalars(
                select(Feedback)
                .where(Feedback.inspection_id.in_(ids))
                .order_by(Feedback.created_at, Feedback.id)
            )
            feedback = {f.inspection_id: _feedback(f) for f in verdicts}  # the newest wins
        return [
            {**{name: getattr(row, name) for name in COLUMNS}, "defects": defects[row.id],
             "feedback": feedback.get(row.id)}
            for row in rows
        ]  # fmt: skip

    def failure_counts(self, *, since: datetime, bucket_s: int | None = None) -> list[dict[str, Any]]:
        """Inspected and failed parts from `since` per line and station, and per `bucket_s`-second
        time bucket (aligned to the epoch; `start` None without one), counted in SQL: oldest
        bucket first, then by line and station."""
        failed = func.sum(case((Inspection.passed.is_(False), 1), else_=0))
        keys: list[Any] = [Inspection.line_id, Inspection.station_id]
        if bucket_s is not None:
            keys.insert(0, time_bucket(Inspection.created_at, bucket_s))
        query = (
            select(*keys, func.count(Inspection.id), failed)
            .where(Inspection.created_at >= since)
            .group_by(*keys)
            .order_by(*keys)
        )
        with self.Session() as session:
            rows: list[tuple[Any, ...]] = [tuple(row) for row in session.execute(query)]
        if bucket_s is None:
            rows = [(None, *row) for row in rows]
        return [
            {"start": None if start is None else datetime.fromtimestamp(start, UTC), "line_id": line_id,
             "station_id": station_id, "inspected": int(inspected), "failed": int(failed)}
            for start, line_id, station_id, inspected, failed in rows
        ]  # fmt: skip

    def defect_counts(self, *, since: datetime) -> list[tuple[str, int]]:
        """(class, defects) over the failed inspections from `since`, most first (ties by name)."""
        count = func.count(Defect.id)
        query = (
            select(Defect.class_name, count)
            .join(Inspection, Inspection.id == Defect.inspection_id)
            .where(Inspection.created_at >= since, Inspection.passed.is_(False))
            .group_by(Defect.class_name)
            .order_by(count.desc(), Defect.class_name)
        )
        with self.Session() as session:
            return [(name, int(n)) for name, n in session.execute(query)]

    # --------------------------------------------------------------------------- settings
    def settings(self) -> dict[str, Any]:
        """The settings operators stored, by key (none stored: empty)."""
        with self.Session() as session:
            return {s.key: s.value for s in session.scalars(select(Setting))}

    def put_settings(self, values: dict[str, Any]) -> None:
        with self.Session.begin() as session:
            for key, value in values.items():
                stored = session.get(Setting, key)
                if stored is None:
                    session.add(Setting(key=key, value=value))
                else:
                    stored.value = value


def _feedback(f: Feedback) -> dict[str, Any]:
    return {"inspection_id": f.inspection_id, "verdict": f.verdict, "note": f.note, "operator": f.operator,
            "created_at": f.created_at}  # fmt: skip
