"""Transactions and labels in SQL, and what is read back from them: the recent past a scorer
starts from, and any time range for updates and the analysts.

    store = TransactionStore("sqlite:///runs/finance.db")        # migrates the tables first
    store.add_transactions([{"transaction_id": "t1", "customer_id": "c9", "terminal_id": "m4",
                             "amount": 57.2, "timestamp": aware_utc, "features": {...}, "score": 0.1,
                             "model_version": "abc", "reasons": {...}}])
    store.add_labels([{"transaction_id": "t1", "fraud": 1, "source": "chargeback", "arrived_at": now}])
    frame = store.transactions(since=day, until=next_day, labels_known_at=now)
    frame, labels = store.recent(length=16)                      # what `LiveHistory.load` reads

Frames are in time order, with each transaction's features as it was scored and its label as
known at a given time (a label that arrived later does not exist yet: 0).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Row, func, insert, select

from core_model.storage import make_engine, session_factory

from .database import MIGRATIONS
from .features import FEATURES
from .models import Label, Transaction
from .scoring import TERMINAL_DAYS

COLUMNS = ["transaction_id", "timestamp", "customer_id", "terminal_id", "amount"]
READ = (  # what frames are read from: COLUMNS, then the features and score as scored
    Transaction.transaction_id, Transaction.timestamp, Transaction.customer_id, Transaction.terminal_id,
    Transaction.amount, Transaction.features, Transaction.score,
)  # fmt: skip


IN_CHUNK = 900  # ids per IN (...): under every SQLite's limit on variables per statement


def _chunks(items: list[str]) -> list[list[str]]:
    return [items[i : i + IN_CHUNK] for i in range(0, len(items), IN_CHUNK)]


class UnknownTransactions(LookupError):
    """Labels for transactions the store has never seen; the message lists them."""


class TransactionStore:
    def __init__(self, url: str, *, checkpoint_every_s: float | None = None) -> None:
        """`checkpoint_every_s`: for the scorer, whose commits answer requests (`make_engine`)."""
        self.engine = make_engine(url, checkpoint_every_s=checkpoint_every_s)
        MIGRATIONS.upgrade(self.engine)
        self.Session = session_factory(self.engine)

    def add_transactions(self, rows: Iterable[dict[str, Any]]) -> int:
        rows = list(rows)
        if rows:
            with self.engine.begin() as connection:  # Core, not the ORM's bulk insert: half the cost
                connection.execute(insert(Transaction.__table__), rows)
        return len(rows)

    def existing(self, transaction_ids: Iterable[str]) -> set[str]:
        """The ids of `transaction_ids` the store already holds."""
        with self.Session() as session:
            return self._existing(session, set(transaction_ids))

    @staticmethod
    def _existing(session, ids: set[str]) -> set[str]:
        found: set[str] = set()
        for chunk in _chunks(sorted(ids)):  # SQLite caps the variables of one statement
            query = select(Transaction.transaction_id).where(Transaction.transaction_id.in_(chunk))
            found.update(session.scalars(query))
        return found

    def add_labels(self, labels: Iterable[dict[str, Any]]) -> int:
        """Stores every label or none: an UnknownTransactions names the ids never seen."""
        labels = list(labels)
        ids = {label["transaction_id"] for label in labels}
        with self.Session.begin() as session:
            known = self._existing(session, ids)
            if missing := sorted(ids - known):
                raise UnknownTransactions(
                    f"no transaction {', '.join(missing[:10])}" + (" ..." if len(missing) > 10 else "")
                )
            if labels:
                session.execute(insert(Label), labels)
        return len(labels)

    def transactions(
        self, *, since: datetime, until: datetime | None = None, labels_known_at: datetime | None = None
    ) -> pd.DataFrame:
        """Every stored transaction with `since` <= timestamp < `until`, oldest first: COLUMNS,
        fraud (its newest label that had arrived by `labels_known_at`, default any; 0 without
        one), labelled (whether it had one), FEATURES as scored (NaN where it was not), score."""
        with self.Session() as session:
            query = select(Transaction).where(Transaction.timestamp >= since)
            if until is not None:
                query = query.where(Transaction.timestamp < until)
            query = query.with_only_columns(*READ).order_by(Transaction.timestamp, Transaction.id)
            rows = session.execute(query).all()
            labels = self._labels_known(session, [r.transaction_id for r in rows], labels_known_at)
        return self._frame(rows, labels)

    def time_range(self) -> tuple[datetime, datetime] | None:
        """The oldest and newest stored transaction times (aware UTC), None for an empty store."""
        with self.Session() as session:
            oldest, newest = session.execute(
                select(func.min(Transaction.timestamp), func.max(Transaction.timestamp))
            ).one()
        return None if oldest is None else (oldest, newest)

    def recent(self, *, length: int) -> tuple[pd.DataFrame, list[tuple[str, int, datetime]]]:
        """What a scorer starting now needs: the transactions of the TERMINAL_DAYS days up to the
        newest stored one and each card's last `length` - 1 (as `transactions` returns them), and
        every label of them as (transaction_id, fraud, arrived_at)."""
        with self.Session() as session:
            newest = session.scalar(select(func.max(Transaction.timestamp)))
            if newest is None:
                return self._frame([], {}), []
            newest_first = (Transaction.timestamp.desc(), Transaction.id.desc())
            rank = func.row_number().over(partition_by=Transaction.customer_id, order_by=newest_first)
            ranked = select(Transaction.id, Transaction.timestamp, rank.label("rank")).subquery()
            wanted = select(ranked.c.id).where(
                (ranked.c.timestamp >= newest - timedelta(days=TERMINAL_DAYS)) | (ranked.c.rank < length)
            )
            rows = session.execute(
                select(*READ)
                .where(Transaction.id.in_(wanted))
                .order_by(Transaction.timestamp, Transaction.id)
            ).all()
            labels = session.execute(
                select(Label.transaction_id, Label.fraud, Label.arrived_at)
                .join(Transaction, Transaction.transaction_id == Label.transaction_id)
                .where(Transaction.id.in_(wanted))
            ).all()  # fmt: skip
        newest_labels = {i: fraud for i, fraud, _ in sorted(labels, key=lambda label: label[2])}
        return self._frame(rows, newest_labels), [tuple(label) for label in labels]

    @staticmethod
    def _frame(rows: Sequence[Row], labels: dict[str, int]) -> pd.DataFrame:
        """`rows` of READ as a frame with naive UTC timestamps, `labels` as fraud and labelled."""
        frame = pd.DataFrame([row[:5] for row in rows], columns=COLUMNS)
        frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True).dt.tz_localize(None)
        known = frame["transaction_id"].map(labels)
        frame["fraud"] = known.fillna(0).astype("int8")
        frame["labelled"] = known.notna().to_numpy()
        stored = [r.features or {} for r in rows]
        for name in FEATURES:
            if name != "amount":
                frame[name] = np.array([f.get(name, np.nan) for f in stored], dtype=float)
        frame["score"] = np.array([np.nan if r.score is None else r.score for r in rows], dtype=float)
        return frame

    @staticmethod
    def _labels_known(session, ids: list[str], at: datetime | None) -> dict[str, int]:
        """Each transaction's newest label that had arrived by `at` (None: the newest of all)."""
        known = {}
        for chunk in _chunks(ids):
            arrived = Label.transaction_id.in_(chunk)
            if at is not None:
                arrived = arrived & (Label.arrived_at <= at)
            newest = (
                select(Label.transaction_id, func.max(Label.arrived_at).label("arrived_at"))
                .where(arrived).group_by(Label.transaction_id).subquery()
            )  # fmt: skip
            query = select(Label.transaction_id, Label.fraud).join(
                newest,
                (Label.transaction_id == newest.c.transaction_id) & (Label.arrived_at == newest.c.arrived_at),
            )
            known.update({transaction_id: fraud for transaction_id, fraud in session.execute(query)})
        return known

    def close(self) -> None:
        self.engine.dispose()

    # ----------------------------------------------------------------- what the analysts' desk reads

    def import_history(self, rows: Iterable[dict[str, Any]], labels: Iterable[dict[str, Any]]) -> int:
        """Stores transactions and their labels in one database transaction, leaving out the
        transactions already stored (and their labels): importing the same history twice stores
        it once. Returns the number of transactions stored."""
        rows = list(rows)
        with self.Session.begin() as session:
            known = self._existing(session, {row["transaction_id"] for row in rows})
            new = [row for row in rows if row["transaction_id"] not in known]
            new_labels = [label for label in labels if label["transaction_id"] not in known]
            for table, values in ((Transaction, new), (Label, new_labels)):
                for start in range(0, len(values), 10_000):  # bounded memory per statement batch
                    session.execute(insert(table), values[start : start + 10_000])
        return len(new)

    def days(self) -> pd.DataFrame:
        """Per UTC day with transactions, oldest first: day (a date), transactions, scored."""
        day = func.date(Transaction.timestamp)
        with self.Session() as session:
            rows = session.execute(
                select(day, func.count(), func.count(Transaction.score)).group_by(day).order_by(day)
            ).all()
        frame = pd.DataFrame(rows, columns=["day", "transactions", "scored"])
        frame["day"] = pd.to_datetime(frame["day"]).dt.date
        return frame

    def activity(self, *, since: datetime, until: datetime, detail: bool = False) -> pd.DataFrame:
        """The transactions with `since` <= timestamp < `until`, oldest first, without their
        features: transaction_id, timestamp (aware UTC), customer_id, score (NaN where unscored)
        and the fraud of its newest label (1, 0, or NaN without one); with `detail` also
        terminal_id, amount, label_source and label_arrived_at (slower: a day, not a month)."""
        T = Transaction
        columns = [T.transaction_id, T.timestamp, T.customer_id, T.score, Label.fraud]
        if detail:
            columns += [T.terminal_id, T.amount, Label.source, Label.arrived_at]
        query = (
            select(*columns)
            .outerjoin(Label, Label.transaction_id == T.transaction_id)
            .where(T.timestamp >= since, T.timestamp < until)
            .order_by(T.timestamp, T.id, Label.arrived_at)  # a transaction's newest label last
        )
        names = ["transaction_id", "timestamp", "customer_id", "score", "fraud"]
        names += ["terminal_id", "amount", "label_source", "label_arrived_at"] if detail else []
        with self.engine.connect() as connection:  # Core rows: no ORM bookkeeping for 100k+ rows
            rows = [tuple(row) for row in connection.execute(query)]  # pandas probes a Row slowly
        frame = (
            pd.DataFrame(rows, columns=names)
            .drop_duplicates("transaction_id", keep="last")
            .reset_index(drop=True)
        )
        return frame.astype({"score": float, "fraud": float})

    def reasons(self, transaction_ids: Iterable[str]) -> dict[str, dict[str, Any] | None]:
        """The reasons each transaction was scored with (None where it has none)."""
        found: dict[str, dict[str, Any] | None] = {}
        with self.Session() as session:
            for chunk in _chunks(sorted(set(transaction_ids))):
                query = select(Transaction.transaction_id, Transaction.reasons).where(
                    Transaction.transaction_id.in_(chunk)
                )
                found.update(dict(session.execute(query).all()))
        return found
