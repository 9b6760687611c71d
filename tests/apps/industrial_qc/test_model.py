"""The QC model: its two outputs and their shapes, the image size it insists on, a save/load round
trip, and that a tiny one learns a synthetic defect task (class and where) in a few seconds.

.venv/bin/python -m pytest -q tests/apps/industrial_qc/test_model.py
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from apps.industrial_qc.dataset import class_names, load_record, read_neu_det
from apps.industrial_qc.detection import patch_assignment
from apps.industrial_qc.model import (
    QCModel,
    QCModelConfig,
    load_qc_model,
    save_qc_model,
)
from apps.industrial_qc.settings import SHIPPED_MODEL

CONFIG = QCModelConfig.preset("tiny")


def synthetic(n: int, *, config: QCModelConfig, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images [n, 3, S, S] of noise with a bright square (class 0) or a dark horizontal line
    (class 1) at a random place, their classes [n] and per-cell targets [n, Q]."""
    g = torch.Generator().manual_seed(seed)
    S = config.image_size
    images = (0.5 + 0.1 * torch.randn(n, 1, S, S, generator=g)).clamp(0, 1)
    labels = torch.randint(0, 2, (n,), generator=g)
    targets = []
    for i in range(n):
        if labels[i] == 0:
            w = h = int(torch.randint(8, 13, (1,), generator=g))
            value = 0.95
        else:
            w, h = int(torch.randint(16, 25, (1,), generator=g)), 3
            value = 0.05
        x0 = int(torch.randint(0, S - w + 1, (1,), generator=g))
        y0 = int(torch.randint(0, S - h + 1, (1,), generator=g))
        images[i, :, y0 : y0 + h, x0 : x0 + w] = value
        box = [[x0, y0, x0 + w, y0 + h]]
        targets.append(patch_assignment(box, [int(labels[i])], image_size=S, cell_size=config.cell)[0])
    return images.expand(n, 3, S, S).contiguous(), labels, torch.stack(targets)


def qc_loss(
    outputs: tuple[torch.Tensor, torch.Tensor], labels_B: torch.Tensor, targets_BQ: torch.Tensor
) -> torch.Tensor:
    """Class cross-entropy plus per-cell cross-entropy, unweighted (the test's loss, not training's)."""
    class_logits_BC, cell_logits_BQL, _ = outputs
    cell_loss = F.cross_entropy(cell_logits_BQL.flatten(0, 1), targets_BQ.flatten())
    return F.cross_entropy(class_logits_BC, labels_B) + cell_loss


