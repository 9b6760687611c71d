"""Detection helpers on hand-made inputs: patch targets from boxes, boxes from cell scores and
distances, NMS, IoU, VOC mAP and the classification metrics.

.venv/bin/python -m pytest -q tests/apps/industrial_qc/test_detection.py
"""

import math

import numpy as np
import pytest
import torch

from apps.industrial_qc.detection import (
    Boxes,
    accuracy,
    average_precision,
    box_iou,
    boxes_from_cells,
    centredness,
    distance_targets,
    distances_to_boxes,
    mean_average_precision,
    nms,
    patch_assignment,
    per_class_recall,
    soft_nms,
)


def test_a_patch_takes_the_class_of_the_box_covering_most_of_it():
    # 4 x 4 grid of 8-px patches on a 32-px image. Box of class 2 (label 3) over patches (0,0)
    # and (0,1) fully and (1, 0..1) for a quarter; a class-0 box over (2..3, 2..3) fully.
    targets_P = patch_assignment([[0, 0, 16, 10], [16, 16, 32, 32]], [2, 0], image_size=32, cell_size=8)[0]
    expected_GG = torch.tensor([[3, 3, 0, 0], [0, 0, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]])
    assert torch.equal(targets_P, expected_GG.reshape(-1))


def test_overlapping_boxes_the_larger_cover_wins():
    # Both boxes reach patch (0, 0); class 1 covers 3/4 of it, class 4 all of it.
    targets_P = patch_assignment([[2, 0, 8, 8], [0, 0, 8, 8]], [1, 4], image_size=16, cell_size=8)[0]
    assert targets_P.tolist() == [5, 0, 0, 0]


def test_a_thin_box_still_marks_the_patches_it_covers_most():
    # 6 px wide, straddling the two patch columns (3 px in each): under half of any patch.
    targets_P = patch_assignment([[5, 0, 11, 16]], [0], image_size=16, cell_size=8)[0]
    assert targets_P.tolist() == [1, 1, 1, 1]


def test_no_boxes_is_all_background():
    assert patch_assignment(np.zeros((0, 4)), [], image_size=16, cell_size=8)[0].tolist() == [0] * 4


def probs_with(cells: dict[tuple[int, int, int], float], *, grid: int, labels: int) -> torch.Tensor:
    """[P, L] probabilities: background everywhere except the given (row, col, label) cells."""
    probs_GGL = torch.zeros(grid, grid, labels)
    probs_GGL[..., 0] = 1.0
    for (r, c, label), p in cells.items():
        probs_GGL[r, c, label] = p
        probs_GGL[r, c, 0] = 1.0 - p
    return probs_GGL.reshape(grid * grid, labels)


def distances_for(
    box_4: list[float], cells: list[tuple[int, int]], *, grid: int, cell_size: int
) -> torch.Tensor:
    """[P, 4] distances: the given cells point at `box_4`, the others at a box of their own cell."""
    distances_P4 = torch.full((grid * grid, 4), cell_size / 2)
    for r, c in cells:
        x, y = (c + 0.5) * cell_size, (r + 0.5) * cell_size
        distances_P4[r * grid + c] = torch.tensor([x - box_4[0], y - box_4[1], box_4[2] - x, box_4[3] - y])
    return distances_P4


def test_confident_cells_propose_their_boxes_and_suppression_keeps_the_best():
    # Three class-0 cells on one defect all point at (0, 0, 20, 20); a class-1 cell at (3, 3) points
    # at its own cell; a class-0 cell at (5, 5) below the threshold proposes nothing.
    grid, cell = 6, 10
    cells = {(0, 0, 1): 0.9, (0, 1, 1): 0.7, (1, 1, 1): 0.6, (3, 3, 2): 0.8, (5, 5, 1): 0.3}
    distances_P4 = distances_for([0, 0, 20, 20], [(0, 0), (0, 1), (1, 1)], grid=grid, cell_size=cell)
    found = boxes_from_cells(
        probs_with(cells, grid=grid, labels=3), distances_P4, cell_size=cell, threshold=0.5
    )
    # Scores are probability times centredness: the three class-0 cells stand a third of the way
    # across their box (1/3), the class-1 cell in the middle of its own (1).
    assert found.boxes_N4.tolist() == [[30, 30, 40, 40], [0, 0, 20, 20]]
    assert found.labels_N.tolist() == [1, 0]
    assert found.scores_N is not None and found.scores_N == pytest.approx([0.8, 0.9 / 3])


