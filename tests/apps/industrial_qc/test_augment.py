"""Box-aware augmentation: boxes move with the pixels under flips, turns and crops, and the same
generator gives the same result.

.venv/bin/python -m pytest tests/apps/industrial_qc/test_augment.py -q
"""

import pytest
import torch
from PIL import Image

from apps.industrial_qc.augment import (
    Augment,
    AugmentConfig,
    crop_boxes,
    hflip,
    jitter,
    random_crop,
    rotate90,
    vflip,
)
from apps.industrial_qc.dataset import InspectionDataset, class_names, read_folder


def bright_rectangle(*, H=24, W=32, box=(3, 5, 11, 9)):
    """A dark image with one bright rectangle over pixels x0..x1-1, y0..y1-1, and that box [1, 4]."""
    x0, y0, x1, y1 = box
    image_3HW = torch.full((3, H, W), 0.1)
    image_3HW[:, y0:y1, x0:x1] = 0.9
    return image_3HW, torch.tensor([box], dtype=torch.float32)


def bright_extent(image_3HW):
    """The box (x0, y0, x1, y1) around the pixels brighter than mid grey."""
    ys, xs = torch.nonzero(image_3HW[0] > 0.5, as_tuple=True)
    return [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]


@pytest.mark.parametrize(
    "transform",
    [hflip, vflip, *(lambda i, b, k=k: rotate90(i, b, turns=k) for k in (1, 2, 3))],
    ids=["hflip", "vflip", "turn90", "turn180", "turn270"],
)
def test_the_box_still_covers_the_bright_pixels(transform):
    image_3HW, boxes_14 = bright_rectangle()
    moved_3HW, moved_14 = transform(image_3HW, boxes_14)
    assert moved_14[0].tolist() == bright_extent(moved_3HW)


def test_a_quarter_turn_swaps_height_and_width():
    image_3HW, boxes_14 = bright_rectangle(H=24, W=32)
    turned_3HW, _ = rotate90(image_3HW, boxes_14, turns=1)
    assert turned_3HW.shape == (3, 32, 24)


def test_jitter_stays_in_range():
    image_3HW, _ = bright_rectangle()
    assert jitter(image_3HW, brightness=0.5, contrast=3.0).max() == 1.0
    assert jitter(image_3HW, brightness=-0.5, contrast=3.0).min() == 0.0


def test_crop_boxes_clips_and_drops_boxes_that_lose_most_of_their_area():
    boxes_N4 = torch.tensor([[0.0, 0.0, 10.0, 10.0], [8.0, 0.0, 18.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    clipped_N4, keep_N = crop_boxes(boxes_N4, top=0, left=5, height=10, width=10, min_visible=0.5)
    assert keep_N.tolist() == [True, True, False]  # 50% and 70% visible; the third is outside
    assert clipped_N4[:2].tolist() == [[0.0, 0.0, 5.0, 10.0], [3.0, 0.0, 10.0, 10.0]]


def test_random_crop_resizes_back_and_its_box_covers_the_bright_pixels():
    image_3HW, boxes_14 = bright_rectangle(H=40, W=40, box=(8, 8, 32, 32))
    labels_1 = torch.tensor([3])
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        cropped_3HW, cropped_N4, labels_N = random_crop(
            image_3HW, boxes_14, labels_1, generator=generator, min_scale=0.5, min_visible=0.5, tries=10
        )
        assert cropped_3HW.shape == (3, 40, 40) and labels_N.tolist() == [3]
        # bilinear resizing blurs the edge by about a pixel
        assert torch.allclose(
            cropped_N4[0], torch.tensor(bright_extent(cropped_3HW), dtype=torch.float32), atol=1.5
        )


def test_random_crop_never_drops_every_box():
    image_3HW, boxes_14 = bright_rectangle(H=40, W=40, box=(0, 0, 4, 4))  # a corner box, easily cropped out
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        _, boxes_N4, labels_N = random_crop(
            image_3HW,
            boxes_14,
            torch.tensor([1]),
            generator=generator,
            min_scale=0.5,
            min_visible=0.5,
            tries=3,
        )
        assert len(boxes_N4) == len(labels_N) == 1


def test_augment_is_reproducible_with_the_same_generator_and_moves_the_box():
    augment = Augment(AugmentConfig.preset("strong"))
    image_3HW, boxes_14 = bright_rectangle(H=32, W=32, box=(4, 6, 12, 20))
    runs = [
        augment(image_3HW, boxes_14, torch.tensor([2]), generator=torch.Generator().manual_seed(seed))
        for seed in (7, 7, 8)
    ]
    assert all(torch.equal(a, b) for a, b in zip(runs[0], runs[1], strict=True))
    assert not torch.equal(runs[0][0], runs[2][0])
    for seed in range(10):
        generator = torch.Generator().manual_seed(seed)
        out_3HW, out_N4, _ = Augment()(image_3HW, boxes_14, torch.tensor([2]), generator=generator)
        assert out_N4[0].tolist() == bright_extent(out_3HW)  # no crop in the default: exact


@pytest.mark.parametrize(("preset", "may_turn"), [("strong", True), ("directional", False)])
def test_only_a_preset_with_quarter_turns_stands_a_horizontal_scratch_upright(preset, may_turn):
    image_3HW, boxes_14 = bright_rectangle(H=32, W=32, box=(4, 14, 28, 18))
    augment = Augment(AugmentConfig.preset(preset))
    upright = []
    for seed in range(20):
        generator = torch.Generator().manual_seed(seed)
        _, out_N4, _ = augment(image_3HW, boxes_14, torch.tensor([0]), generator=generator)
        x0, y0, x1, y1 = out_N4[0].tolist()
        upright.append(y1 - y0 > x1 - x0)
    assert any(upright) == may_turn


def test_the_none_preset_changes_nothing():
    image_3HW, boxes_14 = bright_rectangle()
    out = Augment(AugmentConfig.preset("none"))(
        image_3HW, boxes_14, torch.tensor([0]), generator=torch.Generator()
    )
    assert torch.equal(out[0], image_3HW) and torch.equal(out[1], boxes_14)


def test_a_datasets_draws_depend_on_seed_epoch_and_index_only(tmp_path):
    for name in ("dent", "good"):
        (tmp_path / name).mkdir()
        Image.effect_noise((24, 24), 60).save(tmp_path / name / "0.png")
    records = read_folder(tmp_path)
    dataset = InspectionDataset(records, classes=class_names(records), size=16, augment=Augment())
    first = [dataset[i].image_3SS for i in (0, 1)]
    assert torch.equal(dataset[1].image_3SS, first[1]) and torch.equal(dataset[0].image_3SS, first[0])
    dataset.set_epoch(1)
    assert not torch.equal(dataset[0].image_3SS, first[0])
