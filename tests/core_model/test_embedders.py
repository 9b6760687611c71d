# .venv/bin/python -m pytest tests/core_model/test_embedders.py -q
"""PatchEmbedder, patch_scores_to_map and SeriesEmbedder: shapes, positions, missing values, errors."""

import pytest
import torch

from core_model import load_model
from core_model.embedders import PatchEmbedder, SeriesEmbedder, patch_scores_to_map

D = 64  # the tiny preset's hidden size


@pytest.fixture
def patches():
    torch.manual_seed(0)
    return PatchEmbedder(hidden_size=D, patch_size=4, in_channels=3, max_grid=8)


@pytest.fixture
def series():
    torch.manual_seed(0)
    return SeriesEmbedder(hidden_size=D, num_features=3)


# ----------------------------------------------------------------------------- PatchEmbedder
def test_patch_tokens_shape_and_grid(patches):
    tokens_BPD, grid = patches(torch.randn(2, 3, 8, 12))
    assert grid == (2, 3)
    assert tokens_BPD.shape == (2, 6, D)


def test_changing_one_patch_changes_only_its_token(patches):
    images_BCHW = torch.randn(1, 3, 8, 12)
    before_BPD, _ = patches(images_BCHW)
    images_BCHW[:, :, 4:8, 4:8] += 1.0  # row 1, col 1 -> token 1 * 3 + 1 = 4 (row-major)
    after_BPD, _ = patches(images_BCHW)
    changed_P = (after_BPD - before_BPD).abs().amax(-1)[0] > 1e-6
    assert changed_P.tolist() == [False, False, False, False, True, False]


def test_identical_patches_at_different_places_differ(patches):
    tile_CHW = torch.randn(3, 4, 4)
    tokens_BPD, _ = patches(tile_CHW.repeat(1, 2, 2)[None])
    assert not torch.allclose(tokens_BPD[0, 0], tokens_BPD[0, 1])  # same row, other column
    assert not torch.allclose(tokens_BPD[0, 0], tokens_BPD[0, 2])  # same column, other row


def test_a_convolutional_stem_gives_the_same_grid_and_keeps_tokens_local():
    torch.manual_seed(0)
    stem = PatchEmbedder(hidden_size=D, patch_size=4, max_grid=8, stem_channels=(8, 16)).eval()
    images_BCHW = torch.randn(1, 3, 16, 16)
    before_BPD, grid = stem(images_BCHW)
    assert grid == (4, 4) and before_BPD.shape == (1, 16, D)
    images_BCHW[:, :, 8:12, 8:12] += 1.0  # patch (2, 2)
    after_BPD, _ = stem(images_BCHW)
    changed_RC = ((after_BPD - before_BPD).abs().amax(-1)[0] > 1e-6).reshape(4, 4)
    # Its token and the ones whose 3x3 kernels overlap it (below and to the right), no others.
    expected_RC = torch.zeros(4, 4, dtype=torch.bool)
    expected_RC[2:, 2:] = True
    assert torch.equal(changed_RC, expected_RC)


def test_a_stem_needs_one_width_per_halving():
    with pytest.raises(ValueError, match=r"patch_size 16 needs log2\(16\) widths, got 3"):
        PatchEmbedder(hidden_size=D, patch_size=16, stem_channels=(8, 16, 32))


@pytest.mark.parametrize(
    ("shape", "words"),
    [
        ((1, 3, 10, 8), ["height", "10", "4"]),
        ((1, 3, 8, 6), ["width", "6", "4"]),
        ((1, 1, 8, 8), ["1 channels", "3"]),
        ((1, 3, 36, 8), ["9x2", "max_grid is 8"]),
    ],
)
def test_bad_images_raise_naming_the_sizes(patches, shape, words):
    with pytest.raises(ValueError) as error:
        patches(torch.zeros(shape))
    assert all(word in str(error.value) for word in words)


def test_patch_scores_to_map_shape():
    map_BHW = patch_scores_to_map(torch.rand(2, 6), (2, 3), image_size=(8, 12))
    assert map_BHW.shape == (2, 8, 12)


def test_hot_patch_lights_its_region():
    scores_BP = torch.zeros(1, 6)
    scores_BP[0, 5] = 1.0  # row 1, col 2
    map_BHW = patch_scores_to_map(scores_BP, (2, 3), image_size=(8, 12))
    expected_HW = torch.zeros(8, 12)
    expected_HW[4:8, 8:12] = 1.0
    assert torch.equal(map_BHW[0], expected_HW)


def test_bilinear_map_peaks_in_the_hot_patch():
    scores_BP = torch.zeros(1, 6)
    scores_BP[0, 5] = 1.0
    map_HW = patch_scores_to_map(scores_BP, (2, 3), image_size=(8, 12), mode="bilinear")[0]
    row, col = divmod(int(map_HW.argmax()), 12)
    assert row >= 4 and col >= 8


def test_patch_tokens_through_the_trunk(patches):
    tokens_BPD, _ = patches(torch.randn(2, 3, 8, 8))
    hidden_BPD = load_model("tiny").trunk(inputs_embeds=tokens_BPD)
    assert hidden_BPD.shape == (2, 4, D) and torch.isfinite(hidden_BPD).all()


# ----------------------------------------------------------------------------- SeriesEmbedder
def test_series_tokens_shape(series):
    assert series(torch.randn(2, 5, 3), torch.rand(2, 5) * 60).shape == (2, 5, D)


def test_missing_values_give_finite_output_unlike_zero(series):
    values_BTF = torch.randn(1, 4, 3)
    zeros_BTF, nans_BTF = values_BTF.clone(), values_BTF.clone()
    zeros_BTF[0, 2, 1] = 0.0
    nans_BTF[0, 2, 1] = float("nan")
    gaps_BT = torch.ones(1, 4)
    missing_BTD = series(nans_BTF, gaps_BT)
    assert torch.isfinite(missing_BTD).all()
    assert not torch.allclose(missing_BTD[0, 2], series(zeros_BTF, gaps_BT)[0, 2])


def test_gaps_change_the_output(series):
    values_BTF = torch.randn(1, 3, 3)
    short_BTD = series(values_BTF, torch.tensor([[0.0, 1.0, 1.0]]))
    long_BTD = series(values_BTF, torch.tensor([[0.0, 3600.0, 1.0]]))
    assert not torch.allclose(short_BTD[0, 1], long_BTD[0, 1])
    assert torch.allclose(short_BTD[0, 2], long_BTD[0, 2])  # other events untouched


def test_negative_gap_raises(series):
    with pytest.raises(ValueError, match=">= 0"):
        series(torch.randn(1, 2, 3), torch.tensor([[0.0, -1.0]]))


def test_wrong_feature_count_raises(series):
    with pytest.raises(ValueError, match="num_features=3"):
        series(torch.randn(1, 2, 4), torch.zeros(1, 2))


def test_series_tokens_through_the_trunk(series):
    values_BTF = torch.randn(2, 5, 3)
    values_BTF[0, 1, 0] = float("nan")
    mask_BT = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])
    tokens_BTD = series(values_BTF, torch.rand(2, 5) * 1e5)
    hidden_BTD = load_model("tiny").trunk(inputs_embeds=tokens_BTD, attention_mask=mask_BT)
    assert hidden_BTD.shape == (2, 5, D) and torch.isfinite(hidden_BTD).all()
