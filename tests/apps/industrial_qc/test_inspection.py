"""The Inspector: what a finding holds and how it reads the model's outputs (the any-defect
score, a "good" class that is no defect, boxes exactly when a part fails, boxes in the uploaded
image's pixels), loading from a folder, and the overlay.

.venv/bin/python -m pytest -q tests/apps/industrial_qc/test_inspection.py
"""

from __future__ import annotations

import io
from dataclasses import asdict

import pytest
import torch
from PIL import Image

from apps.industrial_qc.dataset import load_image
from apps.industrial_qc.detection import cell_centres
from apps.industrial_qc.inspection import Inspector, NoModel, defect_scores, load_inspector, render_overlay
from apps.industrial_qc.model import QCModelConfig
from tests.apps.industrial_qc.conftest import NEU_CLASSES, png_bytes

CONFIG = QCModelConfig.preset("tiny")  # 32-px images, 8 x 8 cells of 4 px
Q, L = CONFIG.num_cells, CONFIG.num_classes + 1


def fixed_model(
    cell_logits_QL: torch.Tensor,
    class_logits_C: torch.Tensor | None = None,
    *,
    box_4: list[float] | None = None,
):
    """A stand-in model that answers the same outputs for every image (any Forward will do):
    every cell's distances point at `box_4` (input pixels), or at its own cell without one."""
    centres_Q2 = cell_centres(CONFIG.cells_per_side, CONFIG.cell)
    if box_4 is None:
        distances_Q4 = torch.full((Q, 4), CONFIG.cell / 2)
    else:
        box = torch.tensor(box_4, dtype=torch.float32)
        distances_Q4 = torch.cat([centres_Q2 - box[:2], box[2:] - centres_Q2], dim=-1)

    def forward(images_B3SS: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B = len(images_B3SS)
        class_C = class_logits_C if class_logits_C is not None else torch.zeros(CONFIG.num_classes)
        return class_C.expand(B, -1), cell_logits_QL.expand(B, -1, -1), distances_Q4.expand(B, -1, -1)

    return forward


def card(class_names: list[str] = NEU_CLASSES) -> dict:
    return {"model": asdict(CONFIG), "class_names": class_names, "metrics": {}}


def one_defect_logits(*, rows: range, cols: range, label: int) -> torch.Tensor:
    """Cell logits [Q, L]: background everywhere (p about 0.999) but a block of cells of `label`."""
    logits_GGL = torch.full((8, 8, L), -4.0)
    logits_GGL[..., 0] = 4.0
    for r in rows:
        for c in cols:
            logits_GGL[r, c, 0], logits_GGL[r, c, label] = -4.0, 4.0
    return logits_GGL.reshape(Q, L)


def test_a_defect_is_one_box_in_the_uploaded_image_pixels():
    # cells (2..3, 1..3) of 4 px on the 32-px input, each proposing the box x 4..16, y 8..16: one box
    # after suppression, at x 200/32, y 100/32 as uploaded
    logits_QL = one_defect_logits(rows=range(2, 4), cols=range(1, 4), label=6)
    inspector = Inspector(fixed_model(logits_QL, box_4=[4, 8, 16, 16]), card(), version="v")
    [finding] = inspector.inspect(torch.rand(1, 3, 32, 32), sizes=[(200, 100)], threshold=0.5)
    assert finding.pred_score > 0.99 and len(finding.defects) == 1
    defect = finding.defects[0]
    assert defect["class"] == "scratches" and defect["box"] == [25.0, 25.0, 100.0, 50.0]
    assert finding.anomaly_map["rows"] == finding.anomaly_map["cols"] == 8
    assert max(finding.anomaly_map["values"]) == round(finding.pred_score, 3)
    assert finding.anomaly_map["values"][0] < 0.01  # row-major: cell (0, 0) is background


def test_a_part_fails_exactly_when_it_has_a_defect_box():
    inspector = Inspector(fixed_model(torch.randn(Q, L)), card(), version="v")
    images = torch.rand(1, 3, 32, 32)
    for threshold in (0.0, 0.3, 0.6, 0.9, 1.0):
        [finding] = inspector.inspect(images, sizes=[(32, 32)], threshold=threshold)
        assert (finding.pred_score >= threshold) == bool(finding.defects)
        assert all(d["score"] >= threshold for d in finding.defects)


def test_class_scores_are_the_class_head_softmax_and_name_the_most_likely():
    logits_C = torch.tensor([0.0, 0.0, 3.0, 0.0, 0.0, 0.0])
    inspector = Inspector(fixed_model(torch.zeros(Q, L), logits_C), card(), version="v")
    [finding] = inspector.inspect(torch.rand(1, 3, 32, 32), sizes=[(32, 32)], threshold=0.5)
    assert finding.defect_class == "patches"
    assert list(finding.class_scores) == NEU_CLASSES
    assert sum(finding.class_scores.values()) == pytest.approx(1.0, abs=1e-5)


def test_a_good_class_counts_as_no_defect():
    probs_BQL = torch.zeros(1, 2, 3)  # classes: good, scratch
    probs_BQL[0, 0] = torch.tensor([0.1, 0.8, 0.1])  # mostly "good"
    probs_BQL[0, 1] = torch.tensor([0.1, 0.1, 0.8])  # mostly scratch
    assert defect_scores(probs_BQL, good=0)[0].tolist() == pytest.approx([0.1, 0.8])
    assert defect_scores(probs_BQL, good=None)[0].tolist() == pytest.approx([0.9, 0.9])


def test_good_cells_make_no_boxes():
    names = ["good", *NEU_CLASSES[:5]]
    inspector = Inspector(fixed_model(one_defect_logits(rows=range(8), cols=range(8), label=1)), card(names),
                          version="v")  # fmt: skip
    [finding] = inspector.inspect(torch.rand(1, 3, 32, 32), sizes=[(32, 32)], threshold=0.5)
    assert finding.pred_score < 0.01 and finding.defects == []


def test_the_saved_tiny_model_inspects_a_batch_of_real_and_synthetic_images(tiny_qc_model, neu_images):
    inspector = load_inspector(tiny_qc_model)
    assert inspector.class_names == NEU_CLASSES and len(inspector.version) == 12
    images = torch.stack([load_image(neu_images[0], size=32), load_image(png_bytes(64, 48), size=32)])
    findings = inspector.inspect(images, sizes=[(200, 200), (64, 48)], threshold=0.0)
    for finding, (width, height) in zip(findings, [(200, 200), (64, 48)], strict=True):
        assert 0.0 <= finding.pred_score <= 1.0 and finding.defects
        for defect in finding.defects:
            x0, y0, x1, y1 = defect["box"]
            assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height


def test_a_folder_without_a_model_says_how_to_get_one(tmp_path):
    with pytest.raises(NoModel, match="--qc-model"):
        load_inspector(tmp_path)


def test_the_overlay_is_a_png_of_the_image_size():
    image = png_bytes(64, 48)
    anomaly_map = {"rows": 2, "cols": 2, "values": [0.0, 1.0, 0.0, 0.5]}
    defects = [{"class": "scratches", "box": [32, 0, 64, 24], "score": 0.9}]
    png = render_overlay(image, anomaly_map=anomaly_map, defects=defects)
    overlay = Image.open(io.BytesIO(png))
    assert overlay.format == "PNG" and overlay.size == (64, 48) and overlay.mode == "RGB"
    red, green, _ = overlay.getpixel((60, 20))  # inside the hot cell: reddened
    assert red > green + 50
