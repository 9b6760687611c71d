"""The Fraud Detection Handbook's validation protocol: train on a block of days, skip a delay block
(fraud labels arrive days late, so the newest transactions cannot be trained on), test on the
block after it. Never a random split.

    split = DelayedSplit.starting("2018-07-25", train_days=7, delay_days=7, test_days=7)
    train, test = split.apply(frame)          # rows of `frame` (transactions, with features)
    validation = split.shifted(-14)           # the same protocol two weeks earlier, for tuning

In the test block a card already known to be compromised is not scored again: on each test day,
the customers with a fraud labelled by then (a fraud from the training block on, at least
`delay_days` before that day) are left out, as an investigator would have blocked the card (the
handbook's `get_train_test_set`).

This module knows nothing of features or models.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import pandas as pd

FIRST_DAY = pd.Timestamp("2018-04-01")  # day 0 of the simulated data (the `day` column)


@dataclass(frozen=True)
class DelayedSplit:
    train_start: int  # day index (days since FIRST_DAY)
    train_days: int = 7
    delay_days: int = 7
    test_days: int = 7

    def __post_init__(self) -> None:
        for name in ("train_days", "test_days"):
            if getattr(self, name) < 1:
                raise ValueError(f"DelayedSplit.{name} must be >= 1, got {getattr(self, name)}")
        if self.delay_days < 0 or self.train_start < 0:
            raise ValueError(f"train_start and delay_days must be >= 0, got {self}")

    @classmethod
    def starting(cls, date: str, **days: int) -> DelayedSplit:
        """The split whose training block starts on `date` (YYYY-MM-DD)."""
        return cls(train_start=(pd.Timestamp(date) - FIRST_DAY).days, **days)

    @property
    def test_start(self) -> int:
        return self.train_start + self.train_days + self.delay_days

    @property
    def test_stop(self) -> int:
        return self.test_start + self.test_days

    def shifted(self, days: int) -> DelayedSplit:
        return replace(self, train_start=self.train_start + days)

    def dates(self) -> dict[str, str]:
        """The first and last date of each block, for reports."""

        def date(day: int) -> str:
            return (FIRST_DAY + pd.Timedelta(days=day)).strftime("%Y-%m-%d")

        blocks = {
            "train": (self.train_start, self.train_start + self.train_days),
            "delay": (self.train_start + self.train_days, self.test_start),
            "test": (self.test_start, self.test_stop),
        }
        return {name: f"{date(a)}..{date(b - 1)}" if b > a else "-" for name, (a, b) in blocks.items()}

    def apply(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(train, test) rows of `frame` (columns day, customer_id, fraud)."""
        day = frame["day"]
        train = frame[(day >= self.train_start) & (day < self.train_start + self.train_days)]
        frauds = frame.loc[(frame["fraud"] == 1) & (day >= self.train_start), ["day", "customer_id"]]
        kept = []
        for test_day in range(self.test_start, self.test_stop):
            known = set(frauds.loc[frauds["day"] < test_day - self.delay_days, "customer_id"])
            rows = frame[day == test_day]
            kept.append(rows[~rows["customer_id"].isin(known)])
        return train, pd.concat(kept)
