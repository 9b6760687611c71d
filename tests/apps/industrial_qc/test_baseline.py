"""The CNN baseline: the same two outputs as the QC model at the same grid, no more parameters,
the same image-size check, and it learns the synthetic task and trains on real NEU images.

.venv/bin/python -m pytest -q tests/apps/industrial_qc/test_baseline.py
"""

from dataclasses import replace

import numpy as np
import pytest
import torch

from apps.industrial_qc.baseline import CNNBaseline
from apps.industrial_qc.model import QCModel, QCModelConfig

from .test_model import CONFIG, neu_batch, one_training_step, train_on_synthetic


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_same_outputs_as_the_qc_model_and_no_more_parameters(preset):
    config = QCModelConfig.preset(preset)
    baseline, model = CNNBaseline(config).eval(), QCModel(config).eval()
    images = torch.rand(2, 3, config.image_size, config.image_size)
    with torch.no_grad():
        shapes = [tuple(t.shape) for t in baseline(images)]
        assert shapes == [tuple(t.shape) for t in model(images)]
    assert shapes == [
        (2, config.num_classes),
        (2, config.num_cells, config.num_classes + 1),
        (2, config.num_cells, 4),
    ]
    assert baseline.num_parameters() <= model.num_parameters()


def test_cells_are_row_major_like_the_models():
    # Cell q = r * G + c of the output is the localiser's map at row r, column c.
    baseline = CNNBaseline(CONFIG).eval()
    images = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        cell_logits_BQL = baseline(images)[1]
        map_BLGG = baseline.localiser(baseline.features((images - CONFIG.pixel_mean) / CONFIG.pixel_std))
    G = CONFIG.cells_per_side
    assert torch.allclose(cell_logits_BQL[0, 1 * G + 3], map_BLGG[0, :, 1, 3])
    assert torch.allclose(cell_logits_BQL[0, 7 * G + 0], map_BLGG[0, :, 7, 0])


def test_only_the_configured_image_size_is_accepted():
    with pytest.raises(ValueError, match=r"images must be \[B, 3, 32, 32\]"):
        CNNBaseline(CONFIG)(torch.rand(2, 3, 64, 64))


def test_a_tiny_baseline_learns_what_and_where():
    torch.manual_seed(0)
    # Twice the tiny preset's width: at 8 channels it learns the cells too slowly for a fast test.
    scores = train_on_synthetic(CNNBaseline(replace(CONFIG, num_classes=2), width=16), steps=100)
    assert scores["accuracy"] > 0.9, scores
    assert scores["object_patches"] > 0.75, scores
    assert scores["background_patches"] > 0.95, scores


def test_one_training_step_on_real_neu_images_at_the_small_preset():
    config = QCModelConfig.preset("small")
    images, labels, targets = neu_batch(config)
    loss = one_training_step(CNNBaseline(config), images, labels, targets)
    assert np.isfinite(loss) and loss > 0


def test_the_baseline_exports_with_a_dynamic_batch():
    baseline = CNNBaseline(CONFIG).eval()
    batch = torch.export.Dim("batch", min=1, max=64)
    exported = torch.export.export(
        baseline, (torch.rand(2, 3, 32, 32),), dynamic_shapes={"images_BCSS": {0: batch}}
    )
    more = torch.rand(5, 3, 32, 32)
    for ours, theirs in zip(exported.module()(more), baseline(more), strict=True):
        assert torch.allclose(ours, theirs, atol=1e-5)
