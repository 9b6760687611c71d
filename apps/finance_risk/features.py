"""The Fraud Detection Handbook's transaction features (its chapter 3 "baseline feature
transformation"): what a transaction is, how its customer usually spends, how risky its terminal
has been. The same function serves the offline benchmark (the whole data at once) and the
scorer (a customer's and a terminal's recent history plus the transaction).

    features = handbook_features(frame, delay_days=7)       # one row per transaction, FEATURES
    frame = with_features(frame)                            # the transactions and their FEATURES
    X = frame[FEATURES].to_numpy()

- amount, weekend (Saturday or Sunday), night (00:00 to 06:59).
- customer_tx_{w}d, customer_mean_amount_{w}d: the customer's transactions in the w days up to
  and including this one, and their mean amount (w = 1, 7, 30).
- terminal_tx_{w}d, terminal_risk_{w}d: the terminal's transactions in a w-day window that ends
  `delay_days` before this one, and the share of them that were fraud. Labels arrive late (a
  chargeback takes days), so the window stops where labels are known.

This module knows nothing of models, training or SQL; `fraud` is read only for the terminal
windows, and only from transactions at least `delay_days` older than the one described.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

WINDOWS_DAYS = (1, 7, 30)
DELAY_DAYS = 7
FEATURES = (
    ["amount", "weekend", "night"]
    + [f"customer_{kind}_{w}d" for w in WINDOWS_DAYS for kind in ("tx", "mean_amount")]
    + [f"terminal_{kind}_{w}d" for w in WINDOWS_DAYS for kind in ("tx", "risk")]
)


def handbook_features(frame: pd.DataFrame, *, delay_days: int = DELAY_DAYS) -> pd.DataFrame:
    """FEATURES for every row of `frame` (columns timestamp, customer_id, terminal_id, amount,
    fraud), index preserved. A transaction sees only rows of `frame` at or before its timestamp."""
    out = pd.DataFrame(index=frame.index)
    out["amount"] = frame["amount"].astype("float64")
    out["weekend"] = (frame["timestamp"].dt.day_of_week >= 5).astype("float64")
    out["night"] = (frame["timestamp"].dt.hour <= 6).astype("float64")
    for column, values in customer_windows(frame).items():
        out[column] = values
    for column, values in terminal_risk(frame, delay_days=delay_days).items():
        out[column] = values
    return out[FEATURES]


def with_features(frame: pd.DataFrame, *, delay_days: int = DELAY_DAYS) -> pd.DataFrame:
    """`frame` with the FEATURES columns added (amount is already one of them)."""
    features = handbook_features(frame, delay_days=delay_days)
    return frame.assign(**{column: features[column] for column in FEATURES})


def _rolling(frame: pd.DataFrame, key: str, column: str, days: int) -> pd.core.window.RollingGroupby:
    """Per-`key` time windows of `days` days, (t - days, t], over `frame` sorted by key then time."""
    return frame.set_index("timestamp").groupby(key, sort=False)[column].rolling(f"{days}D")


def _by(frame: pd.DataFrame, key: str) -> pd.DataFrame:
    return frame.sort_values([key, "timestamp"], kind="stable")


def _values(result: pd.Series, order: pd.Index) -> pd.Series:
    """A groupby-rolling result (in `order`'s row order) as a Series on the original index."""
    return pd.Series(result.to_numpy(), index=order)


def customer_windows(frame: pd.DataFrame) -> dict[str, pd.Series]:
    ordered = _by(frame, "customer_id")
    out = {}
    for w in WINDOWS_DAYS:
        window = _rolling(ordered, "customer_id", "amount", w)
        out[f"customer_tx_{w}d"] = _values(window.count(), ordered.index)
        out[f"customer_mean_amount_{w}d"] = _values(window.mean(), ordered.index)
    return out


def terminal_risk(frame: pd.DataFrame, *, delay_days: int) -> dict[str, pd.Series]:
    """Frauds and transactions of the terminal in (t - delay - w, t - delay]: the counts over
    (t - delay - w, t] minus those over (t - delay, t], whose labels are not known yet."""
    ordered = _by(frame, "terminal_id")

    def counts(days: int) -> tuple[np.ndarray, np.ndarray]:
        window = _rolling(ordered, "terminal_id", "fraud", days)
        return window.sum().to_numpy(), window.count().to_numpy()

    recent_fraud, recent_tx = counts(delay_days)
    out = {}
    for w in WINDOWS_DAYS:
        fraud, tx = counts(delay_days + w)
        fraud, tx = fraud - recent_fraud, tx - recent_tx
        risk = np.divide(fraud, tx, out=np.zeros_like(fraud), where=tx > 0)
        out[f"terminal_tx_{w}d"] = pd.Series(tx, index=ordered.index)
        out[f"terminal_risk_{w}d"] = pd.Series(risk, index=ordered.index)
    return out
