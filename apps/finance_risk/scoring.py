"""Scoring a whole frame of transactions with the fraud model: the benchmark's path and the
reference the live scorer (`scorer.py` with `live_history.py`) is checked against.

    scores = score_frame(model, frame)                  # every row of `frame`, time-ordered

A transaction's features read its customer's last CUSTOMER_DAYS days and its terminal's last
TERMINAL_DAYS (the longest window before the label delay, plus the delay); its series reads the
card's last `history` transactions with the features each had when it was scored.
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
