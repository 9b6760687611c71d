"""From boxes to per-patch targets, and from per-patch outputs back to boxes and metrics.

    labels_P, box_P = patch_assignment(boxes_N4, labels_N, image_size=192, cell_size=config.cell)
    distances_P4 = distance_targets(boxes_N4, box_P, image_size=192, cell_size=config.cell)  # training
    found = boxes_from_cells(probs_PL, distances_P4, cell_size=config.cell, threshold=0.5)  # one image
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
def patch_assignment(
    boxes_N4: np.ndarray | torch.Tensor,
    labels_N: np.ndarray | torch.Tensor,
    *,
    image_size: int,
    cell_size: int,
    min_cover: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each patch's label [P] (int64; 0 background, class k -> k + 1) and the index of the box it
    belongs to [P] (-1 for background), row-major.

    The rule: a box claims the patches it covers at least `min_cover` of (default: half the
    patch), and, when it covers no patch that much (a thin scratch across two patch columns),
    the patches it covers most. A patch takes the claiming box that covers the largest part of
    it (ties: the box listed first); a patch no box claims is background. So every box marks at
    least one patch.
    """
    G = image_size // cell_size
    boxes = torch.as_tensor(np.asarray(boxes_N4, dtype=np.float32)).reshape(-1, 4)
    labels = torch.as_tensor(np.asarray(labels_N, dtype=np.int64)).reshape(-1)
    if len(boxes) == 0:
        return torch.zeros(G * G, dtype=torch.int64), torch.full((G * G,), -1, dtype=torch.int64)
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
    claimed_P = best_cover_P > 0
    return torch.where(claimed_P, labels[best_box_P] + 1, BACKGROUND), torch.where(claimed_P, best_box_P, -1)


def cell_centres(grid: int, cell_size: int) -> torch.Tensor:
    """The (x, y) pixel centre of each cell of a grid x grid layout [P, 2], row-major."""
    centres_G = (torch.arange(grid, dtype=torch.float32) + 0.5) * cell_size
    y_GG, x_GG = torch.meshgrid(centres_G, centres_G, indexing="ij")
    return torch.stack([x_GG.reshape(-1), y_GG.reshape(-1)], dim=-1)


