"""Transactions as a pandas DataFrame, read from the Fraud Detection Handbook's CSV layout (one row
per card transaction, in time order) and checked at the edge.

    frame = read_transactions(dataset_dir("fraud_handbook_simulated") / "transactions.csv.gz")
    frame = read_transactions(path, days=(114, 135))     # only days 114..134 (faster)

Columns kept: transaction_id, timestamp (naive UTC datetime64), customer_id, terminal_id, amount,
day (whole days since the data's first midnight), fraud (0/1), scenario (0 genuine, 1-3 the
simulator's fraud scenarios). This module knows nothing of features, models or SQL.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

DATASET = "fraud_handbook_simulated"
FILE = "transactions.csv.gz"
# the CSV's columns -> ours
COLUMNS = {
    "TRANSACTION_ID": "transaction_id",
    "TX_DATETIME": "timestamp",
    "CUSTOMER_ID": "customer_id",
    "TERMINAL_ID": "terminal_id",
    "TX_AMOUNT": "amount",
    "TX_TIME_DAYS": "day",
    "TX_FRAUD": "fraud",
    "TX_FRAUD_SCENARIO": "scenario",
}
DTYPES = {
    "TRANSACTION_ID": "int64",
    "CUSTOMER_ID": "int64",
    "TERMINAL_ID": "int64",
    "TX_AMOUNT": "float64",
    "TX_TIME_DAYS": "int64",
    "TX_FRAUD": "int8",
    "TX_FRAUD_SCENARIO": "int8",
}


class TransactionsError(ValueError):
    """A transactions file that cannot be read as it is; the message names the file (and row)."""


def read_transactions(path: str | Path, *, days: tuple[int, int] | None = None) -> pd.DataFrame:
    """The transactions of `path` (CSV, optionally gzipped) sorted by time, or a TransactionsError
    naming the file and the first bad row. `days=(first, stop)` keeps days first..stop-1."""
    path = Path(path)
    if not path.is_file():
        raise TransactionsError(f"{path}: no such file")
    try:
        frame = pd.read_csv(path, usecols=list(COLUMNS), dtype=DTYPES)
    except ValueError as error:  # a missing column or a value of the wrong type
        raise TransactionsError(f"{path}: {error}") from None
    if days is not None:
        frame = frame[(frame["TX_TIME_DAYS"] >= days[0]) & (frame["TX_TIME_DAYS"] < days[1])]
    frame = frame.rename(columns=COLUMNS)
    timestamps = pd.to_datetime(frame["timestamp"], format="%Y-%m-%d %H:%M:%S", errors="coerce")
    _check(path, frame, timestamps)
    frame["timestamp"] = timestamps
    return frame.sort_values(["timestamp", "transaction_id"], kind="stable").reset_index(drop=True)


def _check(path: Path, frame: pd.DataFrame, timestamps: pd.Series) -> None:
    def fail(mask: pd.Series | np.ndarray, what: str) -> None:
        bad = np.flatnonzero(np.asarray(mask))
        if len(bad):
            row = int(frame.index[bad[0]]) + 2  # + header line, 1-based
            raise TransactionsError(f"{path}, line {row}: {what} ({len(bad)} rows like it)")

    fail(timestamps.isna(), "timestamp is not YYYY-MM-DD HH:MM:SS")
    fail(~np.isfinite(frame["amount"]) | (frame["amount"] < 0), "amount is negative or not a number")
    fail(~frame["fraud"].isin((0, 1)), "TX_FRAUD is not 0 or 1")
    if frame["transaction_id"].duplicated().any():
        fail(frame["transaction_id"].duplicated(), "TRANSACTION_ID repeats an earlier one")
