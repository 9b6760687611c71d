"""Scoring a frame: a saved model loads back with the same scores; a folder that is not a model
is refused.

.venv/bin/python -m pytest tests/apps/finance_risk/test_scoring.py -q
"""

import numpy as np
import pytest

from apps.finance_risk.features import FEATURES
from apps.finance_risk.model import FraudModel, FraudModelConfig, Scaler, load_fraud_model, save_fraud_model
from apps.finance_risk.scoring import score_frame
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


def test_a_model_folder_that_is_not_one_is_refused(tmp_path):
    with pytest.raises(ValueError, match="not a fraud model"):
        load_fraud_model(tmp_path)
