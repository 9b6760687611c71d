"""The delayed-label protocol: blocks in time order, nothing from after the training block's labels
in training, compromised cards known by a test day left out of it; and on the real data, the
handbook's test set.

.venv/bin/python -m pytest tests/apps/finance_risk/test_protocol.py -q
"""

import pandas as pd
import pytest

from apps.finance_risk.features import FEATURES, with_features
from apps.finance_risk.metrics import card_precision_at_k, fraud_metrics
from apps.finance_risk.protocol import DelayedSplit
from apps.finance_risk.transactions import FILE, read_transactions
from core_model.datasets import dataset_dir


def daily(days: range, customers: int, frauds: dict[tuple[int, int], int] | None = None) -> pd.DataFrame:
    """One transaction per customer per day; `frauds` maps (day, customer) to 1."""
    rows = [
        {"day": d, "customer_id": c, "fraud": (frauds or {}).get((d, c), 0)}
        for d in days
        for c in range(customers)
    ]
    return pd.DataFrame(rows)


def test_blocks_follow_each_other_with_the_delay_between():
    split = DelayedSplit.starting("2018-07-25", train_days=7, delay_days=7, test_days=7)
    assert split.dates() == {
        "train": "2018-07-25..2018-07-31",
        "delay": "2018-08-01..2018-08-07",
        "test": "2018-08-08..2018-08-14",
    }
    train, test = split.apply(daily(range(100, 140), 3))
    assert train["day"].max() < split.train_start + 7 <= split.test_start - 7
    assert test["day"].min() == split.test_start and test["day"].max() == split.test_stop - 1


def test_a_card_known_compromised_by_a_test_day_is_left_out_of_it():
    split = DelayedSplit(train_start=10, train_days=5, delay_days=3, test_days=4)  # test days 18..21
    frame = daily(range(0, 30), 4, frauds={(12, 0): 1, (15, 1): 1, (5, 2): 1})
    _, test = split.apply(frame)
    by_day = test.groupby("day")["customer_id"].apply(set).to_dict()
    # customer 0's fraud (day 12, training) is known everywhere; customer 1's (day 15) from day 19
    # (3 days of delay); customer 2's fraud predates the training block, as in the handbook
    assert by_day == {18: {1, 2, 3}, 19: {2, 3}, 20: {2, 3}, 21: {2, 3}}


def test_no_label_from_after_the_training_block_reaches_training():
    split = DelayedSplit(train_start=40, train_days=7, delay_days=7, test_days=7)
    rows = daily(range(0, 70), 5, frauds={(d, d % 5): 1 for d in range(0, 70, 3)})
    rows["timestamp"] = pd.Timestamp("2018-04-01") + pd.to_timedelta(rows["day"], unit="D")
    rows["terminal_id"] = rows["customer_id"] % 2
    rows["amount"] = 1.0 + rows.index % 7
    train, _ = split.apply(with_features(rows))
    leaked = rows.copy()
    leaked.loc[leaked["day"] >= split.train_start + split.train_days, "fraud"] = 1  # labels from later
    train_leaked, _ = split.apply(with_features(leaked))
    pd.testing.assert_frame_equal(train[FEATURES + ["fraud"]], train_leaked[FEATURES + ["fraud"]])


def test_card_precision_counts_each_compromised_card_once():
    frame = pd.DataFrame(
        {"day": [0, 0, 0, 1, 1, 1], "customer_id": [1, 2, 3, 1, 2, 3], "fraud": [1, 0, 0, 1, 1, 0]}
    )
    scores = [0.9, 0.8, 0.1, 0.9, 0.5, 0.4]
    # day 0: top 2 = cards 1 (fraud), 2 -> 0.5; day 1: card 1 blocked, top 2 = cards 2 (fraud), 3 -> 0.5
    assert card_precision_at_k(frame, pd.Series(scores).to_numpy(), k=2) == [0.5, 0.5]
    with pytest.raises(ValueError, match="both frauds and genuine"):
        fraud_metrics(frame[frame["fraud"] == 1], pd.Series([0.5] * 3).to_numpy())


@pytest.mark.slow
def test_the_handbook_test_week_on_the_real_data():
    frame = read_transactions(dataset_dir("fraud_handbook_simulated") / FILE, days=(108, 136))
    train, test = DelayedSplit.starting("2018-07-25").apply(frame)
    # the handbook's chapter 3: 67,240 training transactions (598 frauds), 58,264 test (385)
    assert (len(train), int(train["fraud"].sum())) == (67_240, 598)
    assert (len(test), int(test["fraud"].sum())) == (58_264, 385)
