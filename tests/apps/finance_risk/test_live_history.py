"""The scorer's in-memory history: loaded from the store, it describes a new transaction exactly
as the whole data does (features and card series, on the real data); a label counts from its
arrival only; a card keeps its last events however old.

.venv/bin/python -m pytest tests/apps/finance_risk/test_live_history.py -q
"""

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from apps.finance_risk.features import FEATURES, with_features
from apps.finance_risk.live_history import LiveHistory
from apps.finance_risk.sequences import card_series
from apps.finance_risk.store import TransactionStore
from apps.finance_risk.transactions import FILE, read_transactions
from core_model.datasets import dataset_dir

T0 = datetime(2018, 4, 1, 12, tzinfo=UTC)


def utc(timestamp: pd.Timestamp) -> datetime:
    return timestamp.to_pydatetime().replace(tzinfo=UTC)


def new(n: int, at: datetime, *, customer: str = "c", terminal: str = "m", amount: float = 10.0) -> dict:
    return {"transaction_id": f"t{n}", "customer_id": customer, "terminal_id": terminal, "amount": amount,
            "timestamp": at}  # fmt: skip


def risk_1d(live: LiveHistory, transaction: dict) -> float:
    return live.describe(transaction).features_A[FEATURES.index("terminal_risk_1d")]


def test_a_label_counts_from_its_arrival_only(tmp_path):
    store = TransactionStore(f"sqlite:///{tmp_path / 'fr.db'}")
    store.add_transactions([{**new(0, T0), "customer_id": "other"}])
    arrival = T0 + timedelta(days=7, hours=2)
    store.add_labels([{"transaction_id": "t0", "fraud": 1, "source": "chargeback", "arrived_at": arrival}])
    live = LiveHistory.load(store, length=4)
    before = new(1, T0 + timedelta(days=7, hours=1))  # the terminal's day before the delay holds t0
    after = new(2, T0 + timedelta(days=7, hours=3))
    assert risk_1d(live, before) == 0.0 and risk_1d(live, after) == 1.0
    live.add_label(
        "t0", fraud=0, arrived_at=T0 + timedelta(days=7, hours=2, minutes=30)
    )  # an analyst's dismissal
    assert risk_1d(live, after) == 0.0
    store.close()


def test_the_newest_label_by_arrival_counts_whatever_order_they_are_told(tmp_path):
    store = TransactionStore(f"sqlite:///{tmp_path / 'fr.db'}")
    store.add_transactions([{**new(0, T0), "customer_id": "other"}])
    live = LiveHistory.load(store, length=4)
    after = new(2, T0 + timedelta(days=7, hours=3))
    live.add_label("t0", fraud=0, arrived_at=T0 + timedelta(days=7, hours=2))  # a dismissal, told first
    assert risk_1d(live, after) == 0.0
    live.add_label("t0", fraud=1, arrived_at=T0 + timedelta(days=7, hours=1))  # the chargeback it dismissed
    assert risk_1d(live, after) == 0.0
    assert risk_1d(live, new(1, T0 + timedelta(days=7, hours=1, minutes=30))) == 1.0  # between the two
    store.close()


def test_a_card_keeps_its_last_events_however_old():
    live = LiveHistory(length=3)
    for n, days in enumerate([0, 1, 2, 60]):  # 60 days later: the first three are out of every window
        transaction = new(n, T0 + timedelta(days=days), amount=10.0 + n)
        live.add(transaction, live.describe(transaction).event_F)
        live.prune([transaction])  # as the scorer does once it is stored
    assert len(live.cards["c"].events) == 2  # the 60-day-old ones gone but the length - 1 kept
    seen = live.describe(new(9, T0 + timedelta(days=61)))
    assert [e.transaction_id for e in seen.history] == ["t2", "t3"]  # length - 1 earlier events
    assert seen.features_A[FEATURES.index("customer_tx_30d")] == 2.0  # t3 and itself
    assert seen.mask_T.tolist() == [True, True, True]


def test_forget_undoes_add():
    live = LiveHistory(length=3)
    first, second = new(1, T0), new(2, T0 + timedelta(hours=1))
    live.add(first, live.describe(first).event_F)
    before = live.describe(new(3, T0 + timedelta(hours=2)))
    live.add(second, live.describe(second).event_F)
    live.forget([second])
    after = live.describe(new(3, T0 + timedelta(hours=2)))
    assert after.features_A == before.features_A and [e.transaction_id for e in after.history] == ["t1"]


def test_a_forgotten_batch_leaves_the_recent_past_as_it_was_however_late_its_timestamps():
    live = LiveHistory(length=3)
    for n in range(4):
        transaction = new(n, T0 + timedelta(hours=n))
        live.add(transaction, live.describe(transaction).event_F)
        live.prune([transaction])
    probe = new(9, T0 + timedelta(hours=5))
    before = live.describe(probe)
    refused = new(8, T0 + timedelta(days=90))  # a batch the store refused (a repeated id)
    live.add(refused, live.describe(refused).event_F)
    live.forget([refused])
    after = live.describe(probe)
    assert after.features_A == before.features_A and after.history == before.history
    assert before.features_A[FEATURES.index("customer_tx_1d")] == 5.0  # t0..t3 and the probe itself


@pytest.mark.slow
def test_a_transaction_is_described_as_the_whole_data_describes_it(tmp_path):
    transactions = read_transactions(dataset_dir("fraud_handbook_simulated") / FILE, days=(130, 139))
    features = with_features(transactions)  # the reference: every row, from the whole frame
    series = card_series(features, length=16)
    stored = (transactions["day"] < 138).to_numpy()
    store = TransactionStore(f"sqlite:///{tmp_path / 'fr.db'}")
    store.add_transactions(
        {"transaction_id": str(r.transaction_id), "customer_id": str(r.customer_id),
         "terminal_id": str(r.terminal_id), "amount": r.amount, "timestamp": utc(r.timestamp),
         "features": {f: getattr(r, f) for f in FEATURES if f != "amount"}}
        for r in features[stored].itertuples()
    )  # fmt: skip
    store.add_labels(  # each label known as soon as the transaction happened, as the whole data has it
        {"transaction_id": str(r.transaction_id), "fraud": int(r.fraud), "source": "import",
         "arrived_at": utc(r.timestamp)}
        for r in transactions[stored].itertuples()
    )  # fmt: skip
    live = LiveHistory.load(store, length=16)
    for row in np.flatnonzero(~stored):  # the last two days, one transaction at a time
        r = transactions.iloc[row]
        transaction = {
            "transaction_id": str(r.transaction_id), "customer_id": str(r.customer_id),
            "terminal_id": str(r.terminal_id), "amount": r.amount, "timestamp": utc(r.timestamp),
        }  # fmt: skip
        seen = live.describe(transaction)
        np.testing.assert_allclose(seen.features_A, features[FEATURES].to_numpy()[row], rtol=1e-12)
        np.testing.assert_allclose(seen.events_TF, series.events_NTF[row], rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(seen.gaps_T, series.gaps_NT[row])
        np.testing.assert_array_equal(seen.mask_T, series.mask_NT[row])
        ids = [str(i) for i in series.history_ids_NT[row][series.mask_NT[row]][:-1]]
        assert [e.transaction_id for e in seen.history] == ids
        live.add(transaction, seen.event_F)
        live.prune([transaction])
        live.add_label(transaction["transaction_id"], fraud=int(r.fraud), arrived_at=transaction["timestamp"])
    store.close()
