"""The finance service: scores transactions as they arrive and keeps each one with the features,
score and reasons it was given; stores labels as they arrive; reads back what analysts review.

    service = FinanceService.start(FinanceSettings(model="runs/finance/model"))
    answer = service.score(transaction, threshold=0.5)   # a TransactionIn -> ScoreOut fields
    answers = service.score_batch([transaction, ...])    # all or none (none if one was scored)
    service.add_labels([label, ...])

Scoring reads the recent past from memory (`LiveHistory`, loaded from the store at start), so a
transaction costs no SQL read. Concurrent requests share one pass: a `MicroBatcher` thread takes
every request waiting, describes their transactions in time order, runs the model once over them
(`FraudModel.variants`: each transaction and its 15 probes) and stores them in one SQL
transaction before anyone is answered. Reasons are the feature contributions (the score minus the
score with that feature at its training mean, largest first) and the card's earlier events the
attention weighed most. A model replaced on disk (`verticals finance update`) serves from the
next batch. No HTTP here (`api.py`), no SQL (`store.py`).
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from core_model.batching import MicroBatcher

from .features import FEATURES
from .live_history import Event, LiveHistory, Seen
from .model import WEIGHTS, FraudModel, load_fraud_model
from .monitoring import DAILY_DAYS, MAX_DAILY_DAYS, alert_queue, daily_stats, day_span, score_histogram
from .schemas import LabelIn, TransactionIn
from .settings import FinanceSettings
from .store import TransactionStore

log = logging.getLogger(__name__)
TOP_REASONS = 3
MAX_REQUESTS_PER_PASS = 64


class NoModel(RuntimeError):
    """No fraud model where the settings point; the message says how to make one."""


class AlreadyScored(ValueError):
    """A transaction id the store already holds."""


@dataclass(frozen=True)
class Request:
    transactions: list[TransactionIn]


class FinanceService:
    def __init__(self, settings: FinanceSettings, store: TransactionStore) -> None:
        self.settings, self.store = settings, store
        self.model: FraudModel | None = None
        self.version = ""
        self.live: LiveHistory | None = None
        self._stamp: tuple[int, ...] | None = None  # the weights file the model was loaded from
        self._live_lock = threading.Lock()  # the scoring thread and label posts both change it
        self._model_lock = threading.Lock()  # the scoring thread and health both (re)load the model
        self._load_model()
        self._batcher = MicroBatcher(
            self._score_requests, max_batch=MAX_REQUESTS_PER_PASS, name="finance-score"
        )

    @classmethod
    def start(cls, settings: FinanceSettings) -> FinanceService:
        return cls(settings, TransactionStore(settings.database))

    def _load_model(self) -> None:
        """Loads the model when its weights changed on disk since the last load (or never were)."""
        with self._model_lock:
            self._load_model_unlocked()

    def _load_model_unlocked(self) -> None:
        weights = Path(self.settings.model) / WEIGHTS
        try:
            stat = weights.stat()
        except FileNotFoundError:
            return  # none yet, or removed: what is loaded keeps serving
        stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return
        try:
            model, _ = load_fraud_model(self.settings.model)
        except (ValueError, OSError) as error:  # a model half written: the next batch tries again
            log.warning("fraud model at %s not loaded: %s", self.settings.model, error)
            return
        if self.live is None or self.live.length != model.config.history:
            started = time.perf_counter()
            live = LiveHistory.load(self.store, length=model.config.history)
            # NOTE: hundreds of thousands of long-lived events: left to the garbage collector, each
            # of its full passes walks them all and stalls scoring for hundreds of milliseconds.
            gc.freeze()
            log.info(
                "recent history of %d cards loaded in %.1f s", len(live.cards), time.perf_counter() - started
            )
            with self._live_lock:
                self.live = live
        self.model, self._stamp = model, stamp
        self.version = hashlib.sha256(weights.read_bytes()).hexdigest()[:12]
        log.info("fraud model %s loaded from %s", self.version, self.settings.model)

    def no_model(self) -> str:
        return (
            f"no fraud model at {self.settings.model}: train one with "
            f"`verticals finance train --out {self.settings.model}`"
        )

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
        answers = await asyncio.wrap_future(self._batcher.submit(Request(transactions)))
        if isinstance(answers, Exception):
            raise answers
        threshold = self.settings.threshold if threshold is None else threshold
        latency_ms = round((time.perf_counter() - started) * 1000, 2)
        return [
            {**answer, "threshold": threshold, "latency_ms": latency_ms,
             "decision": "alert" if answer["score"] >= threshold else "pass"}
            for answer in answers
        ]  # fmt: skip

    def _score_requests(self, requests: list[Request]) -> list[list[dict[str, Any]] | Exception]:
        """The batcher's one pass over every waiting request (its own thread)."""
        if torch.get_num_threads() != 1:
            # NOTE: for this thread only. A pass is a few small matrices: split over the cores,
            # its threads wait on each other (and on anything else running) 10 to 100 times longer.
            torch.set_num_threads(1)
        self._load_model()
        if self.model is None:
            return [NoModel(self.no_model()) for _ in requests]
        ids = [t.transaction_id for request in requests for t in request.transactions]
        taken = self.store.existing(ids)
        results: list[list[dict[str, Any]] | Exception] = []
        accepted: list[tuple[int, TransactionIn]] = []
        for i, request in enumerate(requests):
            mine = {t.transaction_id for t in request.transactions}
            if clash := sorted(mine & taken):
                results.append(AlreadyScored(f"transaction {', '.join(clash[:10])} was already scored"))
                continue
            taken |= mine  # a later request in this pass with the same id is refused too
            results.append([])
            accepted += [(i, t) for t in request.transactions]
        accepted.sort(key=lambda item: item[1].timestamp)
        for (i, _), answer in zip(accepted, self._score_in_order([t for _, t in accepted]), strict=True):
            results[i].append(answer)  # type: ignore[union-attr]
        return results

    def _score_in_order(self, transactions: list[TransactionIn]) -> list[dict[str, Any]]:
        """Describes each transaction after the ones before it, scores them all at once, stores
        them in one SQL transaction; the live history forgets them if they cannot be stored."""
        if not transactions:
            return []
        model, live = self.model, self.live
        assert model is not None and live is not None
        rows = [{**t.model_dump(), "timestamp": t.timestamp.astimezone(UTC)} for t in transactions]
        seen: list[Seen] = []
        with self._live_lock:
            for row in rows:
                seen.append(live.describe(row))
                live.add(row, seen[-1].event_F)
        try:
            answers = self._explain(model, seen)
            self.store.add_transactions(
                {**row, "score": a["score"], "model_version": self.version,
                 "features": dict(zip(FEATURES[1:], s.features_A[1:], strict=True)),  # amount is a column
                 "reasons": {"features": a["reasons"], "events": a["events"]}}
                for row, s, a in zip(rows, seen, answers, strict=True)
            )  # fmt: skip
        except Exception:
            with self._live_lock:
                live.forget(rows)
            raise
        return [
            {"transaction_id": row["transaction_id"], **answer, "model_version": self.version}
            for row, answer in zip(rows, answers, strict=True)
        ]

    def _explain(self, model: FraudModel, seen: list[Seen]) -> list[dict[str, Any]]:
        """Scores, feature contributions and attended events: one pass of the model over each
        transaction and its 15 probes (one feature each at its training mean)."""
        A = len(FEATURES)
        features_BA = torch.tensor(np.array([s.features_A for s in seen]), dtype=torch.float32)
        probes_BPA = features_BA[:, None, :].repeat(1, A + 1, 1)
        probes_BPA[:, torch.arange(A) + 1, torch.arange(A)] = model.scaler.mean_A
        events_BTF, gaps_BT, mask_BT = (
            torch.from_numpy(np.stack([getattr(s, name) for s in seen]))
            for name in ("events_TF", "gaps_T", "mask_T")
        )
        with torch.inference_mode():
            logits_BP, weights_BT = model.variants(events_BTF, gaps_BT, mask_BT, probes_BPA)
        scores_BP, weights_BT = torch.sigmoid(logits_BP).tolist(), weights_BT.tolist()
        return [
            {"score": round(scores[0], 6), "reasons": feature_reasons(s.features_A, scores),
             "events": attended_events(s.history, weights), "history": len(s.history),
             "cold_start": s.earlier == 0}
            for s, scores, weights in zip(seen, scores_BP, weights_BT, strict=True)
        ]  # fmt: skip

    def add_labels(self, labels: list[LabelIn]) -> int:
        now = datetime.now(UTC)
        rows = [
            {"transaction_id": label.transaction_id, "fraud": int(label.fraud), "source": label.source,
             "arrived_at": (label.arrived_at or now).astimezone(UTC)}
            for label in labels
        ]  # fmt: skip
        stored = self.store.add_labels(rows)
        if self.live is not None:
            with self._live_lock:
                for row in rows:
                    self.live.add_label(
                        row["transaction_id"], fraud=row["fraud"], arrived_at=row["arrived_at"]
                    )
        return stored

    def health(self) -> dict[str, Any]:
        self._load_model()
        if self.model is None or self.live is None:
            return {"status": "no model", "detail": self.no_model()}
        return {"status": "ok", "model": self.settings.model, "version": self.version,
                "history": self.model.config.history, "threshold": self.settings.threshold,
                "cards_in_memory": len(self.live.cards)}  # fmt: skip

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


