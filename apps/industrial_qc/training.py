"""Training and evaluating an inspection model from scratch: AdamW with a warm-up and a cosine decay,
a loss for the image's class, one for every localisation cell's label and one for the boxes the
defect cells predict, box-aware augmentation. One loop serves the MoE model (`QCModel`) and the
CNN baseline (`CNNBaseline`): both map images to (class logits [B, C], cell logits [B, Q, C + 1],
box distances [B, Q, 4]).

    config = TrainingConfig(epochs=60)
    history = fit(model, train_records, classes=classes, config=config, valid=val_records)
    report = evaluate(model, test_records, classes=classes)      # accuracy, recall per class, mAP50
    model, report = train_inspection_model(QCModelConfig.preset("small"), config, data=read_splits())

A cell's targets are `detection.patch_assignment`'s label of the image's (augmented) boxes and the
distances to the edges of its box (`detection.distance_targets`, learnt on the defect cells);
boxes come back out with `detection.boxes_from_cells`. The loop keeps the weights of its last
epoch (the cosine schedule ends at zero; picking an epoch by the test split would flatter it).
Not the text adapter loop of `core_model.train`, which reads tokens.
Legend: B batch, C classes, Q localisation cells, L cell labels (C + 1), N defect cells.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from core_model.datasets import dataset_dir

from .augment import Augment, AugmentConfig
from .dataset import ImageRecord, InspectionDataset, class_names, collate, read_folder
from .detection import (
    Boxes,
    accuracy,
    boxes_from_cells,
    distance_targets,
    mean_average_precision,
    patch_assignment,
    patch_label_probs,
    per_class_recall,
)
from .model import QCModel, QCModelConfig

# `evaluate` also measures mAP with Soft-NMS at this sigma (chosen on NEU-DET's val split: 0.3
# against 0.5); it adds about 0.1 s to an evaluation of the 180 val images.
SOFT_NMS_SIGMA = 0.3
InspectionNet = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class TrainingConfig:
    # 60 epochs (about an hour on a 2-core CPU): at 30, test accuracy 0.978 and mAP50 0.393; at 60,
    # 1.000 and 0.503 (benchmarks/industrial_qc.py, 2026-12-07; the val mAP50 still rose at the end).
    epochs: int = 60
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 2.0
    augment: str = "directional"  # an AugmentConfig preset
    # The cell and box losses weigh twice the image-class loss: at 1 and 1, test mAP50 was 0.327
    # (30 epochs; accuracy 0.978 either way), at 2 and 2 0.363 (benchmarks/industrial_qc.py).
    localisation_weight: float = 2.0  # the cell loss's weight beside the image-class loss
    box_weight: float = 2.0  # the box (GIoU) loss's weight
    label_smoothing: float = 0.1  # of the image-class loss
    clip_grad_norm: float = 1.0
    # A cell proposes its box for a class at this probability, for mAP: low, as detectors are
    # evaluated (AP ranks every proposal); serving proposes at the pass/fail threshold instead.
    box_threshold: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(
                f"epochs and batch_size must be at least 1, got {self.epochs}, {self.batch_size}"
            )
        if not 0 < self.box_threshold < 1:
            raise ValueError(f"box_threshold must be in (0, 1), got {self.box_threshold}")
        AugmentConfig.preset(self.augment)  # a KeyError names an unknown preset


@dataclass
class Evaluation:
    """What a model scores on a split: the figures of issue 9's table."""

    images: int
    accuracy: float
    recall: dict[str, float]  # per class
    map50: float  # the boxes as served (non-maximum suppression)
    map50_soft_nms: float  # the same proposals through Soft-NMS
    ap50: dict[str, float]  # per class, as served (nan: no true box of the class)
    loss: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def config_of(model: nn.Module) -> QCModelConfig:
    """The image and cell sizes a QCModel or CNNBaseline was built for."""
    config = getattr(model, "config", None)
    if not isinstance(config, QCModelConfig):
        raise ValueError(f"{type(model).__name__} has no QCModelConfig as .config")
    return config


