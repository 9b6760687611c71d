"""The finance service: scores transactions as they arrive, from their histories in SQL, and keeps
each one with the features and score it was given; stores labels as they arrive.

    service = FinanceService.start(FinanceSettings(model="runs/finance/model"))
    answer = service.score(transaction, threshold=0.5)   # a TransactionIn -> ScoreOut fields
    service.add_labels([label, ...])

Reasons are feature contributions: the score minus the score with that one feature set to its
training mean (all 15 in one batch with the transaction), the largest first. No HTTP here
(`api.py`), no SQL (`store.py`).
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from .features import FEATURES
from .model import WEIGHTS, FraudModel, load_fraud_model
from .monitoring import DAILY_DAYS, MAX_DAILY_DAYS, alert_queue, daily_stats, day_span, score_histogram
from .schemas import LabelIn, TransactionIn
from .scoring import model_inputs
from .settings import FinanceSettings
from .store import TransactionStore
from .training import Examples, predict

log = logging.getLogger(__name__)
TOP_REASONS = 3


class NoModel(RuntimeError):
    """No fraud model where the settings point; the message says how to make one."""


class AlreadyScored(ValueError):
    """A transaction id the store already holds."""


@dataclass
class FinanceService:
    settings: FinanceSettings
    store: TransactionStore
    model: FraudModel | None
    version: str

    @classmethod
    def start(cls, settings: FinanceSettings) -> FinanceService:
        store = TransactionStore(settings.database)
        model, version = None, ""
        if (Path(settings.model) / WEIGHTS).is_file():
            model, _ = load_fraud_model(settings.model)
            version = hashlib.sha256((Path(settings.model) / WEIGHTS).read_bytes()).hexdigest()[:12]
            log.info("fraud model %s loaded from %s", version, settings.model)
        return cls(settings, store, model, version)

    def require_model(self) -> FraudModel:
        if self.model is None:
            raise NoModel(self.no_model())
        return self.model

    def no_model(self) -> str:
        return (
            f"no fraud model at {self.settings.model}: train one with "
            f"`benchmarks/finance_risk.py --sections ours --keep-model {self.settings.model}`"
        )

    def score(self, transaction: TransactionIn, *, threshold: float | None = None) -> dict[str, Any]:
        started = time.perf_counter()
        model = self.require_model()
        self._refuse_scored([transaction.transaction_id])
        at = transaction.timestamp.astimezone(UTC)
        history = self.store.history(
            customer_id=transaction.customer_id, terminal_id=transaction.terminal_id,
            at=at, length=model.config.history,
        )  # fmt: skip
        new = {**transaction.model_dump(), "timestamp": at.replace(tzinfo=None), "fraud": 0}
        rows, examples = model_inputs(model, pd.concat([history, pd.DataFrame([new])], ignore_index=True))
        current = rows.iloc[-1]
        score, reasons = self._score_with_reasons(model, examples, len(rows) - 1)
        threshold = self.settings.threshold if threshold is None else threshold
        self.store.add_transactions([{
            **transaction.model_dump(), "timestamp": at, "score": score, "model_version": self.version,
            "features": {name: float(current[name]) for name in FEATURES if name != "amount"},
            "reasons": {"features": reasons},
        }])  # fmt: skip
        earlier = int((history["customer_id"] == transaction.customer_id).sum())
        return {
            "transaction_id": transaction.transaction_id, "score": score, "threshold": threshold,
            "decision": "alert" if score >= threshold else "pass", "reasons": reasons,
            "history": min(earlier, model.config.history - 1), "cold_start": earlier == 0,
            "model_version": self.version, "latency_ms": round((time.perf_counter() - started) * 1000, 2),
        }  # fmt: skip

    def _score_with_reasons(
        self, model: FraudModel, examples: Examples, row: int
    ) -> tuple[float, list[dict[str, Any]]]:
        """The row's score and its top feature contributions: one batch of the row and its 15
        copies with one feature each at its training mean."""
        count = len(FEATURES) + 1
        one = examples.batch(torch.tensor([row]))  # the row's tensors, a batch of 1
        events, gaps, mask, aggregates = (t.repeat(count, *([1] * (t.dim() - 1))) for t in one)
        mean_A = model.scaler.mean_A
        for i in range(len(FEATURES)):
            aggregates[i + 1, i] = mean_A[i]
        probe = Examples(events, gaps, mask, aggregates, torch.zeros(count))
        scores = predict(model, probe)
        values = examples.aggregates_NA[row].tolist()
        contributions = [
            {"feature": name, "value": values[i], "contribution": round(float(scores[0] - scores[i + 1]), 4)}
            for i, name in enumerate(FEATURES)
        ]
        contributions.sort(key=lambda reason: reason["contribution"], reverse=True)
        return round(float(scores[0]), 6), [c for c in contributions[:TOP_REASONS] if c["contribution"] > 0]

    def score_batch(self, transactions: list[TransactionIn], *, threshold: float | None = None) -> list[dict]:
        """In time order, each seeing the ones before it; none is scored if one was already."""
        self._refuse_scored([t.transaction_id for t in transactions])
        ordered = sorted(transactions, key=lambda t: t.timestamp)
        return [self.score(t, threshold=threshold) for t in ordered]

    def _refuse_scored(self, ids: list[str]) -> None:
        repeated = {i for i in ids if ids.count(i) > 1} | self.store.existing(ids)
        if repeated:
            raise AlreadyScored(f"transaction {', '.join(sorted(repeated)[:10])} was already scored")

    def add_labels(self, labels: list[LabelIn]) -> int:
        now = datetime.now(UTC)
        return self.store.add_labels(
            {"transaction_id": label.transaction_id, "fraud": int(label.fraud), "source": label.source,
             "arrived_at": (label.arrived_at or now).astimezone(UTC)}
            for label in labels
        )  # fmt: skip

    def health(self) -> dict[str, Any]:
        if self.model is None:
            return {"status": "no model", "detail": self.no_model()}
        return {"status": "ok", "model": self.settings.model, "version": self.version,
                "history": self.model.config.history, "threshold": self.settings.threshold}  # fmt: skip

    # ------------------------------------------------- the analysts' desk: what was scored, read back

    def days(self) -> list[dict[str, Any]]:
        """The UTC days with stored transactions, oldest first: day, transactions, scored."""
        return self.store.days().to_dict("records")

    def alerts(self, *, day: date, k: int, threshold: float | None = None) -> dict[str, Any]:
        """The day's alert queue: its top-k cards by their riskiest transaction's score, each with
        its scored transactions of the day (reasons and newest label)."""
        threshold = self.settings.threshold if threshold is None else threshold
        frame = self.store.activity(**day_span(day, day))
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
