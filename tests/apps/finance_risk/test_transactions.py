"""Reading transactions: the handbook's CSV layout, in time order, and errors that name the file
and the line.

.venv/bin/python -m pytest tests/apps/finance_risk/test_transactions.py -q
"""

import pytest

from apps.finance_risk.transactions import TransactionsError, read_transactions

HEADER = (
    "TRANSACTION_ID,TX_DATETIME,CUSTOMER_ID,TERMINAL_ID,TX_AMOUNT,TX_TIME_SECONDS,TX_TIME_DAYS,"
    "TX_FRAUD,TX_FRAUD_SCENARIO"
)


def write(tmp_path, *rows: str):
    path = tmp_path / "transactions.csv"
    path.write_text("\n".join([HEADER, *rows]) + "\n")
    return path


def test_rows_come_back_in_time_order_with_our_names(tmp_path):
    path = write(
        tmp_path,
        "1,2018-04-01 00:05:00,7,3,12.5,300,0,0,0",
        "0,2018-04-01 00:01:00,8,3,99.0,60,0,1,2",
    )
    frame = read_transactions(path)
    assert frame["transaction_id"].tolist() == [0, 1]
    assert frame.loc[0, "fraud"] == 1 and frame.loc[1, "amount"] == 12.5
    assert str(frame["timestamp"].dtype).startswith("datetime64")


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("1,2018-04-31 00:05:00,7,3,12.5,300,0,0,0", "line 3: timestamp is not"),
        ("1,2018-04-01 00:05:00,7,3,-2,300,0,0,0", "line 3: amount is negative"),
        ("1,2018-04-01 00:05:00,7,3,2,300,0,5,0", "line 3: TX_FRAUD is not 0 or 1"),
        ("0,2018-04-01 00:05:00,7,3,2,300,0,0,0", "line 3: TRANSACTION_ID repeats"),
    ],
)
def test_a_bad_row_is_named_by_file_and_line(tmp_path, row, message):
    path = write(tmp_path, "0,2018-04-01 00:01:00,8,3,99.0,60,0,1,2", row)
    with pytest.raises(TransactionsError, match=message) as error:
        read_transactions(path)
    assert str(path) in str(error.value)


def test_a_missing_column_or_file_is_named(tmp_path):
    path = tmp_path / "short.csv"
    path.write_text("TRANSACTION_ID,TX_DATETIME\n0,2018-04-01 00:01:00\n")
    with pytest.raises(TransactionsError, match="short.csv"):
        read_transactions(path)
    with pytest.raises(TransactionsError, match="no such file"):
        read_transactions(tmp_path / "absent.csv")