def losses(
    outputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    labels_B: torch.Tensor,
    targets: tuple[torch.Tensor, torch.Tensor],
    *,
    config: TrainingConfig,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(image-class loss, cell loss, box loss): cross-entropies (the first label-smoothed), and
    for the defect cells' boxes the GIoU loss (the overlap mAP counts) plus a per-edge loss on
    log distances (a steady gradient for each edge while boxes barely overlap), averaged over the
    cells (0 when the batch has none)."""
    class_logits_BC, cell_logits_BQL, distances_BQ4 = outputs
    cell_labels_BQ, cell_distances_BQ4 = targets
    class_loss = F.cross_entropy(class_logits_BC.float(), labels_B, label_smoothing=config.label_smoothing)
    cell_loss = F.cross_entropy(cell_logits_BQL.flatten(0, 1).float(), cell_labels_BQ.flatten())
    defect_BQ = cell_labels_BQ > 0
    if defect_BQ.any():
        predicted_N4, target_N4 = distances_BQ4[defect_BQ], cell_distances_BQ4[defect_BQ]
        box_loss = (giou_loss(predicted_N4, target_N4) + log_distance_loss(predicted_N4, target_N4)).mean()
    else:
        box_loss = distances_BQ4.sum() * 0.0
    return class_loss, cell_loss, box_loss


def log_distance_loss(predicted_N4: torch.Tensor, target_N4: torch.Tensor) -> torch.Tensor:
    """Smooth L1 [N] between log(1 + distance) of the predicted and target distances: each edge's
    error relative to its size, whatever the box's size."""
    log_ratio_N4 = predicted_N4.log1p() - target_N4.log1p()
    return F.smooth_l1_loss(log_ratio_N4, torch.zeros_like(log_ratio_N4), reduction="none", beta=0.1).sum(-1)


def giou_loss(predicted_N4: torch.Tensor, target_N4: torch.Tensor) -> torch.Tensor:
    """1 - generalised IoU [N] of boxes given as distances (left, top, right, bottom) from the
    same point (https://arxiv.org/abs/1902.09630)."""
    area = lambda d: (d[:, 0] + d[:, 2]) * (d[:, 1] + d[:, 3])  # noqa: E731
    inter_N = (
        torch.minimum(predicted_N4[:, 0], target_N4[:, 0])
        + torch.minimum(predicted_N4[:, 2], target_N4[:, 2])
    ) * (
        torch.minimum(predicted_N4[:, 1], target_N4[:, 1])
        + torch.minimum(predicted_N4[:, 3], target_N4[:, 3])
    )
    union_N = area(predicted_N4) + area(target_N4) - inter_N
    hull_N = area(torch.maximum(predicted_N4, target_N4))
    giou_N = inter_N / union_N.clamp(min=1e-6) - (hull_N - union_N) / hull_N.clamp(min=1e-6)
    return 1.0 - giou_N


def cell_targets(
    boxes: list[torch.Tensor], box_labels: list[torch.Tensor], *, image_size: int, cell_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image's per-cell labels [B, Q] (0 background, class k -> k + 1) and box distances
    [B, Q, 4] (zeros for background)."""
    labels, distances = [], []
    for b, box_labels_N in zip(boxes, box_labels, strict=True):
        labels_Q, box_index_Q = patch_assignment(b, box_labels_N, image_size=image_size, cell_size=cell_size)
        labels.append(labels_Q)
        distances.append(distance_targets(b, box_index_Q, image_size=image_size, cell_size=cell_size))
    return torch.stack(labels), torch.stack(distances)


def learning_rate(step: int, *, total: int, warmup: int, peak: float) -> float:
    """Linear warm-up to `peak`, then a cosine decay to zero at `total` steps."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def fit(
    model: nn.Module,
    records: list[ImageRecord],
    *,
    classes: list[str],
    config: TrainingConfig,
    valid: list[ImageRecord] | None = None,
    progress: bool = True,
    label: str = "train",
) -> list[dict[str, float]]:
    """Trains `model` in place on `records`; one row per epoch (loss, seconds, and the validation
    accuracy and mAP50 when `valid` is given)."""
    torch.manual_seed(config.seed)
    size, cell = config_of(model).image_size, config_of(model).cell
    augment = Augment(AugmentConfig.preset(config.augment))
    dataset = InspectionDataset(
        records, classes=classes, size=size, augment=augment, seed=config.seed, cache=True
    )
    loader = DataLoader(
        dataset, batch_size=config.batch_size, shuffle=True, collate_fn=collate,
        drop_last=len(dataset) > config.batch_size, generator=torch.Generator().manual_seed(config.seed),
    )  # fmt: skip
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
    )
    total = config.epochs * len(loader)
    warmup = max(1, round(config.warmup_epochs * len(loader)))
    history: list[dict[str, float]] = []
    step = 0
    bar = tqdm(total=total, desc=label, unit="batch", disable=not progress, leave=False)
    for epoch in range(config.epochs):
        dataset.set_epoch(epoch)
        model.train()
        started, sums, batches = time.perf_counter(), np.zeros(3), 0
        for batch in loader:
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, total=total, warmup=warmup, peak=config.lr)
            targets = cell_targets(batch.boxes, batch.box_labels, image_size=size, cell_size=cell)
            class_loss, cell_loss, box_loss = losses(
                model(batch.images_B3SS), batch.labels_B, targets, config=config
            )
            loss = class_loss + config.localisation_weight * cell_loss + config.box_weight * box_loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), config.clip_grad_norm)
            optimizer.step()
            sums += (class_loss.item(), cell_loss.item(), box_loss.item())
            batches += 1
            step += 1
            bar.update()
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}")
        row = {
            "epoch": epoch + 1,
            "class_loss": float(sums[0] / batches),
            "cell_loss": float(sums[1] / batches),
            "box_loss": float(sums[2] / batches),
            "seconds": time.perf_counter() - started,
        }
        if valid:
            report = evaluate(model, valid, classes=classes, box_threshold=config.box_threshold)
            row |= {"valid_accuracy": report.accuracy, "valid_map50": report.map50}
        history.append(row)
    bar.close()
    return history


