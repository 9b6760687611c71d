"""Each transaction with its card's history: the last `length` transactions of the same customer
(the transaction itself last), as the event series `SeriesEmbedder` reads.

    series = card_series(frame, length=16)       # frame: transactions with FEATURES, time order
    series.events_NTF, series.gaps_NT, series.mask_NT, series.history_ids_NT

Event features (EVENT_FEATURES): log amount, hour of day (sin, cos), weekend, night, and the
terminal's delayed risk over 1/7/30 days; gaps are seconds since the previous event of the card.
Rows are left-padded (mask 0) when the card has fewer earlier transactions in `frame`.

This module knows nothing of models or training; it is numpy over a DataFrame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

EVENT_FEATURES = (
    "log_amount", "hour_sin", "hour_cos", "weekend", "night",
    "terminal_risk_1d", "terminal_risk_7d", "terminal_risk_30d",
)  # fmt: skip


@dataclass(frozen=True)
class CardSeries:
    """N transactions, each with its card's last T events (oldest first). F = len(EVENT_FEATURES)."""

    events_NTF: np.ndarray  # float32
    gaps_NT: np.ndarray  # float32 seconds, 0 at the first event and on padding
    mask_NT: np.ndarray  # bool, False on padding
    history_ids_NT: np.ndarray  # transaction_id of each event, -1 on padding

    def __len__(self) -> int:
        return len(self.events_NTF)

    def take(self, rows: np.ndarray) -> CardSeries:
        return CardSeries(
            self.events_NTF[rows], self.gaps_NT[rows], self.mask_NT[rows], self.history_ids_NT[rows]
        )


def event_features(frame: pd.DataFrame) -> np.ndarray:
    """[N, F] float32 in EVENT_FEATURES order (frame has timestamp, amount, weekend, night and the
    terminal risk FEATURES)."""
    hours = frame["timestamp"].dt.hour.to_numpy() + frame["timestamp"].dt.minute.to_numpy() / 60.0
    angle = 2 * np.pi * hours / 24.0
    columns = [
        np.log1p(frame["amount"].to_numpy()), np.sin(angle), np.cos(angle),
        frame["weekend"].to_numpy(), frame["night"].to_numpy(),
        frame["terminal_risk_1d"].to_numpy(), frame["terminal_risk_7d"].to_numpy(),
        frame["terminal_risk_30d"].to_numpy(),
    ]  # fmt: skip
    return np.stack(columns, axis=1).astype(np.float32)


def card_series(frame: pd.DataFrame, *, length: int) -> CardSeries:
    """The series of every row of `frame` (positional order), from the rows of `frame` only."""
    if length < 1:
        raise ValueError(f"a card series needs length >= 1, got {length}")
    order = np.argsort(frame["timestamp"].to_numpy(), kind="stable")
    if not (order == np.arange(len(frame))).all():
        raise ValueError("card_series needs the frame in time order (read_transactions sorts it)")
    positions = pd.Series(np.arange(len(frame)), index=frame.index)
    by_card = positions.groupby(frame["customer_id"].to_numpy())
    # column t holds the card's (length - 1 - t)-th previous row: the last column is the row itself
    previous = np.stack(
        [by_card.shift(length - 1 - t).to_numpy(dtype=float, na_value=np.nan) for t in range(length)], axis=1
    )
    mask = ~np.isnan(previous)
    rows = np.where(mask, previous, 0).astype(np.int64)
    events = event_features(frame)[rows]
    events[~mask] = 0.0
    seconds = (frame["timestamp"].to_numpy().astype("datetime64[s]").astype(np.int64)).astype(np.float64)
    times = seconds[rows]
    gaps = np.zeros_like(times)
    gaps[:, 1:] = np.where(mask[:, :-1] & mask[:, 1:], times[:, 1:] - times[:, :-1], 0.0)
    ids = np.where(mask, frame["transaction_id"].to_numpy()[rows], -1)
    return CardSeries(events.astype(np.float32), gaps.astype(np.float32), mask, ids)