def feature_reasons(features_A: list[float], scores_P: list[float]) -> list[dict[str, Any]]:
    """The features that raised the score most: scores_P[0] minus scores_P[1 + i], the score with
    feature i at its training mean; the TOP_REASONS largest, if positive."""
    contributions = [
        {"feature": name, "value": features_A[i], "contribution": round(scores_P[0] - scores_P[i + 1], 4)}
        for i, name in enumerate(FEATURES)
    ]
    contributions.sort(key=lambda reason: reason["contribution"], reverse=True)
    return [c for c in contributions[:TOP_REASONS] if c["contribution"] > 0]


def attended_events(history: list[Event], weights_T: list[float]) -> list[dict[str, Any]]:
    """The card's earlier events the transaction's token attended to most (`weights_T` is the
    attention over its whole series; the earlier events are the positions just before its own)."""
    first = len(weights_T) - 1 - len(history)
    events = [
        {"transaction_id": e.transaction_id, "timestamp": datetime.fromtimestamp(e.time_s, UTC).isoformat(),
         "amount": e.amount, "weight": round(weights_T[first + j], 4)}
        for j, e in enumerate(history)
    ]  # fmt: skip
    events.sort(key=lambda event: event["weight"], reverse=True)
    return events[:TOP_REASONS]


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
