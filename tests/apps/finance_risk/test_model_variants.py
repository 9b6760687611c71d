"""`FraudModel.variants`, the scorer's fast path, against `forward`, its reference: P variants of
a transaction's features read with one history give the logits of P separate passes, and the
attention over the history is that of the transaction's own pass and never falls on padding.

.venv/bin/python -m pytest tests/apps/finance_risk/test_model_variants.py -q
"""

import numpy as np
import torch

from apps.finance_risk.features import FEATURES
from apps.finance_risk.model import FraudModel, FraudModelConfig, Scaler
from apps.finance_risk.sequences import EVENT_FEATURES

CONFIG = FraudModelConfig.preset("tiny")


def batch(seed: int) -> tuple[torch.Tensor, ...]:
    """3 cards of CONFIG.history events, the first two left-padded, and 5 variants of features."""
    g = torch.Generator().manual_seed(seed)
    B, T, P = 3, CONFIG.history, 5
    mask_BT = torch.ones(B, T, dtype=torch.bool)
    mask_BT[0, :1], mask_BT[1, :-1] = False, False  # card 1: a cold start, only the transaction itself
    events_BTF = torch.randn(B, T, len(EVENT_FEATURES), generator=g)
    return (
        events_BTF,
        torch.rand(B, T, generator=g) * 1e4,
        mask_BT,
        torch.randn(B, P, len(FEATURES), generator=g),
    )


def model() -> FraudModel:
    torch.manual_seed(0)
    return FraudModel(CONFIG, scaler=Scaler.fit(np.random.default_rng(0).random((10, len(FEATURES))))).eval()


def test_variants_give_the_logits_of_separate_passes():
    fraud, (events, gaps, mask, aggregates_BPA) = model(), batch(seed=1)
    with torch.no_grad():
        logits_BP, _ = fraud.variants(events, gaps, mask, aggregates_BPA)
        separate_BP = torch.stack([fraud(events, gaps, mask, aggregates_BPA[:, p]) for p in range(5)], dim=1)
    assert torch.allclose(logits_BP, separate_BP, atol=1e-5)
    assert logits_BP.std(dim=1).min() > 0  # the variants do differ


def test_attention_reads_only_real_history():
    fraud, (events, gaps, mask, aggregates_BPA) = model(), batch(seed=2)
    with torch.no_grad():
        _, weights_BT = fraud.variants(events, gaps, mask, aggregates_BPA)
    assert (weights_BT[~mask] == 0).all()
    assert (weights_BT[mask] > 0).all()
    assert (weights_BT.sum(dim=1) <= 1 + 1e-6).all()  # the rest is the transaction's own token


def test_attention_is_that_of_the_transactions_own_pass():
    fraud, (events, gaps, mask, aggregates_BPA) = model(), batch(seed=3)
    last = fraud.trunk.layers[-1].self_attn
    captured: list[tuple] = []
    hook = last.register_forward_pre_hook(lambda _, args: captured.append(args))
    with torch.no_grad():
        fraud(events, gaps, mask, aggregates_BPA[:, 0])
        hook.remove()
        T = CONFIG.history
        reference_BT = last.weights(*captured[0])[:, :, T, :T].mean(dim=1)
        _, weights_BT = fraud.variants(events, gaps, mask, aggregates_BPA)
    assert torch.allclose(weights_BT, reference_BT, atol=1e-6)
