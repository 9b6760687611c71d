"""The fraud model: a fraud logit per transaction from its card's series and its features, blind
to padding, and trainable: a tiny one learns a planted pattern, and fine-tuning continues it.

.venv/bin/python -m pytest tests/apps/finance_risk/test_model.py -q
"""

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from apps.finance_risk.features import FEATURES
from apps.finance_risk.model import FraudModel, FraudModelConfig, Scaler
from apps.finance_risk.sequences import EVENT_FEATURES
from apps.finance_risk.training import Examples, TrainingConfig, evaluation_loss, fine_tune, fit, predict

CONFIG = FraudModelConfig.preset("tiny")


def examples(n: int, seed: int) -> Examples:
    """Fraud when the card's previous event (not this one) has a large first feature."""
    g = torch.Generator().manual_seed(seed)
    T, F, A = CONFIG.history, len(EVENT_FEATURES), len(FEATURES)
    events = torch.randn(n, T, F, generator=g)
    labels = (events[:, -2, 0] > 1.6).float()
    return Examples(events, torch.rand(n, T, generator=g) * 1e4, torch.ones(n, T, dtype=torch.bool),
                    torch.randn(n, A, generator=g), labels)  # fmt: skip


def test_padding_does_not_change_a_score():
    torch.manual_seed(0)
    model = FraudModel(CONFIG, scaler=Scaler.fit(np.random.rand(10, len(FEATURES)))).eval()
    batch = examples(4, seed=1)
    mask = batch.mask_NT.clone()
    mask[:, :2] = False
    events = batch.events_NTF.clone()
    before = model(events, batch.gaps_NT, mask, batch.aggregates_NA)
    events[:, :2] = 99.0  # what padding holds is never read
    after = model(events, batch.gaps_NT, mask, batch.aggregates_NA)
    assert before.shape == (4,)
    torch.testing.assert_close(before, after)


@pytest.mark.slow
def test_a_tiny_model_learns_a_pattern_in_the_card_history():
    train, test = examples(3000, seed=2), examples(1000, seed=3)
    model, history = fit(CONFIG, train, training=TrainingConfig(epochs=6, batch_size=128, lr=1e-2),
                         evaluate=lambda m: float(average_precision_score(test.labels_N, predict(m, test))),
                         progress=False)  # fmt: skip
    assert len(history) == 6
    assert history[-1] > 0.8 > 10 * test.labels_N.mean().item()  # far above chance (the fraud rate)


def test_fine_tuning_lowers_the_loss_on_its_data_and_keeps_the_scaler():
    model, _ = fit(
        CONFIG, examples(256, seed=4), training=TrainingConfig(epochs=1, batch_size=64), progress=False
    )
    new = examples(256, seed=5)
    new = Examples(new.events_NTF, new.gaps_NT, new.mask_NT, new.aggregates_NA * 3 + 5, new.labels_N)
    weights = {name: value.clone() for name, value in model.state_dict().items()}
    tuned, _ = fine_tune(
        model, new, training=TrainingConfig(epochs=3, batch_size=64, lr=3e-3), progress=False
    )
    assert evaluation_loss(tuned, new) < evaluation_loss(model, new)
    torch.testing.assert_close(tuned.scaler.mean_A, weights["scaler.mean_A"])  # not refitted to `new`
    torch.testing.assert_close(tuned.scaler.scale_A, weights["scaler.scale_A"])
    for name, value in model.state_dict().items():  # the model tuned from is left as it was
        torch.testing.assert_close(value, weights[name])
