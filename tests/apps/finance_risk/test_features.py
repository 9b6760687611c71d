"""The handbook's features on a hand-made history: customer windows count and average what they
should, terminal risk sees only labels at least the delay old.

.venv/bin/python -m pytest tests/apps/finance_risk/test_features.py -q
"""

import pandas as pd
import pytest

from apps.finance_risk.features import FEATURES, handbook_features

DAY = pd.Timedelta(days=1)
T0 = pd.Timestamp("2018-04-02 12:00:00")  # a Monday


def history(rows: list[tuple[pd.Timestamp, int, int, float, int]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["timestamp", "customer_id", "terminal_id", "amount", "fraud"])


def test_customer_windows_count_and_average_the_days_up_to_the_transaction():
    frame = history([
        (T0, 1, 10, 10.0, 0),
        (T0 + 0.5 * DAY, 1, 11, 30.0, 0),
        (T0 + 3 * DAY, 1, 12, 50.0, 0),   # 1 day window: itself only
        (T0 + 3 * DAY, 2, 12, 99.0, 0),   # another customer: not counted for customer 1
        (T0 + 40 * DAY, 1, 12, 70.0, 0),  # 30 days later: a fresh 30-day window
    ])  # fmt: skip
    features = handbook_features(frame)
    assert list(features.columns) == FEATURES
    assert features["customer_tx_1d"].tolist() == [1, 2, 1, 1, 1]
    assert features["customer_tx_7d"].tolist() == [1, 2, 3, 1, 1]
    assert features.loc[1, "customer_mean_amount_1d"] == pytest.approx(20.0)
    assert features.loc[2, "customer_mean_amount_7d"] == pytest.approx(30.0)
    assert features.loc[4, "customer_mean_amount_30d"] == pytest.approx(70.0)


def test_weekend_and_night_flags():
    frame = history([(pd.Timestamp("2018-04-07 03:00"), 1, 1, 1.0, 0), (T0, 1, 1, 1.0, 0)])  # Sat 3am
    features = handbook_features(frame)
    assert features["weekend"].tolist() == [1.0, 0.0]
    assert features["night"].tolist() == [1.0, 0.0]


def test_terminal_risk_uses_only_labels_older_than_the_delay():
    frame = history([
        (T0, 1, 7, 5.0, 1),                 # a fraud at the terminal on day 0
        (T0 + 0.2 * DAY, 2, 7, 5.0, 0),     # a genuine one on day 0
        (T0 + 3 * DAY, 3, 7, 5.0, 1),       # day 3: within the delay of every later row here
        (T0 + 7.5 * DAY, 4, 7, 5.0, 0),     # 7.5 days after the first fraud
        (T0 + 9.0 * DAY, 5, 7, 5.0, 0),     # 9 days: day 0 left the 1-day window, day 3 not known
    ])  # fmt: skip
    features = handbook_features(frame, delay_days=7)
    assert features.loc[3, "terminal_tx_1d"] == 2 and features.loc[3, "terminal_risk_1d"] == 0.5
    assert features.loc[4, "terminal_tx_1d"] == 0 and features.loc[4, "terminal_risk_1d"] == 0.0
    assert features.loc[4, "terminal_tx_7d"] == 2 and features.loc[4, "terminal_risk_7d"] == 0.5
    assert features.loc[2, "terminal_tx_30d"] == 0  # the first two are only 3 days old: not known


def test_a_transaction_features_do_not_change_with_later_or_recent_labels():
    rows = [(T0 + k * 0.7 * DAY, k % 3, k % 2, float(k), 0) for k in range(40)]
    frame = history(rows)
    before = handbook_features(frame)
    relabelled = frame.copy()
    # label every transaction of the last 7 days before row 30 (and everything after it) as fraud
    recent = relabelled["timestamp"] > relabelled.loc[30, "timestamp"] - 7 * DAY
    relabelled.loc[recent, "fraud"] = 1
    after = handbook_features(relabelled)
    pd.testing.assert_series_equal(before.loc[30], after.loc[30])
    assert not before.loc[39].equals(after.loc[39])  # a row later on does see the old labels
