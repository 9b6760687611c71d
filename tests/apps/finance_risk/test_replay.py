"""The replay of a day: seeding stores the 37 days before it with their features, "import" labels
arriving 7 days after each transaction and the last week scored offline, once however often it
runs; the day is then posted to the scoring API, and a second replay skips what was scored.

.venv/bin/python -m pytest -q tests/apps/finance_risk/test_replay.py
"""

from __future__ import annotations

from datetime import date, timedelta

import pandas as pd
import pytest
from sqlalchemy import func, select

from apps.finance_risk.models import Label
from apps.finance_risk.replay import (
    DERIVED,
    SCORED_DAYS,
    SEED_DAYS,
    day_transactions,
    load_window,
    replay,
    seed,
    seeded,
)
from apps.finance_risk.store import TransactionStore
from tests.apps.finance_risk.conftest import DESK_KEY

DAY = date(2018, 9, 5)
CARDS = 3  # each makes one transaction a day, card 0 a fraud every tenth day


@pytest.fixture(scope="module")
def handbook_csv(tmp_path_factory):
    """60 days of transactions up to DAY (included) in the handbook's CSV layout."""
    first = pd.Timestamp(DAY) - pd.Timedelta(days=59)
    rows = []
    for d in range(60):
        for card in range(CARDS):
            stamp = first + pd.Timedelta(days=d, hours=9 + card)
            rows.append({
                "TRANSACTION_ID": len(rows), "TX_DATETIME": stamp.strftime("%Y-%m-%d %H:%M:%S"),
                "CUSTOMER_ID": card, "TERMINAL_ID": card % 2, "TX_AMOUNT": 10.0 + d + card,
                "TX_TIME_DAYS": d, "TX_FRAUD": int(card == 0 and d % 10 == 0), "TX_FRAUD_SCENARIO": 0,
            })  # fmt: skip
    path = tmp_path_factory.mktemp("handbook") / "transactions.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_seeding_stores_the_days_before_with_late_labels_and_a_scored_week(
    handbook_csv, tiny_fraud_model, tmp_path
):
    frame = load_window(DAY, path=handbook_csv)
    store = TransactionStore(f"sqlite:///{tmp_path / 'seed.db'}")
    report = seed(store, frame, day=DAY, model_dir=tiny_fraud_model)
    assert (report.stored, report.scored) == (SEED_DAYS * CARDS, SCORED_DAYS * CARDS)
    assert seeded(store, day=DAY) and not seeded(store, day=DAY + timedelta(days=1))
    since = pd.Timestamp(DAY - timedelta(days=SEED_DAYS), tz="UTC").to_pydatetime()
    stored = store.activity(since=since, until=pd.Timestamp(DAY, tz="UTC").to_pydatetime(), detail=True)
    assert len(stored) == SEED_DAYS * CARDS  # nothing of DAY itself, nothing older than 37 days
    scored_from = pd.Timestamp(DAY - timedelta(days=SCORED_DAYS), tz="UTC")
    assert (stored["score"].notna() == (stored["timestamp"] >= scored_from)).all()
    assert stored["score"].dropna().between(0, 1).all()
    assert (stored["label_source"] == "import").all()
    assert (stored["label_arrived_at"] - stored["timestamp"] == pd.Timedelta(days=7)).all()
    expected = frame.set_index(frame["transaction_id"].astype(str))["fraud"]
    assert (stored.set_index("transaction_id")["fraud"] == expected.loc[stored["transaction_id"]]).all()
    features = store.transactions(since=since).set_index("transaction_id")
    assert features[DERIVED].notna().all().all()  # the scorer reads them back as the card's history

    again = seed(store, frame, day=DAY, model_dir=tiny_fraud_model)
    assert (again.stored, again.scored) == (0, 0)
    with store.Session() as session:  # one label each still
        assert session.scalar(select(func.count()).select_from(Label)) == len(stored)
    store.close()


def test_the_day_is_posted_in_time_order_and_a_second_replay_skips_it(handbook_csv, desk_url):
    bodies = day_transactions(load_window(DAY, seed=False, path=handbook_csv), DAY)
    assert [b["timestamp"] for b in bodies] == sorted(b["timestamp"] for b in bodies) and len(bodies) == CARDS
    first = replay(api=desk_url, transactions=bodies, rate=0, api_key=DESK_KEY, progress=False)
    assert (first.posted, first.skipped) == (CARDS, 0)
    again = replay(api=desk_url, transactions=bodies, rate=50, api_key=DESK_KEY, progress=False)
    assert (again.posted, again.skipped) == (0, CARDS)
