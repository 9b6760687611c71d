"""From boxes to per-patch targets, and from per-patch scores back to boxes, heat maps and metrics.

    targets_P = patch_targets(boxes_N4, labels_N, image_size=192, cell_size=config.cell)  # training
    maps_BSS = heat_maps(patch_label_probs(cell_logits_BPL), image_size=192)             # to draw
    found = boxes_from_patches(probs_PL, cell_size=config.cell, threshold=0.5)           # one image
    mean_ap, ap_C = mean_average_precision(predictions, truths, num_classes=6)           # mAP50

A "patch" here is a localisation cell of `cell_size` pixels on a square grid: the model's patch,
or a finer cell when the model splits patches (`QCModelConfig.cell`); the CNN baseline's cells
are the same. Pure torch and numpy: it knows nothing of the model that made the scores
(`model.py`, `baseline.py`) nor of files or datasets; it is not the training loop. Everything here
happens outside `forward`, so exported models stay free of data-dependent control flow.

Boxes are pixel coordinates (xmin, ymin, xmax, ymax) on the model's input image, xmax and ymax
exclusive: cell (r, c) of a p-pixel grid is the box (c p, r p, (c + 1) p, (r + 1) p). Class
labels are 0-based defect classes; in per-patch labels 0 is background and class k is k + 1.
Legend: N boxes, M boxes, B batch, P patches (cells; G * G, row-major), L patch labels (C + 1),
C classes, S image side (pixels), G grid side (cells).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from core_model.embedders import patch_scores_to_map

BACKGROUND = 0


@dataclass
class Boxes:
    """One image's boxes: ground truth (scores None) or predictions (scores in [0, 1])."""

    boxes_N4: np.ndarray  # float, (xmin, ymin, xmax, ymax) pixels
    labels_N: np.ndarray  # int, 0-based defect class
    scores_N: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.boxes_N4 = np.asarray(self.boxes_N4, dtype=np.float64).reshape(-1, 4)
        self.labels_N = np.asarray(self.labels_N, dtype=np.int64).reshape(-1)
        if len(self.labels_N) != len(self.boxes_N4):
            raise ValueError(f"{len(self.boxes_N4)} boxes but {len(self.labels_N)} labels")
        if self.scores_N is not None:
            self.scores_N = np.asarray(self.scores_N, dtype=np.float64).reshape(-1)
            if len(self.scores_N) != len(self.boxes_N4):
                raise ValueError(f"{len(self.boxes_N4)} boxes but {len(self.scores_N)} scores")

    def __len__(self) -> int:
        return len(self.labels_N)


# ----------------------------------------------------------------------------- boxes -> targets
def patch_targets(
    boxes_N4: np.ndarray | torch.Tensor,
    labels_N: np.ndarray | torch.Tensor,
    *,
    image_size: int,
    cell_size: int,
    min_cover: float = 0.5,
) -> torch.Tensor:
    """Per-patch training labels [P] (int64; 0 background, class k -> k + 1), row-major.

    The rule: a box claims the patches it covers at least `min_cover` of (default: half the
    patch), and, when it covers no patch that much (a thin scratch across two patch columns),
    the patches it covers most. A patch takes the class of the claiming box that covers the
    largest part of it (ties: the box listed first); a patch no box claims is background. So
    every box marks at least one patch.
    """
    G = image_size // cell_size
    boxes = torch.as_tensor(np.asarray(boxes_N4, dtype=np.float32)).reshape(-1, 4)
    labels = torch.as_tensor(np.asarray(labels_N, dtype=np.int64)).reshape(-1)
    if len(boxes) == 0:
        return torch.zeros(G * G, dtype=torch.int64)
    edges_G = torch.arange(G, dtype=torch.float32) * cell_size  # a patch's low edge, pixels
    # overlap of each box with each column / row of patches, in pixels: [N, G]
    overlap_x_NG = (
        torch.minimum(boxes[:, 2:3], edges_G + cell_size) - torch.maximum(boxes[:, 0:1], edges_G)
    ).clamp(min=0)
    overlap_y_NG = (
        torch.minimum(boxes[:, 3:4], edges_G + cell_size) - torch.maximum(boxes[:, 1:2], edges_G)
    ).clamp(min=0)
    cover_NP = (overlap_y_NG[:, :, None] * overlap_x_NG[:, None, :]).reshape(len(boxes), G * G)
    cover_NP = cover_NP / float(cell_size * cell_size)
    most_N1 = cover_NP.max(dim=1, keepdim=True).values
    claims_NP = (cover_NP >= min_cover) | ((cover_NP == most_N1) & (most_N1 > 0))
    best_cover_P, best_box_P = (cover_NP * claims_NP).max(dim=0)  # max: the first of equal values
    return torch.where(best_cover_P > 0, labels[best_box_P] + 1, BACKGROUND)


