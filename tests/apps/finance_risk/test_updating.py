"""Continual updates: which days an update learns from, which labels it may read (only those that
had arrived by its cutoff), its errors, and the model it writes. Real SQLite files, a tiny model.

.venv/bin/python -m pytest tests/apps/finance_risk/test_updating.py -q
"""

from datetime import UTC, date, datetime, timedelta

import numpy as np
import pytest
import torch

from apps.cli import main
from apps.finance_risk.export import ONNX_FILE
from apps.finance_risk.features import FEATURES
from apps.finance_risk.model import (
    WEIGHTS,
    FraudModel,
    FraudModelConfig,
    Scaler,
    load_fraud_model,
    save_fraud_model,
)
from apps.finance_risk.store import TransactionStore
from apps.finance_risk.updating import UpdateError, plan_update, update_rows
from core_model.onnx_export import is_stale

T0 = datetime(2018, 9, 1, tzinfo=UTC)  # 20 days of 6 transactions: 2018-09-01..20, the last at 17:00
DAYS = 20


def chargeback(transaction_id: str, arrived_at: datetime) -> dict:
    return {"transaction_id": transaction_id, "fraud": 1, "source": "chargeback", "arrived_at": arrived_at}


@pytest.fixture
def url(tmp_path) -> str:
    """Customer c0's transactions are frauds, each charged back 2 days later; two more frauds of
    2018-09-10 are charged back late: t9-1 on 09-20 at noon, t9-2 on 10-01."""
    url = f"sqlite:///{tmp_path / 'fr.db'}"
    store = TransactionStore(url)
    rows = [
        {"transaction_id": f"t{day}-{i}", "customer_id": f"c{i % 3}", "terminal_id": f"m{i % 2}",
         "amount": 10.0 + 7 * i + day, "timestamp": T0 + timedelta(days=day, hours=2 + 3 * i)}
        for day in range(DAYS) for i in range(6)
    ]  # fmt: skip
    store.add_transactions(rows)
    store.add_labels(chargeback(r["transaction_id"], r["timestamp"] + timedelta(days=2))
                     for r in rows if r["customer_id"] == "c0")  # fmt: skip
    store.add_labels([chargeback("t9-1", datetime(2018, 9, 20, 12, tzinfo=UTC)),
                      chargeback("t9-2", datetime(2018, 10, 1, tzinfo=UTC))])  # fmt: skip
    store.close()
    return url


@pytest.fixture
def model_dir(tmp_path):
    torch.manual_seed(0)
    model = FraudModel(FraudModelConfig.preset("tiny"), scaler=Scaler.fit(np.random.rand(10, len(FEATURES))))
    return save_fraud_model(model, tmp_path / "model", metrics={})


def test_an_update_reads_no_label_that_arrived_after_its_cutoff(url):
    store = TransactionStore(url)
    oldest, newest = store.time_range()
    plan = plan_update({}, oldest=oldest, newest=newest, through=date(2018, 9, 12), days=None)
    assert (plan.first_day, plan.last_day) == (date(2018, 9, 1), date(2018, 9, 12))
    assert plan.labels_known_at == datetime(2018, 9, 20, tzinfo=UTC)  # the end of 09-12, plus 7 days
    frame, tuned = update_rows(store, plan)
    store.close()
    rows = frame.iloc[tuned].set_index("transaction_id")
    assert rows["timestamp"].min() >= datetime(2018, 9, 1) and rows["timestamp"].max() < datetime(2018, 9, 13)
    assert rows.loc["t9-0", "fraud"] == 1  # charged back on 09-12
    assert rows.loc[["t9-1", "t9-2"], "fraud"].tolist() == [0, 0]  # charged back after 09-20 00:00
    assert not rows.loc[["t9-1", "t9-2"], "labelled"].any()


def test_an_update_starts_after_the_days_the_model_learned_and_refuses_unlabelled_days(url):
    store = TransactionStore(url)
    oldest, newest = store.time_range()
    store.close()
    card = {"updates": [{"first_day": "2018-09-01", "last_day": "2018-09-05"}]}
    plan = plan_update(card, oldest=oldest, newest=newest, through=None, days=None)
    assert (plan.first_day, plan.last_day) == (date(2018, 9, 6), date(2018, 9, 13))  # 09-20 17:00 - 7 days
    assert plan.labels_known_at == newest  # never after the store's newest transaction
    assert plan_update(card, oldest=oldest, newest=newest, through=None, days=3).first_day == date(
        2018, 9, 11
    )
    with pytest.raises(UpdateError, match="the labels of 2018-09-14 have not all arrived"):
        plan_update(card, oldest=oldest, newest=newest, through=date(2018, 9, 14), days=None)
    with pytest.raises(UpdateError, match="no newly labelled days"):
        plan_update(card, oldest=oldest, newest=newest, through=date(2018, 9, 5), days=None)


def test_update_without_a_model_is_a_usage_error(url, tmp_path, capsys):
    assert main(["finance", "update", "--model", str(tmp_path / "none"), "--database", url]) == 2
    assert "verticals: error: no fraud model at" in capsys.readouterr().err


def test_update_without_labels_in_range_is_a_usage_error(model_dir, tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'bare.db'}"
    store = TransactionStore(url)
    store.add_transactions([{"transaction_id": f"t{d}", "customer_id": "c", "terminal_id": "m", "amount": 1.0,
                             "timestamp": T0 + timedelta(days=d)} for d in range(10)])  # fmt: skip
    store.close()
    assert main(["finance", "update", "--model", str(model_dir), "--database", url, "--no-progress"]) == 2
    assert "verticals: error: no labelled transactions in 2018-09-01..2018-09-03" in capsys.readouterr().err


def test_update_writes_a_model_that_loads_and_records_its_days(url, model_dir, capsys):
    before = load_fraud_model(model_dir)[0].state_dict()
    command = [
        "finance",
        "update",
        "--model",
        str(model_dir),
        "--database",
        url,
        "--epochs",
        "1",
        "--no-progress",
    ]
    assert main([*command, "--through", "2018-09-12"]) == 0
    model, card = load_fraud_model(model_dir)
    assert not is_stale(model_dir / ONNX_FILE, model_dir / WEIGHTS)  # a scorer swaps without exporting
    (update,) = card["updates"]
    assert (update["first_day"], update["last_day"], update["frauds"]) == ("2018-09-01", "2018-09-12", 24)
    assert not torch.equal(model.state_dict()["head.classifier.weight"], before["head.classifier.weight"])
    torch.testing.assert_close(model.scaler.mean_A, before["scaler.mean_A"])  # the scaler is kept
    previous, _ = load_fraud_model(model_dir.with_name("model.previous"))
    torch.testing.assert_close(
        previous.state_dict()["head.classifier.weight"], before["head.classifier.weight"]
    )
    assert main(command) == 0  # the next update starts after the days of the first
    assert [u["first_day"] for u in load_fraud_model(model_dir)[1]["updates"]] == ["2018-09-01", "2018-09-13"]
    assert "fine-tuned on 2018-09-13..2018-09-13" in capsys.readouterr().out
