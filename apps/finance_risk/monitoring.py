"""What the fraud desk watches, computed from the store's `activity` frame (one row per
transaction: customer_id, timestamp, score, the newest label as fraud 1/0/NaN): the day's alert
queue, the daily alert and fraud rates with the model's AUC/AP/CP@k on the labelled transactions,
and a day's score histogram.

    queue = alert_queue(day_frame, k=100)                       # the day's top-k cards, riskiest first
    rows = daily_stats(frame, threshold=0.5, k=100)             # one dict per day in `frame`
    bins = score_histogram(day_frame["score"], fraud=day_frame["fraud"], bins=20)

The queue is what card precision@k counts (`metrics.card_precision_at_k`): the k cards with the
highest score of the day, a card scoring as its riskiest transaction. This module is pandas over
frames: no SQL (`store.py`), no HTTP (`api.py`), no model.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from .metrics import card_precision_at_k

DAILY_DAYS = 30  # the daily stats' default period, ending on the newest stored day
MAX_DAILY_DAYS = 366


def alert_queue(frame: pd.DataFrame, *, k: int) -> pd.DataFrame:
    """The k cards of `frame` (one day's transactions) with the highest score, riskiest first:
    rank (1-based), customer_id, score (its riskiest transaction's) and transactions (the index
    labels in `frame` of the card's scored transactions, riskiest first)."""
    scored = frame[frame["score"].notna()]
    if scored.empty:
        return pd.DataFrame({"rank": [], "customer_id": [], "score": [], "transactions": []})
    ordered = scored.sort_values(["score", "timestamp"], ascending=[False, True], kind="stable")
    cards = ordered.groupby("customer_id", sort=False)
    top = cards["score"].max().sort_values(ascending=False, kind="stable").head(k)
    positions = {customer: list(rows) for customer, rows in cards.indices.items()}
    return pd.DataFrame({
        "rank": np.arange(1, len(top) + 1),
        "customer_id": top.index,
        "score": top.to_numpy(),
        "transactions": [[ordered.index[i] for i in positions[customer]] for customer in top.index],
    })  # fmt: skip


def daily_stats(frame: pd.DataFrame, *, threshold: float, k: int) -> list[dict[str, Any]]:
    """Per UTC day of `frame`, oldest first: transactions, scored, alerts (score >= threshold),
    alert_rate (over the scored), labelled, frauds, fraud_rate (over the labelled), and auc, ap,
    cp_at_k over the day's scored and labelled transactions (None where they lack either class).
    Card precision@k is the handbook's: a card found compromised on an earlier day of `frame` is
    not counted again."""
    frame = frame.assign(day=frame["timestamp"].dt.tz_convert("UTC").dt.date)
    known = frame[frame["score"].notna() & frame["fraud"].notna()]
    two_classes = {day for day, rows in known.groupby("day") if rows["fraud"].nunique() == 2}
    known = known[known["day"].isin(two_classes)].astype({"fraud": int})
    daily_cp = card_precision_at_k(known, known["score"].to_numpy(), k=k) if len(known) else []
    cp_at_k = dict(zip(sorted(two_classes), daily_cp, strict=True))
    out = []
    for day, rows in frame.groupby("day", sort=True):
        scored, labelled = int(rows["score"].notna().sum()), int(rows["fraud"].notna().sum())
        alerts, frauds = int((rows["score"] >= threshold).sum()), int((rows["fraud"] == 1).sum())
        metrics = {"auc": None, "ap": None, "cp_at_k": None}
        if day in two_classes:
            ranked = known[known["day"] == day]
            metrics = {
                "auc": float(roc_auc_score(ranked["fraud"], ranked["score"])),
                "ap": float(average_precision_score(ranked["fraud"], ranked["score"])),
                "cp_at_k": cp_at_k[day],
            }
        out.append({
            "day": day, "transactions": len(rows), "scored": scored, "alerts": alerts,
            "alert_rate": _share(alerts, scored), "labelled": labelled, "frauds": frauds,
            "fraud_rate": _share(frauds, labelled), **metrics,
        })  # fmt: skip
    return out


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def score_histogram(scores: pd.Series, *, fraud: pd.Series, bins: int) -> dict[str, list]:
    """`bins` equal bins over [0, 1]: their edges (bins + 1), and per bin the count of scored
    transactions, of those labelled fraud and of those labelled genuine."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    scored = scores.notna().to_numpy()
    values, labels = scores.to_numpy(float)[scored], fraud.to_numpy(float)[scored]

    def counts(mask: np.ndarray) -> list[int]:
        return np.histogram(values[mask], bins=edges)[0].astype(int).tolist()

    return {
        "edges": [round(float(e), 6) for e in edges],
        "counts": counts(np.ones_like(values, dtype=bool)),
        "fraud": counts(labels == 1),
        "genuine": counts(labels == 0),
    }


def day_span(first: date, last: date) -> dict[str, datetime]:
    """`since` and `until` of the days `first` to `last`: from `first`'s UTC midnight to the one
    after `last`."""
    since = datetime.combine(first, time(), tzinfo=UTC)
    return {"since": since, "until": datetime.combine(last, time(), tzinfo=UTC) + timedelta(days=1)}
