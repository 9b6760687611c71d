"""Scoring: a saved model loads back with the same scores, and a transaction scored from only the
history a live scorer would fetch gets the score the whole data gives it.

.venv/bin/python -m pytest tests/apps/finance_risk/test_scoring.py -q
"""

import numpy as np
import pytest

from apps.finance_risk.features import FEATURES, with_features
from apps.finance_risk.model import FraudModel, FraudModelConfig, Scaler, load_fraud_model, save_fraud_model
from apps.finance_risk.scoring import history_for, score_frame
from apps.finance_risk.sequences import card_series
from apps.finance_risk.transactions import FILE, read_transactions
from core_model.datasets import dataset_dir


@pytest.fixture(scope="module")
def model():
    rng = np.random.default_rng(0)
    scaler = Scaler.fit(rng.random((50, len(FEATURES))) * 100)
    return FraudModel(FraudModelConfig.preset("tiny"), scaler=scaler).eval()


@pytest.fixture(scope="module")
def transactions():
    return read_transactions(dataset_dir("fraud_handbook_simulated") / FILE, days=(130, 140))


def test_a_saved_model_scores_the_same_after_loading(model, transactions, tmp_path):
    frame = transactions.iloc[-3000:]
    save_fraud_model(model, tmp_path / "fraud", metrics={"ap": 0.5})
    loaded, card = load_fraud_model(tmp_path / "fraud")
    assert card["metrics"] == {"ap": 0.5} and card["features"] == FEATURES
    np.testing.assert_allclose(score_frame(loaded, frame), score_frame(model, frame), rtol=1e-5, atol=1e-6)


def test_a_transaction_scores_the_same_from_its_fetched_history(model, transactions):
    whole = score_frame(model, transactions)
    features = with_features(transactions)  # as a store keeps each transaction's, once scored
    series = card_series(features, length=model.config.history)
    rng = np.random.default_rng(1)
    for row in rng.choice(np.flatnonzero(transactions["day"] >= 139), size=5, replace=False):
        needed = history_for(features, row=int(row), history=model.config.history)
        derived = [name for name in FEATURES if name != "amount"]
        needed.loc[needed.index[-1], derived] = np.nan  # the new transaction: no features yet
        assert len(needed) < 400  # a few hundred rows, not the data set
        # what the model reads is the same to the bit ...
        fetched = with_features(needed)
        np.testing.assert_array_equal(fetched[FEATURES].to_numpy()[-1], features[FEATURES].to_numpy()[row])
        fetched_series = card_series(needed.fillna(fetched), length=model.config.history)
        np.testing.assert_array_equal(fetched_series.history_ids_NT[-1], series.history_ids_NT[row])
        np.testing.assert_array_equal(fetched_series.events_NTF[-1], series.events_NTF[row])
        np.testing.assert_array_equal(fetched_series.gaps_NT[-1], series.gaps_NT[row])
        # ... and the score up to float rounding (batches of other sizes; routing near a tie)
        assert score_frame(model, needed)[-1] == pytest.approx(whole[row], abs=1e-3)


def test_a_model_folder_that_is_not_one_is_refused(tmp_path):
    with pytest.raises(ValueError, match="not a fraud model"):
        load_fraud_model(tmp_path)