def distance_targets(
    boxes_N4: np.ndarray | torch.Tensor, box_index_P: torch.Tensor, *, image_size: int, cell_size: int
) -> torch.Tensor:
    """Each patch's distances [P, 4] from its centre to the left, top, right and bottom edges of
    the box it belongs to (`patch_assignment`'s index; zeros for background patches), as in FCOS
    (https://arxiv.org/abs/1904.01355). A centre outside its box (a thin box claimed by the patch
    it covers most) gets the distances clamped at 0."""
    boxes = torch.as_tensor(np.asarray(boxes_N4, dtype=np.float32)).reshape(-1, 4)
    P = len(box_index_P)
    if len(boxes) == 0:
        return torch.zeros(P, 4)
    xy_P2 = cell_centres(image_size // cell_size, cell_size)
    box_P4 = boxes[box_index_P.clamp(min=0)]
    distances_P4 = torch.cat([xy_P2 - box_P4[:, :2], box_P4[:, 2:] - xy_P2], dim=-1).clamp(min=0)
    return torch.where((box_index_P >= 0)[:, None], distances_P4, 0.0)


def distances_to_boxes(distances_P4: torch.Tensor, *, cell_size: int, image_size: int) -> torch.Tensor:
    """Each patch's predicted box [P, 4] (x0, y0, x1, y1), clipped to the image."""
    xy_P2 = cell_centres(image_size // cell_size, cell_size)
    boxes_P4 = torch.cat([xy_P2 - distances_P4[:, :2], xy_P2 + distances_P4[:, 2:]], dim=-1)
    return boxes_P4.clamp(0, image_size)


def grid_side(num_patches: int) -> int:
    G = int(round(num_patches**0.5))
    if G * G != num_patches:
        raise ValueError(f"{num_patches} patches do not make a square grid")
    return G


# ----------------------------------------------------------------------------- scores -> boxes
def boxes_from_cells(
    probs_PL: torch.Tensor | np.ndarray,
    distances_P4: torch.Tensor | np.ndarray,
    *,
    cell_size: int,
    threshold: float = 0.5,
    nms_iou: float = 0.5,
    soft_nms_sigma: float | None = None,
    max_candidates: int = 300,
) -> Boxes:
    """One image's predicted boxes from its cells' label probabilities [P, C + 1] and box
    distances [P, 4].

    Every cell whose probability of a class reaches `threshold` proposes its own box for that
    class (its centre and the distances it predicts), scored by that probability times its
    `centredness`; the best `max_candidates` proposals go through non-maximum suppression per
    class. Boxes come out by falling score, in pixels of the model's input image. With
    `soft_nms_sigma`, Soft-NMS (`soft_nms`) lowers overlapping boxes' scores instead of removing
    them: what mAP is measured with besides (it ranks every proposal), not what serving shows.

    The centredness ranks a box proposed from near its middle above one from its rim, whose far
    edges the cell can barely see: on NEU-DET's val split it took val mAP50 from 0.383 to 0.436
    (chosen there; test 0.310 to 0.327).
    """
    probs = torch.as_tensor(probs_PL).detach().float().cpu()
    distances = torch.as_tensor(distances_P4).detach().float().cpu()
    P, L = probs.shape
    G = grid_side(P)
    boxes_P4 = distances_to_boxes(distances, cell_size=cell_size, image_size=G * cell_size).numpy()
    cell_N, label_N = np.nonzero(probs[:, 1:].numpy() >= threshold)  # label_N: 0-based classes
    scores_N = probs[:, 1:].numpy()[cell_N, label_N] * centredness(distances).numpy()[cell_N]
    top = np.argsort(-scores_N, kind="stable")[:max_candidates]
    cell_N, label_N, scores_N = cell_N[top], label_N[top], scores_N[top]
    keep = []
    for label in np.unique(label_N):
        of_label = np.nonzero(label_N == label)[0]
        if soft_nms_sigma is None:
            keep.append(of_label[nms(boxes_P4[cell_N[of_label]], scores_N[of_label], iou_threshold=nms_iou)])
        else:
            kept, scores_N[of_label] = soft_nms(
                boxes_P4[cell_N[of_label]], scores_N[of_label], sigma=soft_nms_sigma
            )
            keep.append(of_label[kept])
    kept = np.concatenate(keep) if keep else np.zeros(0, dtype=np.int64)
    kept = kept[np.argsort(-scores_N[kept], kind="stable")]
    return Boxes(boxes_P4[cell_N[kept]], label_N[kept], scores_N[kept])


def centredness(distances_P4: torch.Tensor) -> torch.Tensor:
    """How near the middle of its own box each cell stands [P], in [0, 1]: FCOS's centre-ness,
    sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b)), of the distances the cell predicts
    (FCOS learns it with a branch of its own; here it comes free with the box)."""
    left, top, right, bottom = distances_P4.clamp(min=0).unbind(-1)
    across = torch.minimum(left, right) / torch.maximum(left, right).clamp(min=1e-6)
    down = torch.minimum(top, bottom) / torch.maximum(top, bottom).clamp(min=1e-6)
    return (across * down).sqrt()


def nms(boxes_N4: np.ndarray, scores_N: np.ndarray, *, iou_threshold: float) -> np.ndarray:
    """Indices of the boxes kept by greedy non-maximum suppression, by falling score: a box goes
    when it overlaps a kept, higher-scored box with IoU above `iou_threshold`."""
    order = np.argsort(-np.asarray(scores_N), kind="stable")
    iou_NN = box_iou(boxes_N4, boxes_N4)
    suppressed = np.zeros(len(order), dtype=bool)
    keep: list[int] = []
    for i in order:
        if not suppressed[i]:
            keep.append(int(i))
            suppressed |= iou_NN[i] > iou_threshold
    return np.array(keep, dtype=np.int64)


def soft_nms(
    boxes_N4: np.ndarray, scores_N: np.ndarray, *, sigma: float, min_score: float = 1e-3
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian Soft-NMS (Bodla et al., https://arxiv.org/abs/1704.04503): each box in turn, by
    falling score, multiplies the scores of the boxes not yet taken by exp(-IoU^2 / sigma). The
    indices of the boxes whose score stays at least `min_score`, in the order taken, and every
    box's score after [N]. On NEU-DET's val split, the model shipped before the cell tower: mAP50
    0.439 -> 0.478 at sigma 0.3 (0.473 at 0.5; test 0.356 -> 0.387); the shipped one (60 epochs,
    no quarter turns), test 0.541 -> 0.581."""
    scores = np.array(scores_N, dtype=np.float64)
    iou_NN = box_iou(boxes_N4, boxes_N4)
    waiting = np.ones(len(scores), dtype=bool)
    keep: list[int] = []
    while waiting.any():
        i = int(np.argmax(np.where(waiting, scores, -np.inf)))
        if scores[i] < min_score:
            break
        keep.append(i)
        waiting[i] = False
        scores[waiting] *= np.exp(-(iou_NN[i, waiting] ** 2) / sigma)
    return np.array(keep, dtype=np.int64), scores


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
