"""The finance service: scores transactions as they arrive and keeps each one with the features,
score and reasons it was given; stores labels as they arrive; reads back what analysts review.

    service = FinanceService.start(FinanceSettings(model="runs/finance/model"))
    answer = await service.score(transaction, threshold=0.5)   # a TransactionIn -> ScoreOut fields
    answers = await service.score_batch([transaction, ...])    # all or none (none if one was scored)
    service.add_labels([label, ...])

The scoring itself runs in a process of its own (`scorer.py`: the model and the recent past in
memory, a `BatchingWorker`), so that it and the HTTP server each have a core and an interpreter
lock. Each request goes to the scorer as it arrives, and the scorer runs every request waiting as
one pass whenever it is free. Labels are stored here, then sent to the scorer, which sees them from
its next pass. A scorer that dies fails the requests it held (503) and the next request starts a
new one, which reloads the recent past from the store. No HTTP here (`api.py`), no SQL
(`store.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pandas as pd
from sqlalchemy import make_url

from core_model.batching_worker import BatchingWorker
from core_model.worker_process import WorkerDied

from .monitoring import DAILY_DAYS, MAX_DAILY_DAYS, alert_queue, daily_stats, day_span, score_histogram
from .schemas import LabelIn, TransactionIn
from .scorer import AlreadyScored, Command, LabelsArrived, Score, Scorer, Status
from .settings import FinanceSettings
from .store import TransactionStore

MAX_REQUESTS_PER_PASS = 64


class FinanceService:
    def __init__(
        self, settings: FinanceSettings, store: TransactionStore, scorer: BatchingWorker[Command, Any]
    ) -> None:
        self.settings, self.store, self._scorer = settings, store, scorer

    @classmethod
    def start(cls, settings: FinanceSettings) -> FinanceService:
        """The store (migrated) and the scorer's process, ready: the scorer's own error (a database
        it cannot read) is raised here."""
        url = make_url(settings.database)
        if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
            raise ValueError(
                f"finance database {settings.database}: in memory, the scorer's process cannot "
                "open it; use a file (sqlite:///runs/finance.db) or a server"
            )
        store = TransactionStore(settings.database)  # migrated before the scorer opens it
        scorer = BatchingWorker[Command, Any](
            Scorer, settings, name="finance-scorer", max_batch=MAX_REQUESTS_PER_PASS
        )
        scorer.wait_ready()
        return cls(settings, store, scorer)

    async def score(self, transaction: TransactionIn, *, threshold: float | None = None) -> dict[str, Any]:
        return (await self.score_batch([transaction], threshold=threshold))[0]

    async def score_batch(
        self, transactions: list[TransactionIn], *, threshold: float | None = None
    ) -> list[dict[str, Any]]:
        """Each transaction's answer, in time order, each having seen those before it; none is
        scored if one was scored before (or comes twice)."""
        started = time.perf_counter()
        repeated = sorted(i for i, n in Counter(t.transaction_id for t in transactions).items() if n > 1)
        if repeated:
            raise AlreadyScored(f"transaction {', '.join(repeated[:10])} comes twice")
        rows = [{**t.model_dump(), "timestamp": t.timestamp.astimezone(UTC)} for t in transactions]
        answers = await asyncio.wrap_future(self._scorer.submit(Score(rows)))
        if isinstance(answers, Exception):
            raise answers
        threshold = self.settings.threshold if threshold is None else threshold
        latency_ms = round((time.perf_counter() - started) * 1000, 2)
        return [
            {**answer, "threshold": threshold, "latency_ms": latency_ms,
             "decision": "alert" if answer["score"] >= threshold else "pass"}
            for answer in answers
        ]  # fmt: skip

    def add_labels(self, labels: list[LabelIn]) -> int:
        now = datetime.now(UTC)
        rows = [
            {"transaction_id": label.transaction_id, "fraud": int(label.fraud), "source": label.source,
             "arrived_at": (label.arrived_at or now).astimezone(UTC)}
            for label in labels
        ]  # fmt: skip
        stored = self.store.add_labels(rows)
        with contextlib.suppress(WorkerDied):  # its successor reads them from the store
            self._scorer(LabelsArrived(rows))
        return stored

    def health(self) -> dict[str, Any]:
        status: dict[str, Any] = self._scorer(Status())
        return status

    # ------------------------------------------------- the analysts' desk: what was scored, read back

    def days(self) -> list[dict[str, Any]]:
        """The UTC days with stored transactions, oldest first: day, transactions, scored."""
        return self.store.days().to_dict("records")

    def alerts(self, *, day: date, k: int, threshold: float | None = None) -> dict[str, Any]:
        """The day's alert queue: its top-k cards by their riskiest transaction's score, each with
        its scored transactions of the day (reasons and newest label)."""
        threshold = self.settings.threshold if threshold is None else threshold
        frame = self.store.activity(**day_span(day, day), detail=True)
        queue = alert_queue(frame, k=k)
        rows = frame.loc[[i for positions in queue["transactions"] for i in positions]]
        reasons = self.store.reasons(rows["transaction_id"])
        cards = [
            {"rank": int(card.rank), "customer_id": card.customer_id, "score": float(card.score),
             "alert": bool(card.score >= threshold),
             "transactions": [_alert_transaction(frame.loc[i], reasons) for i in card.transactions]}
            for card in queue.itertuples()
        ]  # fmt: skip
        return {"day": day, "k": k, "threshold": threshold, "scored": int(frame["score"].notna().sum()),
                "cards": cards}  # fmt: skip

    def daily(
        self,
        *,
        start: date | None = None,
        end: date | None = None,
        threshold: float | None = None,
        k: int = 100,
    ) -> dict[str, Any]:
        """Per day from `start` to `end` (default: the DAILY_DAYS days up to the newest stored):
        transactions, alert and fraud rates, and AUC/AP/CP@k on the labelled transactions."""
        threshold = self.settings.threshold if threshold is None else threshold
        if end is None:
            stored = self.store.days()
            if stored.empty:
                raise BadPeriod("no transactions stored yet: replay a day (`verticals finance replay`)")
            end = stored["day"].iloc[-1]
        start = end - timedelta(days=DAILY_DAYS - 1) if start is None else start
        if start > end:
            raise BadPeriod(f"start {start} is after end {end}")
        if (end - start).days >= MAX_DAILY_DAYS:
            raise BadPeriod(f"{(end - start).days + 1} days from {start} to {end}; at most {MAX_DAILY_DAYS}")
        frame = self.store.activity(**day_span(start, end))
        days = daily_stats(frame, threshold=threshold, k=k) if len(frame) else []
        return {"start": start, "end": end, "threshold": threshold, "k": k, "days": days}

    def distribution(self, *, day: date, bins: int) -> dict[str, Any]:
        """The histogram of the day's scores over [0, 1], with the labelled frauds and genuine."""
        frame = self.store.activity(**day_span(day, day))
        return {"day": day, **score_histogram(frame["score"], fraud=frame["fraud"], bins=bins)}


class BadPeriod(ValueError):
    """A period of days that cannot be read (start after end, too long, nothing stored)."""


def _alert_transaction(row: pd.Series, reasons: dict[str, dict[str, Any] | None]) -> dict[str, Any]:
    label = None
    if not pd.isna(row["fraud"]):
        label = {"fraud": bool(row["fraud"]), "source": row["label_source"],
                 "arrived_at": row["label_arrived_at"]}  # fmt: skip
    return {
        "transaction_id": row["transaction_id"], "timestamp": row["timestamp"],
        "terminal_id": row["terminal_id"], "amount": float(row["amount"]), "score": float(row["score"]),
        "reasons": reasons.get(row["transaction_id"]), "label": label,
    }  # fmt: skip
