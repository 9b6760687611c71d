"""The SQL store: migrations build exactly the tables of models.py; labels keep their arrival
time; what a starting scorer loads is the recent past and each card's last events.

.venv/bin/python -m pytest tests/apps/finance_risk/test_store.py -q
"""

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from apps.finance_risk import database
from apps.finance_risk.features import FEATURES
from apps.finance_risk.models import Base
from apps.finance_risk.store import TransactionStore, UnknownTransactions

DERIVED = [name for name in FEATURES if name != "amount"]


def utc(timestamp: pd.Timestamp) -> datetime:
    return timestamp.to_pydatetime().replace(tzinfo=UTC)


def test_migrations_build_the_tables_of_the_models(tmp_path):
    engine = database.make_engine(f"sqlite:///{tmp_path / 'fr.db'}")
    database.upgrade(engine)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts=database.MIGRATIONS.options())
        assert compare_metadata(context, Base.metadata) == []
    assert database.MIGRATIONS.current_revision(engine) == "0002"
    engine.dispose()


def test_labels_of_unknown_transactions_store_nothing(tmp_path):
    store = TransactionStore(f"sqlite:///{tmp_path / 'fr.db'}")
    t0 = datetime(2018, 4, 1, 12, tzinfo=UTC)
    store.add_transactions(
        [{"transaction_id": "a", "customer_id": "c", "terminal_id": "m", "amount": 5.0, "timestamp": t0}]
    )
    with pytest.raises(UnknownTransactions, match="no transaction zz"):
        store.add_labels([
            {"transaction_id": "a", "fraud": 1, "source": "analyst", "arrived_at": t0},
            {"transaction_id": "zz", "fraud": 1, "source": "analyst", "arrived_at": t0},
        ])  # fmt: skip
    assert store.transactions(since=t0)["labelled"].tolist() == [False]
    store.close()


def test_the_recent_past_is_the_terminal_window_and_each_card_s_last_events(tmp_path):
    store = TransactionStore(f"sqlite:///{tmp_path / 'fr.db'}")
    t0 = datetime(2018, 4, 1, 12, tzinfo=UTC)
    rows = [("old1", "c", 0), ("old2", "c", 1), ("old3", "c", 2), ("gone", "d", 3), ("new", "e", 60)]
    store.add_transactions(
        {"transaction_id": i, "customer_id": c, "terminal_id": "m", "amount": 5.0,
         "timestamp": t0 + timedelta(days=d)}
        for i, c, d in rows
    )  # fmt: skip
    store.add_labels([{"transaction_id": "old3", "fraud": 1, "source": "chargeback", "arrived_at": t0}])
    frame, labels = store.recent(length=3)  # card c keeps its last 2, card d its last 1, all > 37 days old
    assert frame["transaction_id"].tolist() == ["old2", "old3", "gone", "new"]
    assert [(i, fraud) for i, fraud, _ in labels] == [("old3", 1)]
    assert frame["fraud"].tolist() == [0, 1, 0, 0]
    store.close()