def evaluate(
    model: nn.Module,
    records: list[ImageRecord],
    *,
    classes: list[str],
    box_threshold: float = TrainingConfig.box_threshold,
    batch_size: int = 64,
) -> Evaluation:
    """Image-class accuracy and recall, and box mAP at IoU 0.5, of `model` on `records`: with
    the boxes as served (non-maximum suppression) and with Soft-NMS (SOFT_NMS_SIGMA)."""
    model.eval()
    size, cell = config_of(model).image_size, config_of(model).cell
    dataset = InspectionDataset(records, classes=classes, size=size)
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate)
    predicted, true, found, found_soft, truths, loss_sum = [], [], [], [], [], 0.0
    with torch.inference_mode():
        for batch in loader:
            class_logits_BC, cell_logits_BQL, distances_BQ4 = model(batch.images_B3SS)
            class_probs = F.softmax(class_logits_BC.float(), dim=-1)
            cells = zip(patch_label_probs(cell_logits_BQL), distances_BQ4, strict=True)
            for probs_QL, distances_Q4 in cells:
                decode = functools.partial(
                    boxes_from_cells, probs_QL, distances_Q4, cell_size=cell, threshold=box_threshold
                )
                found.append(decode())
                found_soft.append(decode(soft_nms_sigma=SOFT_NMS_SIGMA))
            loss_sum -= (
                class_probs.clamp(min=1e-12)
                .log()[torch.arange(len(class_probs)), batch.labels_B]
                .sum()
                .item()
            )
            predicted.append(class_probs.argmax(-1))
            true.append(batch.labels_B)
            truths += [
                Boxes(b.numpy(), labels.numpy())
                for b, labels in zip(batch.boxes, batch.box_labels, strict=True)
            ]
    predicted_N, true_N = torch.cat(predicted).numpy(), torch.cat(true).numpy()
    mean_ap, ap_C = mean_average_precision(found, truths, num_classes=len(classes))
    mean_ap_soft, _ = mean_average_precision(found_soft, truths, num_classes=len(classes))
    recall_C = per_class_recall(predicted_N, true_N, num_classes=len(classes))
    recall = {name: float(r) for name, r in zip(classes, recall_C, strict=True) if not np.isnan(r)}
    return Evaluation(
        images=len(records),
        accuracy=accuracy(predicted_N, true_N),
        recall=recall,
        map50=mean_ap,
        map50_soft_nms=mean_ap_soft,
        ap50={name: float(ap) for name, ap in zip(classes, ap_C, strict=True)},
        loss=loss_sum / len(records),
    )


@dataclass
class Splits:
    train: list[ImageRecord]
    valid: list[ImageRecord]
    test: list[ImageRecord]
    classes: list[str]

    def limited(self, count: int) -> Splits:
        """At most `count` images per split, evenly spaced over it (records come sorted by path,
        so by class in class folders and NEU-DET): a smoke run that still sees every class."""
        spaced = lambda records: records[:: max(1, len(records) // count)][:count]  # noqa: E731
        return Splits(spaced(self.train), spaced(self.valid), spaced(self.test), self.classes)


def read_splits(root: str | Path | None = None) -> Splits:
    """A data set's train, val and test splits (its split.csv, else `split_records`'s 80/10/10)
    and its class names; NEU-DET when `root` is None."""
    root = root if root is not None else dataset_dir("neu_det")
    train, valid, test = (read_folder(root, split=s) for s in ("train", "val", "test"))  # type: ignore[arg-type]
    return Splits(train, valid, test, class_names(train + valid + test))


def train_inspection_model(
    model_config: QCModelConfig,
    config: TrainingConfig,
    *,
    data: Splits,
    progress: bool = True,
) -> tuple[QCModel, list[dict[str, float]]]:
    """A fresh QCModel trained on `data.train` (validated each epoch on `data.valid`)."""
    if model_config.num_classes != len(data.classes):
        model_config = QCModelConfig(**(asdict(model_config) | {"num_classes": len(data.classes)}))
    torch.manual_seed(config.seed)
    model = QCModel(model_config)
    history = fit(model, data.train, classes=data.classes, config=config, valid=data.valid, progress=progress)
    return model.eval(), history