def test_centredness_is_one_in_the_middle_of_the_box_and_falls_towards_its_rim():
    distances_P4 = torch.tensor([[10.0, 10, 10, 10], [5, 10, 15, 10], [5, 5, 15, 15], [0, 4, 8, 4]])
    assert centredness(distances_P4).tolist() == pytest.approx([1.0, 1 / 3**0.5, 1 / 3, 0.0])


def test_a_box_proposed_from_its_middle_outranks_one_from_its_rim():
    # Two class-0 cells on one 40-px defect: the rim cell is surer (0.9) but stands at the box's
    # corner and guesses it too small; the middle cell (0.7) sees it whole. Suppression keeps the
    # middle cell's box.
    grid, cell = 6, 10
    distances_P4 = distances_for([0, 0, 40, 40], [(1, 1)], grid=grid, cell_size=cell)
    distances_P4[0] = distances_for([0, 0, 30, 30], [(0, 0)], grid=grid, cell_size=cell)[0]
    probs_PL = probs_with({(0, 0, 1): 0.9, (1, 1, 1): 0.7}, grid=grid, labels=2)
    found = boxes_from_cells(probs_PL, distances_P4, cell_size=cell, threshold=0.5)
    assert found.boxes_N4.tolist() == [[0, 0, 40, 40]]


def test_boxes_of_different_classes_are_not_suppressed_and_boxes_stay_in_the_image():
    grid, cell = 4, 8
    probs_PL = torch.zeros(grid * grid, 3)
    probs_PL[:, 0] = 1.0
    probs_PL[0] = torch.tensor([0.0, 0.5, 0.5])  # one cell, both classes at 0.5
    distances_P4 = distances_for([-10, -10, 16, 16], [(0, 0)], grid=grid, cell_size=cell)
    found = boxes_from_cells(probs_PL, distances_P4, cell_size=cell, threshold=0.5)
    assert sorted(found.labels_N.tolist()) == [0, 1]
    assert found.boxes_N4.tolist() == [[0, 0, 16, 16], [0, 0, 16, 16]]


def test_no_confident_cell_no_box():
    found = boxes_from_cells(probs_with({}, grid=3, labels=2), torch.ones(9, 4), cell_size=8, threshold=0.5)
    assert len(found) == 0 and found.boxes_N4.shape == (0, 4)


def test_the_nearest_box_decodes_back_from_its_distance_targets():
    boxes_N4 = [[0, 0, 16, 10], [16, 16, 32, 32]]
    labels_P, index_P = patch_assignment(boxes_N4, [2, 0], image_size=32, cell_size=8)
    assert index_P.tolist() == [0, 0, -1, -1, -1, -1, -1, -1, -1, -1, 1, 1, -1, -1, 1, 1]
    assert labels_P.tolist() == [3, 3, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 1, 1]
    distances_P4 = distance_targets(boxes_N4, index_P, image_size=32, cell_size=8)
    decoded_P4 = distances_to_boxes(distances_P4, cell_size=8, image_size=32)
    for p, box in enumerate(index_P.tolist()):
        if box >= 0:
            assert decoded_P4[p].tolist() == boxes_N4[box]
        else:
            assert distances_P4[p].tolist() == [0, 0, 0, 0]


def test_nms_removes_a_duplicate_of_the_same_place():
    boxes_N4 = np.array([[0, 0, 10, 10], [1, 0, 10, 10], [20, 20, 30, 30]])
    keep = nms(boxes_N4, np.array([0.6, 0.9, 0.5]), iou_threshold=0.5)
    assert keep.tolist() == [1, 2]


