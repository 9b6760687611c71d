"""The scoring pass exported to ONNX: onnxruntime gives `FraudModel.variants`' logits and attention,
and the loader exports only when the weights are newer than the export.

.venv/bin/python -m pytest tests/apps/finance_risk/test_export.py -q
"""

import os

import numpy as np
import pytest
import torch

from apps.finance_risk.export import ONNX_FILE, OnnxScoringPass, export_onnx, load_scoring_pass
from apps.finance_risk.features import FEATURES
from apps.finance_risk.model import WEIGHTS, FraudModel, FraudModelConfig, Scaler, save_fraud_model
from apps.finance_risk.sequences import EVENT_FEATURES
from apps.industrial_qc.export import OnnxModel

CONFIG = FraudModelConfig.preset("tiny")
A = len(FEATURES)


def inputs(batch: int, seed: int) -> tuple[torch.Tensor, ...]:
    """`batch` cards (the first a cold start: only the transaction itself), P = A + 1 variants."""
    g = torch.Generator().manual_seed(seed)
    T = CONFIG.history
    mask_BT = torch.rand(batch, T, generator=g) > 0.3
    mask_BT[:, -1] = True
    mask_BT[0, :-1] = False
    return (
        torch.randn(batch, T, len(EVENT_FEATURES), generator=g),
        torch.rand(batch, T, generator=g) * 1e4,
        mask_BT,
        torch.randn(batch, A + 1, A, generator=g),
    )


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    model = FraudModel(CONFIG, scaler=Scaler.fit(np.random.default_rng(0).random((10, A)) * 100)).eval()
    return model, save_fraud_model(model, tmp_path_factory.mktemp("fraud") / "model", metrics={})


@pytest.mark.parametrize("batch", [1, 7])
def test_onnxruntime_gives_the_variants_of_pytorch(saved, batch):
    model, directory = saved
    scoring_pass = load_scoring_pass(model, directory, backend="onnx")
    assert isinstance(scoring_pass, OnnxScoringPass)
    args = inputs(batch, seed=batch)
    with torch.inference_mode():
        expected_BP, expected_BT = model.variants(*args)
    logits_BP, weights_BT = scoring_pass(*args)
    assert logits_BP.shape == (batch, A + 1) and weights_BT.shape == (batch, CONFIG.history)
    torch.testing.assert_close(logits_BP, expected_BP, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(weights_BT, expected_BT, atol=1e-6, rtol=1e-5)
    assert (weights_BT[0, :-1] == 0).all()  # the cold start's attention never falls on padding


def test_the_torch_backend_is_the_model_itself(saved):
    model, directory = saved
    args = inputs(3, seed=5)
    with torch.inference_mode():
        expected_BP, _ = model.variants(*args)
    torch.testing.assert_close(load_scoring_pass(model, directory, backend="torch")(*args)[0], expected_BP)
    with pytest.raises(ValueError, match="unknown backend 'tensorrt'; backends: torch, onnx"):
        load_scoring_pass(model, directory, backend="tensorrt")  # type: ignore[arg-type]


def test_the_export_is_redone_only_when_the_weights_are_newer(saved, tmp_path):
    model, _ = saved
    directory = save_fraud_model(model, tmp_path / "model", metrics={})
    load_scoring_pass(model, directory, backend="onnx")
    onnx_path = directory / ONNX_FILE
    exported_at = onnx_path.stat().st_mtime_ns
    load_scoring_pass(model, directory, backend="onnx")
    assert onnx_path.stat().st_mtime_ns == exported_at  # fresh: read as it is
    later = exported_at / 1e9 + 10
    os.utime(directory / WEIGHTS, (later, later))  # weights replaced after the export
    load_scoring_pass(model, directory, backend="onnx")
    assert onnx_path.stat().st_mtime_ns > exported_at


def test_a_file_that_is_not_an_export_is_refused(saved, tmp_path):
    model, _ = saved
    with pytest.raises(ValueError, match="no such ONNX model file"):
        OnnxScoringPass(tmp_path / "missing.onnx")
    (tmp_path / "garbage.onnx").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a readable ONNX model"):
        OnnxScoringPass(tmp_path / "garbage.onnx")
    other = export_onnx(model, tmp_path / "other.onnx")  # the names checked are each model's own
    with pytest.raises(ValueError, match="not an exported QC model"):
        OnnxModel(other)
