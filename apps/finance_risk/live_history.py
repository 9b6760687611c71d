"""The recent past the scorer reads, in memory: each card's and each terminal's last days, and the
labels known of them with their arrival times. Loaded from the store when the scorer starts,
then kept current as transactions are scored and labels arrive.

    live = LiveHistory.load(store, length=16)       # the store's last 37 days and each card's last 15
    seen = live.describe(transaction)               # its FEATURES, its card series, its history
    live.add(transaction, seen.event_F)             # once it is scored, so the next ones see it
    live.prune([transaction])                       # once it is stored (until then `forget` undoes add)
    live.add_label("t1", fraud=1, arrived_at=now)

`describe` computes, for one transaction, what `features.handbook_features` and
`sequences.card_series` compute over the whole data (the reference path; a test checks they agree
on the real data): the customer's windows up to and including it, its terminal's delayed risk
from the labels that had arrived by its timestamp, and its card's last `length` events with the
features each was scored with. Plain Python over a few hundred rows: no pandas, no SQL, a
fraction of a millisecond. Not thread-safe: the scorer (`scorer.py`) calls it from one thread.
"""

from __future__ import annotations

import math
from bisect import bisect_right, insort
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from .features import DELAY_DAYS, FEATURES, WINDOWS_DAYS, with_features
from .scoring import CUSTOMER_DAYS, TERMINAL_DAYS
from .sequences import EVENT_FEATURES, event_features

DAY_S = 86_400.0


@dataclass(slots=True)
class Event:
    """A scored transaction as the scorer remembers it; `event_F` is its EVENT_FEATURES."""

    transaction_id: str
    time_s: float  # seconds since the epoch, UTC
    amount: float
    event_F: tuple[float, ...]


@dataclass
class Timeline:
    """One card's or one terminal's events in time order (equal times in arrival order)."""

    times: list[float] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    def insert(self, event: Event) -> None:
        if not self.times or event.time_s >= self.times[-1]:  # the usual case: the newest yet
            self.times.append(event.time_s)
            self.events.append(event)
            return
        at = bisect_right(self.times, event.time_s)
        self.times.insert(at, event.time_s)
        self.events.insert(at, event)

    def upto(self, time_s: float) -> int:
        """How many events happened at or before `time_s`."""
        return bisect_right(self.times, time_s)

    def drop_before(self, time_s: float, *, keep_last: int = 0) -> list[Event]:
        """Forgets the events before `time_s` except the last `keep_last`; returns them."""
        cut = min(bisect_right(self.times, time_s), max(0, len(self.times) - keep_last))
        dropped = self.events[:cut]
        del self.times[:cut], self.events[:cut]
        return dropped


@dataclass(frozen=True)
class Seen:
    """What the model reads for one transaction (T = the model's history length)."""

    features_A: list[float]  # FEATURES
    event_F: tuple[float, ...]  # its own EVENT_FEATURES, the last event of its series
    events_TF: np.ndarray  # float32, left-padded with zeros
    gaps_T: np.ndarray  # float32 seconds since the previous event of the series
    mask_T: np.ndarray  # bool, False on padding
    history: list[Event]  # the earlier events in the series, oldest first
    earlier: int  # the card's earlier transactions known (0: a cold start)


def epoch_seconds(timestamp: datetime) -> float:
    return timestamp.astimezone(UTC).timestamp()


def own_event(*, timestamp: datetime, amount: float, terminal_risk: list[float]) -> tuple[float, ...]:
    """EVENT_FEATURES of a transaction, as `sequences.event_features` computes them."""
    at = timestamp.astimezone(UTC)
    angle = 2 * math.pi * (at.hour + at.minute / 60.0) / 24.0
    weekend, night = float(at.weekday() >= 5), float(at.hour <= 6)
    return (math.log1p(amount), math.sin(angle), math.cos(angle), weekend, night, *terminal_risk)