def test_soft_nms_lowers_an_overlapping_box_by_its_overlap_instead_of_removing_it():
    boxes_N4 = np.array([[0, 0, 10, 10], [1, 0, 10, 10], [20, 20, 30, 30], [0, 0, 10, 10]])
    keep, scores_N = soft_nms(boxes_N4, np.array([0.6, 0.9, 0.5, 0.0011]), sigma=0.5)
    iou = 90 / 100
    assert keep.tolist() == [1, 2, 0]  # box 0, lowered, now after box 2; box 3 under min_score (1e-3)
    assert scores_N[:3] == pytest.approx([0.6 * math.exp(-(iou**2) / 0.5), 0.9, 0.5])
    # Two cells of a 2 x 2 grid each propose the whole image: hard NMS keeps one, Soft-NMS both.
    probs_PL, distances_P4 = (
        probs_with({(0, 0, 1): 0.9, (0, 1, 1): 0.8}, grid=2, labels=2),
        torch.full((4, 4), 16.0),
    )
    assert len(boxes_from_cells(probs_PL, distances_P4, cell_size=8, threshold=0.5)) == 1
    found = boxes_from_cells(probs_PL, distances_P4, cell_size=8, threshold=0.5, soft_nms_sigma=0.5)
    assert found.scores_N.tolist() == pytest.approx([0.9, 0.8 * math.exp(-1 / 0.5)])


def test_iou_values():
    same, half, apart = [0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]
    iou_NM = box_iou(np.array([same, same]), np.array([same, half, apart]))
    assert iou_NM == pytest.approx(np.array([[1.0, 50 / 150, 0.0], [1.0, 50 / 150, 0.0]]))
    assert box_iou(np.array([[0, 0, 0, 0]]), np.array([[0, 0, 0, 0]])).tolist() == [[0.0]]


def test_map_is_one_for_perfect_predictions():
    truths = [Boxes([[0, 0, 10, 10], [20, 20, 40, 40]], [0, 1]), Boxes([[5, 5, 50, 50]], [2])]
    predictions = [Boxes(t.boxes_N4, t.labels_N, np.full(len(t), 0.7)) for t in truths]
    mean_ap, ap_C = mean_average_precision(predictions, truths, num_classes=4)
    assert mean_ap == 1.0
    assert ap_C[:3].tolist() == [1.0, 1.0, 1.0] and math.isnan(ap_C[3])  # class 3 has no true box


def test_ap_with_a_false_positive_ranked_first():
    # Two true boxes; predictions by score: a miss (0.9), then both hits (0.8, 0.7).
    # precision 0, 1/2, 2/3 at recall 0, 1/2, 1 -> interpolated 2/3 at both recall steps:
    # AP = 1/2 * 2/3 + 1/2 * 2/3 = 2/3.
    truths = [Boxes([[0, 0, 10, 10], [50, 50, 60, 60]], [0, 0])]
    predictions = [Boxes([[80, 80, 90, 90], [0, 0, 10, 10], [50, 50, 60, 60]], [0, 0, 0], [0.9, 0.8, 0.7])]
    assert average_precision(predictions, truths, label=0) == pytest.approx(2 / 3)


def test_ap_counts_a_second_hit_on_one_box_as_false_positive_and_misses_lower_recall():
    # One true box, hit twice: precision 1 then 1/2 at recall 1 -> AP 1. A second true box never
    # found halves it.
    predictions = [Boxes([[0, 0, 10, 10], [0, 0, 10, 9]], [0, 0], [0.9, 0.8])]
    assert average_precision(predictions, [Boxes([[0, 0, 10, 10]], [0])], label=0) == 1.0
    two = [Boxes([[0, 0, 10, 10], [70, 70, 80, 80]], [0, 0])]
    assert average_precision(predictions, two, label=0) == pytest.approx(0.5)


def test_ap_ignores_other_classes_and_low_overlap():
    truths = [Boxes([[0, 0, 10, 10]], [0])]
    wrong_class = [Boxes([[0, 0, 10, 10]], [1], [0.9])]
    shifted = [Boxes([[6, 0, 16, 10]], [0], [0.9])]  # IoU 4/16
    assert average_precision(wrong_class, truths, label=0) == 0.0
    assert average_precision(shifted, truths, label=0) == 0.0


def test_accuracy_and_per_class_recall():
    predicted, true = np.array([0, 0, 1, 2, 2]), np.array([0, 1, 1, 2, 2])
    assert accuracy(predicted, true) == pytest.approx(0.8)
    recall_C = per_class_recall(predicted, true, num_classes=4)
    assert recall_C[:3].tolist() == [1.0, 0.5, 1.0] and math.isnan(recall_C[3])
