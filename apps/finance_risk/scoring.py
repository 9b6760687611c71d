"""Scoring transactions with the fraud model, from any frame of transactions that holds their
histories: the whole data set (the benchmark) or only what a live scorer fetches for one
transaction (`history_for`: its card's and its terminal's recent rows).

    scores = score_frame(model, frame)                  # every row of `frame`, time-ordered
    needed = history_for(frame, row=i, history=16)      # the rows that give row i the same score

A transaction's features read its customer's last 30 days and its terminal's last 30 days before
the label delay (37 days); its series reads the card's last `history` transactions with the
features each had when it was scored (its own terminal's risk then). So the rows of
`history_for`, the earlier ones carrying their features, give the transaction the very inputs the
whole data gives it (a test checks it on the real data), hence its score up to float rounding.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .features import DELAY_DAYS, FEATURES, WINDOWS_DAYS, with_features
from .model import FraudModel
from .sequences import card_series
from .training import Examples, predict

CUSTOMER_DAYS = max(WINDOWS_DAYS)
TERMINAL_DAYS = max(WINDOWS_DAYS) + DELAY_DAYS


def score_frame(model: FraudModel, frame: pd.DataFrame) -> np.ndarray:
    """Fraud probabilities of every row of `frame` (transactions in time order). Rows that carry
    their FEATURES already (as a store keeps them from when they were scored) keep them; the
    others get them computed from `frame`. `fraud` is read only for the terminal windows."""
    _, examples = model_inputs(model, frame)
    return predict(model, examples)


def model_inputs(model: FraudModel, frame: pd.DataFrame) -> tuple[pd.DataFrame, Examples]:
    """`frame` with every row's FEATURES (kept where present, else computed), and what the model
    reads for each row."""
    computed = with_features(frame)
    if set(FEATURES) <= set(frame.columns):
        kept = frame[FEATURES].notna().all(axis=1).to_numpy()
        if kept.any():
            computed.loc[kept, FEATURES] = frame.loc[kept, FEATURES].to_numpy(dtype=float)
    computed["fraud"] = computed["fraud"].fillna(0)
    history = model.config.history
    return computed, Examples.of(computed, card_series(computed, length=history), history)


def history_for(frame: pd.DataFrame, *, row: int, history: int) -> pd.DataFrame:
    """The rows of `frame` (time-ordered) that row `row` (positional) is scored from, itself last:
    its customer's in the last CUSTOMER_DAYS days or its last `history` - 1, whichever reach
    further back, and its terminal's in the last TERMINAL_DAYS days."""
    current = frame.iloc[row]
    before = frame.iloc[:row]
    customer = before[before["customer_id"] == current["customer_id"]]
    recent = customer["timestamp"] > current["timestamp"] - pd.Timedelta(days=CUSTOMER_DAYS)
    customer = customer[recent | (np.arange(len(customer)) >= len(customer) - (history - 1))]
    terminal = before[
        (before["terminal_id"] == current["terminal_id"])
        & (before["timestamp"] > current["timestamp"] - pd.Timedelta(days=TERMINAL_DAYS))
    ]
    rows = pd.concat([customer, terminal]).drop_duplicates("transaction_id")
    return pd.concat([rows.sort_values(["timestamp", "transaction_id"], kind="stable"), frame.iloc[[row]]])