class LiveHistory:
    def __init__(self, *, length: int) -> None:
        self.length = length  # T: the card's last events the model reads, the transaction included
        self.cards: dict[str, Timeline] = {}
        self.terminals: dict[str, Timeline] = {}
        self.labels: dict[str, list[tuple[float, int]]] = {}  # id -> (arrived_s, fraud), by arrival
        self.flagged: set[str] = set()  # the ids of `labels` with a fraud label among theirs
        self.newest_s = -math.inf

    @classmethod
    def load(cls, store: Any, *, length: int) -> LiveHistory:
        """The store's recent past (`TransactionStore.recent`) in memory. Rows stored without
        features (imported, never scored) get them computed from the rows loaded with them."""
        live = cls(length=length)
        frame, labels = store.recent(length=length)
        if frame.empty:
            return live
        missing = frame[FEATURES].isna().any(axis=1).to_numpy()
        if missing.any():
            computed = with_features(frame)
            frame.loc[missing, FEATURES] = computed.loc[missing, FEATURES].to_numpy()
        columns = [
            frame[name].tolist() for name in ("transaction_id", "customer_id", "terminal_id", "amount")
        ]
        times = (frame["timestamp"].to_numpy().astype("datetime64[us]").astype(np.int64) / 1e6).tolist()
        events = [tuple(event_F) for event_F in event_features(frame).tolist()]
        rows = zip(*columns, times, events, strict=True)
        for transaction_id, customer_id, terminal_id, amount, time_s, event_F in rows:
            event = Event(transaction_id, time_s, amount, event_F)
            live._insert(event, customer_id=customer_id, terminal_id=terminal_id)
        live.newest_s = max(times)
        for transaction_id, fraud, arrived_at in labels:
            live.add_label(transaction_id, fraud=fraud, arrived_at=arrived_at)
        return live

    def describe(self, transaction: dict[str, Any]) -> Seen:
        """`transaction`: transaction_id, customer_id, terminal_id, amount, timestamp (aware)."""
        t = epoch_seconds(transaction["timestamp"])
        amount = float(transaction["amount"])
        card = self.cards.get(transaction["customer_id"], Timeline())
        earlier = card.upto(t)
        features = {"amount": amount}
        at = transaction["timestamp"].astimezone(UTC)
        features["weekend"], features["night"] = float(at.weekday() >= 5), float(at.hour <= 6)
        widest = bisect_right(card.times, t - max(WINDOWS_DAYS) * DAY_S, hi=earlier)
        amounts = [e.amount for e in card.events[widest:earlier]]
        for w in WINDOWS_DAYS:  # the windows all end with this transaction: each is a tail of the widest
            start = bisect_right(card.times, t - w * DAY_S, lo=widest, hi=earlier)
            window = amounts[start - widest :]
            features[f"customer_tx_{w}d"] = float(len(window) + 1)
            features[f"customer_mean_amount_{w}d"] = (sum(window) + amount) / (len(window) + 1)
        terminal = self.terminals.get(transaction["terminal_id"], Timeline())
        end = terminal.upto(t - DELAY_DAYS * DAY_S)
        widest = bisect_right(terminal.times, t - (DELAY_DAYS + max(WINDOWS_DAYS)) * DAY_S, hi=end)
        known = self._frauds_known(terminal.events[widest:end], at_s=t)
        for w in WINDOWS_DAYS:
            start = bisect_right(terminal.times, t - (DELAY_DAYS + w) * DAY_S, lo=widest, hi=end)
            features[f"terminal_tx_{w}d"] = float(end - start)
            frauds = sum(known[start - widest :])
            features[f"terminal_risk_{w}d"] = frauds / (end - start) if end > start else 0.0
        risk = [features[f"terminal_risk_{w}d"] for w in WINDOWS_DAYS]
        event_F = own_event(timestamp=transaction["timestamp"], amount=amount, terminal_risk=risk)
        history = card.events[max(0, earlier - (self.length - 1)) : earlier]
        return Seen(
            [features[name] for name in FEATURES], event_F, *self._series(history, event_F, t),
            history=history, earlier=earlier,
        )  # fmt: skip

    def _series(self, history: list[Event], event_F: tuple[float, ...], t: float) -> tuple[np.ndarray, ...]:
        T, real = self.length, len(history) + 1
        events_TF = np.zeros((T, len(EVENT_FEATURES)), dtype=np.float32)
        events_TF[T - real :] = [e.event_F for e in history] + [event_F]
        seconds = [math.floor(e.time_s) for e in history] + [math.floor(t)]
        gaps_T = np.zeros(T, dtype=np.float32)
        gaps_T[T - real + 1 :] = np.diff(seconds)
        mask_T = np.arange(T) >= T - real
        return events_TF, gaps_T, mask_T

    def _frauds_known(self, events: list[Event], *, at_s: float) -> list[int]:
        """Each event's newest label that had arrived by `at_s`, 0 without one. The terminals'
        windows read about 30 events a transaction, nearly all never labelled fraud: those are 0
        whatever their labels say, known by one set lookup."""
        flagged, labels = self.flagged, self.labels
        known = [0] * len(events)
        for i, event in enumerate(events):
            if event.transaction_id in flagged:
                for arrived_s, label in reversed(labels[event.transaction_id]):  # by arrival
                    if arrived_s <= at_s:
                        known[i] = label
                        break
        return known

    def add(self, transaction: dict[str, Any], event_F: tuple[float, ...]) -> None:
        """Remembers a scored transaction; nothing else changes, so `forget` undoes it whole."""
        t = epoch_seconds(transaction["timestamp"])
        event = Event(transaction["transaction_id"], t, float(transaction["amount"]), event_F)
        self._insert(event, customer_id=transaction["customer_id"], terminal_id=transaction["terminal_id"])

    def prune(self, transactions: list[dict[str, Any]]) -> None:
        """Once `transactions` (added) are stored: forgets what their cards and terminals no
        longer need. Not before: a batch the store refuses (a repeated id) must leave the recent
        past as it found it, whatever its timestamps."""
        for transaction in transactions:
            self.newest_s = max(self.newest_s, epoch_seconds(transaction["timestamp"]))
            self.cards[transaction["customer_id"]].drop_before(
                self.newest_s - CUSTOMER_DAYS * DAY_S, keep_last=self.length - 1
            )
            for old in self.terminals[transaction["terminal_id"]].drop_before(
                self.newest_s - TERMINAL_DAYS * DAY_S
            ):
                self.labels.pop(old.transaction_id, None)
                self.flagged.discard(old.transaction_id)

    def _insert(self, event: Event, *, customer_id: str, terminal_id: str) -> None:
        self.cards.setdefault(customer_id, Timeline()).insert(event)
        self.terminals.setdefault(terminal_id, Timeline()).insert(event)

    def forget(self, transactions: list[dict[str, Any]]) -> None:
        """Undoes `add` (the batch they came in could not be stored)."""
        for transaction in transactions:
            for timeline in (
                self.cards[transaction["customer_id"]],
                self.terminals[transaction["terminal_id"]],
            ):
                at = next(
                    i
                    for i, e in enumerate(timeline.events)
                    if e.transaction_id == transaction["transaction_id"]
                )
                del timeline.times[at], timeline.events[at]

    def add_label(self, transaction_id: str, *, fraud: int, arrived_at: datetime) -> None:
        insort(self.labels.setdefault(transaction_id, []), (epoch_seconds(arrived_at), int(fraud)))
        if fraud:
            self.flagged.add(transaction_id)