# ----------------------------------------------------------------------------- scores -> maps
def heat_maps(patch_probs_BPL: torch.Tensor, *, image_size: int) -> torch.Tensor:
    """Defect probability per pixel [B, S, S] in [0, 1]: each patch's 1 - P(background),
    upsampled bilinearly from the square patch grid to the image."""
    B, P, _ = patch_probs_BPL.shape
    G = grid_side(P)
    defect_BP = 1.0 - patch_probs_BPL[..., BACKGROUND]
    return patch_scores_to_map(defect_BP, (G, G), image_size=image_size, mode="bilinear").clamp(0.0, 1.0)


def grid_side(num_patches: int) -> int:
    G = int(round(num_patches**0.5))
    if G * G != num_patches:
        raise ValueError(f"{num_patches} patches do not make a square grid")
    return G


# ----------------------------------------------------------------------------- scores -> boxes
def boxes_from_patches(
    patch_probs_PL: torch.Tensor | np.ndarray,
    *,
    cell_size: int,
    threshold: float = 0.5,
    nms_iou: float = 0.5,
) -> Boxes:
    """One image's predicted boxes from its per-patch label probabilities [P, C + 1].

    For each class: the patches whose probability of that class is at least `threshold`, split
    into 4-connected components; each component becomes the pixel box around its patches, scored
    by its highest probability. Then non-maximum suppression among the class's boxes (the bounding
    boxes of separate components can still overlap). Boxes come out by falling score.
    """
    probs_PL = np.asarray(torch.as_tensor(patch_probs_PL).detach().float().cpu())
    P, L = probs_PL.shape
    G = grid_side(P)
    probs_GGL = probs_PL.reshape(G, G, L)
    boxes, labels, scores = [], [], []
    for label in range(1, L):
        found_N4, found_N = components_to_boxes(
            probs_GGL[:, :, label], threshold=threshold, cell_size=cell_size
        )
        keep = nms(found_N4, found_N, iou_threshold=nms_iou)
        boxes.append(found_N4[keep])
        scores.append(found_N[keep])
        labels.append(np.full(len(keep), label - 1))
    boxes_N4, labels_N, scores_N = np.concatenate(boxes), np.concatenate(labels), np.concatenate(scores)
    order = np.argsort(-scores_N, kind="stable")
    return Boxes(boxes_N4[order], labels_N[order], scores_N[order])


