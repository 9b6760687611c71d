"""ONNX export of the inspection model: onnxruntime agrees with PyTorch, and the backend loader.

.venv/bin/python -m pytest tests/apps/industrial_qc/test_export.py -q
"""

import os
import shutil

import pytest
import torch

from apps.industrial_qc import export
from apps.industrial_qc.export import OnnxModel, export_onnx, load_backend
from apps.industrial_qc.model import WEIGHTS, QCModel, QCModelConfig, save_qc_model
from core_model import attention
from core_model.moe import moe_layers

TINY = QCModelConfig.preset("tiny")
NAMES = ["crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The tiny model exported once from train mode: (model in eval mode, its .onnx, the model's
    mode and dispatches right after the export). The rotary index cache starts empty, so the
    export's trace is the first to ask for it: eager forwards after it must still work."""
    attention._cached_rope_orders.cache_clear()
    torch.manual_seed(0)
    model = QCModel(TINY).train()
    path = export_onnx(model, tmp_path_factory.mktemp("onnx") / "model.onnx")
    after = (model.training, {layer.dispatch for _, layer in moe_layers(model)})
    return model.eval(), path, after


def _assert_agree(model, onnx_model, images):
    with torch.no_grad():
        expected = model(images)
    for ours, theirs in zip(onnx_model(images), expected, strict=True):
        assert ours.shape == theirs.shape
        assert (ours - theirs).abs().max() < 1e-4


@pytest.mark.parametrize("batch", [1, 3])
def test_onnxruntime_agrees_with_pytorch_at_any_batch(exported, batch):
    model, path, _ = exported
    _assert_agree(model, OnnxModel(path), torch.rand(batch, 3, TINY.image_size, TINY.image_size))


@pytest.mark.slow
def test_onnxruntime_agrees_with_pytorch_on_the_small_preset(tmp_path):
    config = QCModelConfig.preset("small")
    model = QCModel(config).eval()
    path = export_onnx(model, tmp_path / "model.onnx")
    _assert_agree(model, OnnxModel(path), torch.rand(2, 3, config.image_size, config.image_size))


def test_export_gives_the_model_back_its_mode_and_dispatch(exported):
    _, _, (training, dispatches) = exported
    assert training and dispatches == {"grouped"}


def test_onnx_model_refuses_images_of_the_wrong_size(exported):
    _, path, _ = exported
    with pytest.raises(ValueError, match=r"images must be \[B, 3, 32, 32\]"):
        OnnxModel(path)(torch.rand(1, 3, 64, 64))


def test_a_missing_or_corrupt_file_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no such ONNX model file"):
        OnnxModel(tmp_path / "absent.onnx")
    corrupt = tmp_path / "model.onnx"
    corrupt.write_bytes(b"not a protobuf")
    with pytest.raises(ValueError, match="not a readable ONNX model"):
        OnnxModel(corrupt)


def test_load_backend_exports_only_when_the_onnx_file_is_missing_or_stale(exported, tmp_path, monkeypatch):
    model, path, _ = exported
    folder = save_qc_model(model, tmp_path / "qc", class_names=NAMES)
    exports = []
    monkeypatch.setattr(export, "export_onnx", lambda _model, to: exports.append(shutil.copy(path, to)))
    onnx_model, card = load_backend(folder, backend="onnx")
    assert isinstance(onnx_model, OnnxModel) and card["class_names"] == NAMES and len(exports) == 1
    load_backend(folder, backend="onnx")
    assert len(exports) == 1  # fresh: used as is
    newer = (folder / "model.onnx").stat().st_mtime + 10
    os.utime(folder / WEIGHTS, (newer, newer))
    load_backend(folder, backend="onnx")
    assert len(exports) == 2  # older than the weights: exported again


def test_load_backend_torch_is_the_model_and_unknown_backends_are_refused(exported, tmp_path):
    model, _, _ = exported
    folder = save_qc_model(model, tmp_path / "qc", class_names=NAMES)
    loaded, _ = load_backend(folder, backend="torch")
    assert isinstance(loaded, QCModel) and not loaded.training
    with pytest.raises(ValueError, match="unknown backend 'tensorrt'"):
        load_backend(folder, backend="tensorrt")  # type: ignore[arg-type]