def train_on_synthetic(model: nn.Module, *, steps: int, lr: float = 3e-3) -> dict[str, float]:
    """A few Adam steps on the synthetic task; then accuracy of the class and of patch labels
    (on the object's patches, and on background patches) over fresh images."""
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for step in range(steps):
        images, labels, targets = synthetic(32, config=model.config, seed=step)
        loss = qc_loss(model(images), labels, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    images, labels, targets = synthetic(256, config=model.config, seed=10_000)
    with torch.no_grad():
        class_logits_BC, cell_logits_BQL, _ = model(images)
    predicted_BQ = cell_logits_BQL.argmax(-1)
    on_object = targets > 0
    return {
        "accuracy": float((class_logits_BC.argmax(-1) == labels).float().mean()),
        "object_patches": float((predicted_BQ[on_object] == targets[on_object]).float().mean()),
        "background_patches": float((predicted_BQ[~on_object] == 0).float().mean()),
    }


def test_forward_gives_class_and_cell_logits_and_box_distances():
    model = QCModel(CONFIG).eval()
    class_logits_BC, cell_logits_BQL, distances_BQ4 = model(
        torch.rand(3, 3, CONFIG.image_size, CONFIG.image_size)
    )
    assert class_logits_BC.shape == (3, CONFIG.num_classes)
    assert cell_logits_BQL.shape == (3, CONFIG.num_cells, CONFIG.num_classes + 1)
    assert distances_BQ4.shape == (3, CONFIG.num_cells, 4) and bool((distances_BQ4 >= 0).all())
    assert CONFIG.num_cells == (CONFIG.image_size // CONFIG.cell) ** 2 == 64


@pytest.mark.parametrize("shape", [(2, 3, 40, 40), (2, 3, 32, 40), (2, 1, 32, 32), (3, 32, 32)])
def test_only_the_configured_image_size_is_accepted(shape):
    with pytest.raises(ValueError, match=r"images must be \[B, 3, 32, 32\]"):
        QCModel(CONFIG)(torch.rand(*shape))


def test_config_rejects_an_image_size_the_patches_do_not_divide():
    with pytest.raises(ValueError, match="not a multiple of patch_size"):
        replace(CONFIG, image_size=36)
    with pytest.raises(ValueError, match="unknown QC model preset"):
        QCModelConfig.preset("huge")


def test_each_cell_reads_its_patch_state_and_the_stem_map_at_its_place():
    # 2 x 2 patches of 2 x 2 cells: with the stem's part off, a cell is GELU of its patch's state.
    model = QCModel(replace(CONFIG, image_size=16, patch_size=8, cell_size=4)).eval()
    nn.init.zeros_(model.cell_skip.weight), nn.init.zeros_(model.cell_skip.bias)
    hidden_BPD = torch.randn(1, 4, CONFIG.hidden_size)
    stem_map_BWQQ = torch.randn(1, model.cell_skip.in_channels, 4, 4)
    cells_BQD = model.fuse_cells(hidden_BPD, stem_map_BWQQ)
    assert cells_BQD.shape == (1, 16, CONFIG.hidden_size)
    # Row 1 of the 4 x 4 cell grid: patch 0's lower cells, then patch 1's.
    for cell, patch in zip(range(4, 8), (0, 0, 1, 1), strict=True):
        assert torch.allclose(cells_BQD[0, cell], F.gelu(hidden_BPD[0, patch]))
    # The stem's part: cell 5 (row 1, column 1) reads the map at (1, 1) and no other pixel.
    nn.init.normal_(model.cell_skip.weight)
    moved_BWQQ = stem_map_BWQQ.clone()
    moved_BWQQ[..., 1, 1] += 1.0
    changed_Q = model.fuse_cells(hidden_BPD, moved_BWQQ) - model.fuse_cells(hidden_BPD, stem_map_BWQQ)
    assert (changed_Q.abs().amax(-1)[0] > 1e-6).nonzero().flatten().tolist() == [5]


def test_one_cell_per_patch_unless_told():
    config = replace(CONFIG, cell_size=None)
    _, cell_logits_BQL, _ = QCModel(config).eval()(torch.rand(1, 3, 32, 32))
    assert config.num_cells == config.num_patches and cell_logits_BQL.shape == (1, config.num_patches, 7)
    for cell_size in (3, 1, 16):
        with pytest.raises(ValueError, match=f"cell_size {cell_size} must be a power of two from 2 to"):
            replace(CONFIG, cell_size=cell_size)
    with pytest.raises(ValueError, match=r"patch_size 8 needs log2\(8\) stem_channels, one per halving"):
        replace(CONFIG, stem_channels=(8, 8, 16, 16))


def test_classify_is_the_mean_pooling_head():
    model = QCModel(CONFIG).eval()
    hidden_BPD = torch.randn(2, CONFIG.num_patches, CONFIG.hidden_size)
    assert torch.allclose(model.classify(hidden_BPD), model.classifier(hidden_BPD), atol=1e-6)


def test_everything_but_the_trunk_exports_with_a_dynamic_batch():
    # The trunk's MoE dispatch is core_model's concern; the model's own code must not block export.
    model = QCModel(CONFIG).eval()
    model.trunk.forward = lambda tokens_BPD, causal: tokens_BPD  # type: ignore[method-assign]
    images = torch.rand(2, 3, 32, 32)
    batch = torch.export.Dim("batch", min=1, max=64)
    exported = torch.export.export(model, (images,), dynamic_shapes={"images_BCSS": {0: batch}})
    more = torch.rand(5, 3, 32, 32)
    for ours, theirs in zip(exported.module()(more), model(more), strict=True):
        assert torch.allclose(ours, theirs, atol=1e-5)


def test_patches_attend_both_ways():
    # A change in the last patch moves the first patch's logits: the trunk is not causal.
    model = QCModel(replace(CONFIG, dropout=0.0)).eval()
    images = torch.rand(1, 3, 32, 32)
    changed = images.clone()
    changed[..., 24:, 24:] = 1.0
    with torch.no_grad():
        first_P0 = model(images)[1][0, 0]
        first_P0_changed = model(changed)[1][0, 0]
    assert not torch.allclose(first_P0, first_P0_changed)


def test_save_and_load_give_the_same_outputs(tmp_path):
    model = QCModel(CONFIG).eval()
    names = ["crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches"]
    save_qc_model(model, tmp_path / "qc", class_names=names, metrics={"accuracy": 0.5})
    loaded, card = load_qc_model(tmp_path / "qc")
    assert card["class_names"] == names and card["metrics"] == {"accuracy": 0.5}
    assert loaded.config == model.config and not loaded.training
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        for before, after in zip(model(images), loaded(images), strict=True):
            assert torch.equal(before, after)


def test_a_card_from_before_the_cell_tower_loads_the_model_it_was_saved_from(tmp_path):
    model = QCModel(replace(CONFIG, cell_tower=0)).eval()
    save_qc_model(model, tmp_path / "qc", class_names=[str(i) for i in range(CONFIG.num_classes)])
    card = json.loads((tmp_path / "qc" / "config.json").read_text())
    del card["model"]["cell_tower"]
    (tmp_path / "qc" / "config.json").write_text(json.dumps(card))
    loaded, _ = load_qc_model(tmp_path / "qc")
    images = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(images)[1], loaded(images)[1])
    assert QCModelConfig().cell_tower == 2  # new models get the tower


def test_int8_weights_take_a_third_of_the_bytes_and_keep_the_outputs(tmp_path):
    torch.manual_seed(0)
    model = QCModel(QCModelConfig.preset("small")).eval()
    names = ["crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches"]
    save_qc_model(model, tmp_path / "f32", class_names=names)
    save_qc_model(model, tmp_path / "int8", class_names=names, precision="int8")
    loaded, card = load_qc_model(tmp_path / "int8")
    assert card["precision"] == "int8"
    size = lambda name: (tmp_path / name / "model.safetensors").stat().st_size  # noqa: E731
    assert size("int8") < size("f32") / 3
    images = torch.rand(2, 3, 192, 192)
    with torch.no_grad():
        (class_f32, cells_f32, _), (class_int8, cells_int8, _) = model(images), loaded(images)
    assert torch.equal(class_f32.argmax(-1), class_int8.argmax(-1))
    assert (class_f32 - class_int8).abs().max() < 0.02 * class_f32.abs().max()
    # A fresh router's scores are near ties, so rounding sends a few patches to another expert and
    # moves their cells; the rest stay within 5%.
    moved_BQ = (cells_f32 - cells_int8).abs().amax(-1) > 0.05 * cells_f32.abs().max()
    assert moved_BQ.float().mean() < 0.1


def test_loading_a_folder_that_is_not_a_model_says_so(tmp_path):
    with pytest.raises(ValueError, match="not a QC model"):
        load_qc_model(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"")
    (tmp_path / "config.json").write_text('{"model": {}}')
    with pytest.raises(ValueError, match="not a QC model card"):
        load_qc_model(tmp_path)


def test_weights_of_another_model_are_refused_naming_the_file(tmp_path):
    names = ["crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches"]
    save_qc_model(QCModel(CONFIG), tmp_path, class_names=names)
    card = json.loads((tmp_path / "config.json").read_text())
    card["model"]["stem_channels"] = [8, 16, 16]  # a card that no longer matches its weights
    (tmp_path / "config.json").write_text(json.dumps(card))
    with pytest.raises(ValueError, match="model.safetensors does not hold the model its card describes"):
        load_qc_model(tmp_path)


def test_saving_needs_one_name_per_class(tmp_path):
    with pytest.raises(ValueError, match="2 class names for a model of 6 classes"):
        save_qc_model(QCModel(CONFIG), tmp_path, class_names=["a", "b"])


def test_a_tiny_model_learns_what_and_where():
    torch.manual_seed(0)
    model = QCModel(replace(CONFIG, num_classes=2))
    scores = train_on_synthetic(model, steps=80)
    assert scores["accuracy"] > 0.9, scores
    assert scores["object_patches"] > 0.75, scores
    assert scores["background_patches"] > 0.95, scores


def neu_batch(config: QCModelConfig, *, n: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """n NEU-DET training images (one per class, first n classes) at the model's input size, with
    their classes and patch targets, read by the app's data layer."""
    records = read_neu_det(split="train")
    classes = class_names(records)
    chosen = [next(r for r in records if r.label == name) for name in classes[:n]]
    images, targets = [], []
    for record in chosen:
        image_3SS, boxes = load_record(record, size=config.image_size)
        images.append(image_3SS)
        boxes_N4 = np.array([[b.x0, b.y0, b.x1, b.y1] for b in boxes])
        labels = [classes.index(b.label) for b in boxes]
        targets.append(
            patch_assignment(boxes_N4, labels, image_size=config.image_size, cell_size=config.cell)[0]
        )
    return torch.stack(images), torch.arange(len(chosen)), torch.stack(targets)


def one_training_step(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor
) -> float:
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss = qc_loss(model(images), labels, targets)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def test_one_training_step_on_real_neu_images_at_the_small_preset():
    config = QCModelConfig.preset("small")
    images, labels, targets = neu_batch(config)
    assert targets.shape == (4, config.num_cells) and bool((targets > 0).any())
    loss = one_training_step(QCModel(config), images, labels, targets)
    assert np.isfinite(loss) and loss > 0


def test_the_shipped_model_loads_and_finds_the_defect_of_a_real_neu_image():
    # The model make run serves must load with the model code as it is now.
    model, card = load_qc_model(SHIPPED_MODEL)
    assert card["class_names"] == class_names(read_neu_det(split="test")) and card["precision"] == "int8"
    record = next(r for r in read_neu_det(split="test") if "scratches" in r.path.name)
    image_3SS, _ = load_record(record, size=model.config.image_size)
    with torch.no_grad():
        class_logits_BC, cell_logits_BQL, _ = model(image_3SS[None])
    assert card["class_names"][int(class_logits_BC.argmax())] == "scratches"
    assert bool((cell_logits_BQL.argmax(-1) > 0).any())  # some cell says defect
