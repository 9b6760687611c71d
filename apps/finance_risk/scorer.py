"""The fraud scorer: the model and the recent past in memory, in a process of its own.

    scorer = Scorer(settings)                   # loads the model and `LiveHistory` from the store
    scorer([Score(rows), LabelsArrived(labels), Status()])   # one pass: a result for each command

`FinanceService` runs it behind a `BatchingWorker`, so that scoring never waits
for the interpreter lock of the HTTP server and the two use both cores. Each call is one pass:
labels first (a transaction scored in the pass sees them), then every transaction of every `Score`
in time order, each described after the ones before it, scored by one model pass
(`FraudModel.variants`: each transaction and its 15 probes; in onnxruntime by default, see
`export.py`) and stored in one SQL transaction before anyone is answered. Reasons are the
feature contributions (the score minus the score with that feature at its training mean, largest
first) and the card's earlier events the attention weighed most. A model replaced on disk
(`verticals finance update`) serves from the next pass. One thread calls it: nothing here is
locked.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sqlalchemy.exc import IntegrityError

from .export import ScoringPass, load_scoring_pass
from .features import FEATURES
from .live_history import Event, LiveHistory, Seen
from .model import WEIGHTS, FraudModel, load_fraud_model
from .settings import FinanceSettings
from .store import TransactionStore

log = logging.getLogger(__name__)
TOP_REASONS = 3
CHECKPOINT_EVERY_S = 1.0  # SQLite's log copied back off the scoring path (make_engine)


class NoModel(RuntimeError):
    """No fraud model where the settings point; the message says how to make one."""


class AlreadyScored(ValueError):
    """A transaction id the store already holds."""


@dataclass(frozen=True)
class Score:
    """Transactions to score (transaction_id, customer_id, terminal_id, amount, timestamp in UTC),
    all or none. Its result: an answer for each, in time order, or an AlreadyScored or NoModel."""

    rows: list[dict[str, Any]]


@dataclass(frozen=True)
class LabelsArrived:
    """Labels the store has just taken (transaction_id, fraud, arrived_at). Its result: None."""

    labels: list[dict[str, Any]]


@dataclass(frozen=True)
class Status:
    """Its result: the model served and the cards in memory, or why no model is served."""


Command = Score | LabelsArrived | Status


class Scorer:
    """`BatchingWorker(Scorer, settings)` builds it in the worker (a module-level class it can import)."""

    def __init__(self, settings: FinanceSettings) -> None:
        self.settings = settings
        self.store = TransactionStore(settings.database, checkpoint_every_s=CHECKPOINT_EVERY_S)
        self.model: FraudModel | None = None
        self.scoring_pass: ScoringPass | None = None  # the model's pass on the settings' backend
        self.version = ""
        self.live: LiveHistory | None = None
        self._stamp: tuple[int, ...] | None = None  # the weights file the model was loaded from
        self._load_model()

    def __call__(self, commands: list[Command]) -> list[Any]:
        self._load_model()
        for command in commands:
            if isinstance(command, LabelsArrived):
                self._labels_arrived(command.labels)
        scores = [command for command in commands if isinstance(command, Score)]
        answers = iter(self._score(scores))
        return [
            next(answers) if isinstance(command, Score)
            else self._status() if isinstance(command, Status)
            else None
            for command in commands
        ]  # fmt: skip

    def _load_model(self) -> None:
        """Loads the model when its weights changed on disk since the last load (or never were)."""
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
            scoring_pass = load_scoring_pass(model, self.settings.model, backend=self.settings.backend)
        except (ValueError, OSError) as error:  # a model half written: the next pass tries again
            log.warning("fraud model at %s not loaded: %s", self.settings.model, error)
            return
        if self.live is None or self.live.length != model.config.history:
            started = time.perf_counter()
            self.live = LiveHistory.load(self.store, length=model.config.history)
            # NOTE: hundreds of thousands of long-lived events: left to the garbage collector, each
            # of its full passes walks them all and stalls scoring for hundreds of milliseconds.
            gc.freeze()
            log.info(
                "recent history of %d cards loaded in %.1f s",
                len(self.live.cards),
                time.perf_counter() - started,
            )
        self.model, self.scoring_pass, self._stamp = model, scoring_pass, stamp
        self.version = hashlib.sha256(weights.read_bytes()).hexdigest()[:12]
        log.info(
            "fraud model %s loaded from %s (%s)", self.version, self.settings.model, self.settings.backend
        )

    def no_model(self) -> str:
        return (
            f"no fraud model at {self.settings.model}: train one with "
            f"`verticals finance train --out {self.settings.model}`"
        )

    def _status(self) -> dict[str, Any]:
        if self.model is None or self.live is None:
            return {"status": "no model", "detail": self.no_model()}
        return {"status": "ok", "model": self.settings.model, "version": self.version,
                "backend": self.settings.backend, "history": self.model.config.history,
                "threshold": self.settings.threshold,
                "cards_in_memory": len(self.live.cards)}  # fmt: skip

    def _labels_arrived(self, labels: list[dict[str, Any]]) -> None:
        if self.live is not None:
            for label in labels:
                self.live.add_label(
                    label["transaction_id"], fraud=label["fraud"], arrived_at=label["arrived_at"]
                )

    def _score(self, requests: list[Score]) -> list[list[dict[str, Any]] | Exception]:
        """Every request's answers, or why it was refused; the accepted ones scored together."""
        if not requests:
            return []
        if self.model is None:
            return [NoModel(self.no_model()) for _ in requests]
        try:  # the store's unique ids refuse a transaction scored before: no read on the usual path
            return self._score_new(requests, taken=set())
        except IntegrityError:
            ids = (row["transaction_id"] for request in requests for row in request.rows)
            return self._score_new(requests, taken=self.store.existing(ids))

    def _score_new(self, requests: list[Score], *, taken: set[str]) -> list[list[dict[str, Any]] | Exception]:
        """`_score`, refusing the requests that hold an id of `taken` or of a request before them."""
        results: list[list[dict[str, Any]] | Exception] = []
        accepted: list[tuple[int, dict[str, Any]]] = []
        for i, request in enumerate(requests):
            mine = {row["transaction_id"] for row in request.rows}
            if clash := sorted(mine & taken):
                results.append(AlreadyScored(f"transaction {', '.join(clash[:10])} was already scored"))
                continue
            taken |= mine  # a later request in this pass with the same id is refused too
            results.append([])
            accepted += [(i, row) for row in request.rows]
        accepted.sort(key=lambda item: item[1]["timestamp"])
        for (i, _), answer in zip(accepted, self._score_in_order([row for _, row in accepted]), strict=True):
            results[i].append(answer)  # type: ignore[union-attr]
        return results

    def _score_in_order(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Describes each transaction after the ones before it, scores them all at once, stores
        them in one SQL transaction; the live history forgets them if they cannot be stored, and
        prunes what it no longer needs only once they are."""
        if not rows:
            return []
        model, live = self.model, self.live
        assert model is not None and live is not None
        seen: list[Seen] = []
        for row in rows:
            seen.append(live.describe(row))
            live.add(row, seen[-1].event_F)
        try:
            answers = self._explain(seen)
            self.store.add_transactions(
                {**row, "score": a["score"], "model_version": self.version,
                 "features": dict(zip(FEATURES[1:], s.features_A[1:], strict=True)),  # amount is a column
                 "reasons": {"features": a["reasons"], "events": a["events"]}}
                for row, s, a in zip(rows, seen, answers, strict=True)
            )  # fmt: skip
        except Exception:
            live.forget(rows)
            raise
        live.prune(rows)
        return [
            {"transaction_id": row["transaction_id"], **answer, "model_version": self.version}
            for row, answer in zip(rows, answers, strict=True)
        ]

    def _explain(self, seen: list[Seen]) -> list[dict[str, Any]]:
        """Scores, feature contributions and attended events: one pass of the model over each
        transaction and its 15 probes (one feature each at its training mean)."""
        model, scoring_pass = self.model, self.scoring_pass
        assert model is not None and scoring_pass is not None
        A = len(FEATURES)
        features_BA = np.array([s.features_A for s in seen], dtype=np.float32)
        probes_BPA = np.repeat(features_BA[:, None, :], A + 1, axis=1)
        probes_BPA[:, np.arange(A) + 1, np.arange(A)] = model.scaler.mean_A.numpy()
        events_BTF, gaps_BT, mask_BT = (
            torch.from_numpy(np.stack([getattr(s, name) for s in seen]))
            for name in ("events_TF", "gaps_T", "mask_T")
        )
        logits_BP, weights_BT = scoring_pass(events_BTF, gaps_BT, mask_BT, torch.from_numpy(probes_BPA))
        scores_BP, weights_BT = torch.sigmoid(logits_BP).tolist(), weights_BT.tolist()
        return [
            {"score": round(scores[0], 6), "reasons": feature_reasons(s.features_A, scores),
             "events": attended_events(s.history, weights), "history": len(s.history),
             "cold_start": s.earlier == 0}
            for s, scores, weights in zip(seen, scores_BP, weights_BT, strict=True)
        ]  # fmt: skip


def feature_reasons(features_A: list[float], scores_P: list[float]) -> list[dict[str, Any]]:
    """The features that raised the score most: scores_P[0] minus scores_P[1 + i], the score with
    feature i at its training mean; the TOP_REASONS largest, if positive."""
    rounded = [round(scores_P[0] - scores_P[i + 1], 4) for i in range(len(FEATURES))]
    largest = sorted(range(len(FEATURES)), key=lambda i: -rounded[i])[:TOP_REASONS]  # stable
    return [
        {"feature": FEATURES[i], "value": features_A[i], "contribution": rounded[i]}
        for i in largest
        if rounded[i] > 0
    ]


def attended_events(history: list[Event], weights_T: list[float]) -> list[dict[str, Any]]:
    """The card's earlier events the transaction's token attended to most (`weights_T` is the
    attention over its whole series; the earlier events are the positions just before its own)."""
    first = len(weights_T) - 1 - len(history)
    weighed = sorted(
        ((round(weights_T[first + j], 4), j) for j in range(len(history))), key=lambda pair: -pair[0]
    )[:TOP_REASONS]  # stable: equal weights keep their order
    return [
        {"transaction_id": history[j].transaction_id, "amount": history[j].amount, "weight": weight,
         "timestamp": datetime.fromtimestamp(history[j].time_s, UTC).isoformat()}
        for weight, j in weighed
    ]  # fmt: skip