def components_to_boxes(
    scores_GG: np.ndarray, *, threshold: float, cell_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """The pixel box [N, 4] and max score [N] of each 4-connected component of cells >= threshold."""
    G_rows, G_cols = scores_GG.shape
    on_GG = scores_GG >= threshold
    seen_GG = np.zeros_like(on_GG)
    boxes, best = [], []
    for r0, c0 in zip(*np.nonzero(on_GG), strict=True):
        if seen_GG[r0, c0]:
            continue
        seen_GG[r0, c0] = True
        stack, cells = [(r0, c0)], []
        while stack:  # flood fill
            r, c = stack.pop()
            cells.append((r, c))
            for rr, cc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
                if 0 <= rr < G_rows and 0 <= cc < G_cols and on_GG[rr, cc] and not seen_GG[rr, cc]:
                    seen_GG[rr, cc] = True
                    stack.append((rr, cc))
        rows, cols = np.array(cells).T
        boxes.append(
            [
                cols.min() * cell_size,
                rows.min() * cell_size,
                (cols.max() + 1) * cell_size,
                (rows.max() + 1) * cell_size,
            ]
        )
        best.append(scores_GG[rows, cols].max())
    return np.array(boxes, dtype=np.float64).reshape(-1, 4), np.array(best, dtype=np.float64)


def nms(boxes_N4: np.ndarray, scores_N: np.ndarray, *, iou_threshold: float) -> np.ndarray:
    """Indices of the boxes kept by greedy non-maximum suppression, by falling score: a box goes
    when it overlaps a kept, higher-scored box with IoU above `iou_threshold`."""
    order = list(np.argsort(-np.asarray(scores_N), kind="stable"))
    iou_NN = box_iou(boxes_N4, boxes_N4)
    keep: list[int] = []
    for i in order:
        if all(iou_NN[i, j] <= iou_threshold for j in keep):
            keep.append(int(i))
    return np.array(keep, dtype=np.int64)


def box_iou(boxes_N4: np.ndarray, boxes_M4: np.ndarray) -> np.ndarray:
    """Intersection over union [N, M] of two sets of (xmin, ymin, xmax, ymax) boxes (0 for an
    empty union)."""
    a_N4 = np.asarray(boxes_N4, dtype=np.float64).reshape(-1, 4)
    b_M4 = np.asarray(boxes_M4, dtype=np.float64).reshape(-1, 4)
    width_NM = (
        np.minimum(a_N4[:, None, 2], b_M4[None, :, 2]) - np.maximum(a_N4[:, None, 0], b_M4[None, :, 0])
    ).clip(0)
    height_NM = (
        np.minimum(a_N4[:, None, 3], b_M4[None, :, 3]) - np.maximum(a_N4[:, None, 1], b_M4[None, :, 1])
    ).clip(0)
    inter_NM = width_NM * height_NM
    area_N = (a_N4[:, 2] - a_N4[:, 0]).clip(0) * (a_N4[:, 3] - a_N4[:, 1]).clip(0)
    area_M = (b_M4[:, 2] - b_M4[:, 0]).clip(0) * (b_M4[:, 3] - b_M4[:, 1]).clip(0)
    union_NM = area_N[:, None] + area_M[None, :] - inter_NM
    return np.divide(inter_NM, union_NM, out=np.zeros_like(inter_NM), where=union_NM > 0)


# ----------------------------------------------------------------------------- metrics
def average_precision(
    predictions: list[Boxes], truths: list[Boxes], *, label: int, iou_threshold: float = 0.5
) -> float:
    """VOC-style average precision of one class over a set of images (nan if it has no true box).

    The class's predictions from every image, by falling score, are matched in turn: a
    prediction is a true positive when its best-overlapping true box of the class, in the same
    image, has IoU >= `iou_threshold` and no higher-scored prediction took it; otherwise a false
    positive. AP is the area under the precision-recall curve with all-point interpolation (each
    precision replaced by the best precision at that or a higher recall), as in PASCAL VOC 2010+.
    """
    if len(predictions) != len(truths):
        raise ValueError(f"{len(predictions)} images of predictions but {len(truths)} of truths")
    true_boxes = [t.boxes_N4[t.labels_N == label] for t in truths]
    num_true = sum(len(b) for b in true_boxes)
    if num_true == 0:
        return float("nan")
    found = []  # (score, image, box)
    for image, pred in enumerate(predictions):
        scores_N = pred.scores_N if pred.scores_N is not None else np.ones(len(pred))
        for box_4, score in zip(
            pred.boxes_N4[pred.labels_N == label], scores_N[pred.labels_N == label], strict=True
        ):
            found.append((float(score), image, box_4))
    found.sort(key=lambda item: -item[0])  # stable: ties keep image order
    taken = [np.zeros(len(b), dtype=bool) for b in true_boxes]
    hit_N = np.zeros(len(found))
    for n, (_, image, box_4) in enumerate(found):
        if len(true_boxes[image]) == 0:
            continue
        iou_M = box_iou(box_4[None], true_boxes[image])[0]
        best = int(iou_M.argmax())
        if iou_M[best] >= iou_threshold and not taken[image][best]:
            taken[image][best] = True
            hit_N[n] = 1.0
    true_pos_N = np.cumsum(hit_N)
    recall_N = true_pos_N / num_true
    precision_N = true_pos_N / np.arange(1, len(found) + 1)
    return all_point_ap(recall_N, precision_N)


def all_point_ap(recall_N: np.ndarray, precision_N: np.ndarray) -> float:
    """Area under the interpolated precision-recall curve (PASCAL VOC 2010+ `voc_ap`)."""
    recall = np.concatenate([[0.0], recall_N, [1.0]])
    precision = np.concatenate([[0.0], precision_N, [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # best precision at >= this recall
    steps = np.nonzero(recall[1:] != recall[:-1])[0]
    return float(np.sum((recall[steps + 1] - recall[steps]) * precision[steps + 1]))


def mean_average_precision(
    predictions: list[Boxes], truths: list[Boxes], *, num_classes: int, iou_threshold: float = 0.5
) -> tuple[float, np.ndarray]:
    """(mAP, AP per class [C]): the mean over the classes that have at least one true box (the
    others' AP is nan and left out of the mean)."""
    ap_C = np.array(
        [
            average_precision(predictions, truths, label=c, iou_threshold=iou_threshold)
            for c in range(num_classes)
        ]
    )
    present = ~np.isnan(ap_C)
    return (float(ap_C[present].mean()) if present.any() else float("nan")), ap_C


def accuracy(predicted_N: np.ndarray | torch.Tensor, true_N: np.ndarray | torch.Tensor) -> float:
    """Fraction of images whose predicted class is the true one."""
    predicted, true = np.asarray(predicted_N), np.asarray(true_N)
    if predicted.shape != true.shape or predicted.size == 0:
        raise ValueError(f"need two equal, non-empty label arrays; got {predicted.shape} and {true.shape}")
    return float((predicted == true).mean())


def per_class_recall(
    predicted_N: np.ndarray | torch.Tensor, true_N: np.ndarray | torch.Tensor, *, num_classes: int
) -> np.ndarray:
    """Recall of each class [C]: of the images of class c, the fraction predicted c (nan when the
    class has no image)."""
    predicted, true = np.asarray(predicted_N), np.asarray(true_N)
    recall_C = np.full(num_classes, np.nan)
    for c in range(num_classes):
        if (true == c).any():
            recall_C[c] = float((predicted[true == c] == c).mean())
    return recall_C


def patch_label_probs(patch_logits_BPL: torch.Tensor) -> torch.Tensor:
    """Softmax over the patch labels [B, P, L] (background first): what the decoders above read."""
    return F.softmax(patch_logits_BPL.float(), dim=-1)
