"""The SQL store: migrations build exactly the tables of models.py; labels keep their arrival
time; the history read back for a transaction gives it the score the whole data gives it.

.venv/bin/python -m pytest tests/apps/finance_risk/test_store.py -q
"""

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from apps.finance_risk import database
from apps.finance_risk.features import FEATURES, with_features
from apps.finance_risk.model import FraudModel, FraudModelConfig, Scaler
from apps.finance_risk.models import Base
from apps.finance_risk.scoring import history_for, score_frame
from apps.finance_risk.store import TransactionStore, UnknownTransactions
from apps.finance_risk.transactions import FILE, read_transactions
from core_model.datasets import dataset_dir

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


def test_a_label_counts_only_from_its_arrival(tmp_path):
    store = TransactionStore(f"sqlite:///{tmp_path / 'fr.db'}")
    t0 = datetime(2018, 4, 1, 12, tzinfo=UTC)
    store.add_transactions([
        {"transaction_id": "a", "customer_id": "c", "terminal_id": "m", "amount": 5.0, "timestamp": t0},
    ])  # fmt: skip
    store.add_labels(
        [{"transaction_id": "a", "fraud": 1, "source": "chargeback", "arrived_at": t0 + timedelta(days=3)}]
    )
    with pytest.raises(UnknownTransactions, match="no transaction zz"):
        store.add_labels([{"transaction_id": "zz", "fraud": 1, "source": "analyst", "arrived_at": t0}])
    before = store.history(customer_id="c", terminal_id="m", at=t0 + timedelta(days=2), length=4)
    after = store.history(customer_id="c", terminal_id="m", at=t0 + timedelta(days=4), length=4)
    assert before["fraud"].tolist() == [0] and after["fraud"].tolist() == [1]
    store.close()


@pytest.mark.slow
def test_a_transaction_scores_from_the_store_as_from_the_whole_data(tmp_path):
    transactions = read_transactions(dataset_dir("fraud_handbook_simulated") / FILE, days=(134, 140))
    features = with_features(transactions)
    store = TransactionStore(f"sqlite:///{tmp_path / 'fr.db'}")
    store.add_transactions(
        {"transaction_id": str(r.transaction_id), "customer_id": str(r.customer_id),
         "terminal_id": str(r.terminal_id), "amount": r.amount, "timestamp": utc(r.timestamp),
         "features": {f: getattr(r, f) for f in DERIVED}}
        for r in features.itertuples()
    )  # fmt: skip
    store.add_labels(  # every label known as soon as the transaction happened, as the whole data has it
        {"transaction_id": str(r.transaction_id), "fraud": int(r.fraud), "source": "import",
         "arrived_at": utc(r.timestamp)}
        for r in transactions.itertuples()
    )  # fmt: skip
    model = FraudModel(
        FraudModelConfig.preset("tiny"), scaler=Scaler.fit(features[FEATURES].to_numpy())
    ).eval()
    rng = np.random.default_rng(2)
    for row in rng.choice(np.flatnonzero(transactions["day"] >= 139), size=3, replace=False):
        current = transactions.iloc[row]
        expected = history_for(features, row=int(row), history=model.config.history)
        fetched = store.history(
            customer_id=str(current.customer_id), terminal_id=str(current.terminal_id),
            at=utc(current.timestamp), length=model.config.history,
        )  # fmt: skip
        fetched = fetched[fetched["transaction_id"] != str(current.transaction_id)]  # stored above; new here
        assert fetched["transaction_id"].tolist() == [str(i) for i in expected["transaction_id"][:-1]]
        new = {"transaction_id": str(current.transaction_id), "timestamp": current.timestamp,
               "customer_id": str(current.customer_id), "terminal_id": str(current.terminal_id),
               "amount": current.amount, "fraud": 0}  # fmt: skip
        live = pd.concat([fetched, pd.DataFrame([new])], ignore_index=True)
        offline = score_frame(model, expected)[-1]
        assert score_frame(model, live)[-1] == pytest.approx(offline, abs=1e-3)
    store.close()
