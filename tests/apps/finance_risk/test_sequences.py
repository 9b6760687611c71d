"""Card series: each transaction with its card's earlier transactions in order, left-padded, with
the gaps between them.

.venv/bin/python -m pytest tests/apps/finance_risk/test_sequences.py -q
"""

import numpy as np
import pandas as pd
import pytest

from apps.finance_risk.features import with_features
from apps.finance_risk.sequences import EVENT_FEATURES, card_series

T0 = pd.Timestamp("2018-04-02 12:00:00")


def frame(customers: list[int], minutes: list[float]) -> pd.DataFrame:
    rows = pd.DataFrame({
        "transaction_id": np.arange(len(customers)) + 100,
        "timestamp": [T0 + pd.Timedelta(minutes=m) for m in minutes],
        "customer_id": customers, "terminal_id": 1, "amount": 10.0, "fraud": 0,
    })  # fmt: skip
    return with_features(rows)


def test_a_row_reads_its_own_card_history_oldest_first_left_padded():
    series = card_series(frame([1, 2, 1, 1, 2], [0, 1, 2, 5, 9]), length=3)
    assert series.events_NTF.shape == (5, 3, len(EVENT_FEATURES))
    assert series.history_ids_NT[3].tolist() == [100, 102, 103]  # customer 1's three, this one last
    assert series.history_ids_NT[4].tolist() == [-1, 101, 104]  # customer 2: one earlier, padded
    assert series.mask_NT[4].tolist() == [False, True, True]
    assert series.gaps_NT[3].tolist() == [0.0, 120.0, 180.0]  # seconds since the card's previous one
    assert series.gaps_NT[4].tolist() == [0.0, 0.0, 480.0]
    assert (series.events_NTF[4, 0] == 0).all()  # padding carries no values


def test_rows_must_be_in_time_order():
    rows = frame([1, 1], [0, 1]).iloc[::-1]
    with pytest.raises(ValueError, match="time order"):
        card_series(rows, length=2)
