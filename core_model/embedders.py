"""Embedders: turn non-text inputs (images, numeric event series) into trunk tokens [B, T, D].

    patches = PatchEmbedder(hidden_size=64, patch_size=16)
    tokens_BPD, grid = patches(images_BCHW)
    hidden_BPD = model.trunk(inputs_embeds=tokens_BPD)

An embedder only makes `inputs_embeds`: it knows nothing of the trunk, of heads or of losses.
It is not a tokenizer for text (see `tokenizer.py`) and holds no pretrained weights.

Legend: B batch, C channels, H height, W width, P patches (rows * cols, row-major), D hidden size,
T events, F numeric features, K gap frequencies.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class PatchEmbedder(nn.Module):
    """Images [B, C, H, W] -> patch tokens [B, P, D] with factorised learned 2-D positions.

    Positions are row_embed[r] + col_embed[c] (as in ViT's 2-D variants), so any image whose
    patch grid fits in max_grid x max_grid works without interpolating a position table.

    A patch becomes its token through one strided convolution (ViT's "patchify"), or, with
    `stem_channels`, through a convolutional stem: one 3x3 stride-2 convolution (BatchNorm, ReLU)
    per width, as many as halve the image down to the patch grid, then a 1x1 convolution to D
    (Xiao et al., "Early Convolutions Help Transformers See Better", https://arxiv.org/abs/2106.14881).
    A transformer trained from scratch on a small image set learns better behind the stem (the
    industrial-QC model's figures in the README): it sees edges and textures before patches.
    """

    def __init__(
        self,
        *,
        hidden_size: int,
        patch_size: int = 16,
        in_channels: int = 3,
        max_grid: int = 64,
        stem_channels: tuple[int, ...] | list[int] = (),
    ):
        super().__init__()
        stem_channels = tuple(stem_channels)
        if stem_channels and 2 ** len(stem_channels) != patch_size:
            raise ValueError(
                f"a convolutional stem halves the image once per width: patch_size {patch_size} "
                f"needs log2({patch_size}) widths, got {len(stem_channels)} ({stem_channels})"
            )
        self.config = dict(
            hidden_size=hidden_size, patch_size=patch_size, in_channels=in_channels, max_grid=max_grid,
            stem_channels=stem_channels,
        )  # fmt: skip
        self.patch_size = patch_size
        self.in_channels = in_channels
        self.max_grid = max_grid
        self.stem = conv_stem(in_channels, stem_channels)
        if stem_channels:
            self.proj = nn.Conv2d(stem_channels[-1], hidden_size, kernel_size=1)
        else:
            self.proj = nn.Conv2d(in_channels, hidden_size, kernel_size=patch_size, stride=patch_size)
        self.row_embed = nn.Parameter(torch.randn(max_grid, hidden_size) * 0.02)
        self.col_embed = nn.Parameter(torch.randn(max_grid, hidden_size) * 0.02)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> PatchEmbedder:
        return cls(**config)

    def grid_for(self, images_BCHW: torch.Tensor) -> tuple[int, int]:
        """(rows, cols) of patches, or a ValueError that names the offending sizes."""
        if images_BCHW.dim() != 4:
            raise ValueError(f"images must be [B, C, H, W]; got shape {tuple(images_BCHW.shape)}")
        _, channels, H, W = images_BCHW.shape
        if channels != self.in_channels:
            raise ValueError(f"images have {channels} channels; this embedder expects {self.in_channels}")
        p = self.patch_size
        for name, size in (("height", H), ("width", W)):
            if size % p:
                raise ValueError(f"image {name} {size} is not a multiple of patch_size {p}")
        rows, cols = H // p, W // p
        if rows > self.max_grid or cols > self.max_grid:
            raise ValueError(
                f"image {H}x{W} gives a {rows}x{cols} patch grid; max_grid is {self.max_grid} "
                f"(at most {self.max_grid * p} pixels a side)"
            )
        return rows, cols

    def positions(self, rows: int, cols: int) -> torch.Tensor:
        """Position embeddings [rows * cols, D], row-major."""
        pos_RCD = self.row_embed[:rows, None, :] + self.col_embed[None, :cols, :]
        return pos_RCD.reshape(rows * cols, -1)

    def forward(self, images_BCHW: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        tokens_BPD, grid, _ = self.encode(images_BCHW)
        return tokens_BPD, grid

    def encode(self, images_BCHW: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int], list[torch.Tensor]]:
        """(tokens [B, P, D], grid, the stem's maps): map i is [B, stem_channels[i], H / 2^(i+1),
        W / 2^(i+1)], for heads that need finer detail than a patch (none without a stem)."""
        rows, cols = self.grid_for(images_BCHW)
        maps, x = [], images_BCHW
        for stage in self.stem:
            x = stage(x)
            maps.append(x)
        tokens_BPD = self.proj(x).flatten(2).transpose(1, 2)  # row-major: p = r * cols + c
        return tokens_BPD + self.positions(rows, cols).to(tokens_BPD.dtype), (rows, cols), maps


def conv_stem(in_channels: int, widths: tuple[int, ...]) -> nn.ModuleList:
    """One stage per width: a 3x3 stride-2 convolution, BatchNorm and ReLU (no stages for no widths)."""
    stages = []
    for width in widths:
        stages.append(
            nn.Sequential(
                nn.Conv2d(in_channels, width, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            )
        )
        in_channels = width
    return nn.ModuleList(stages)


def patch_scores_to_map(
    scores_BP: torch.Tensor,
    grid: tuple[int, int],
    *,
    image_size: int | tuple[int, int],
    mode: str = "nearest",
) -> torch.Tensor:
    """Per-patch scores [B, P] (row-major) -> a per-pixel map [B, H, W], by upsampling.

    `mode` is "nearest" (each patch's square holds its score) or "bilinear" (smooth).
    """
    rows, cols = grid
    if scores_BP.dim() != 2 or scores_BP.shape[1] != rows * cols:
        raise ValueError(
            f"scores must be [B, {rows * cols}] for a {rows}x{cols} grid; got {tuple(scores_BP.shape)}"
        )
    if mode not in ("nearest", "bilinear"):
        raise ValueError(f"mode must be 'nearest' or 'bilinear', got {mode!r}")
    H, W = (image_size, image_size) if isinstance(image_size, int) else image_size
    scores_B1RC = scores_BP.reshape(-1, 1, rows, cols).float()
    kwargs = {"align_corners": False} if mode == "bilinear" else {}
    map_B1HW = F.interpolate(scores_B1RC, size=(H, W), mode=mode, **kwargs)
    return map_B1HW[:, 0].to(scores_BP.dtype)


class SeriesEmbedder(nn.Module):
    """Multivariate event series with time gaps -> tokens [B, T, D].

    Each event's features enter with a per-feature missing indicator (NaN -> value 0, flag 1), so
    "missing" and "zero" differ. The gap since the previous event, in seconds, is encoded as
    log1p(gap) / log1p(max_gap_seconds), clamped to [0, 1], through K sin/cos frequencies and a
    Linear, and added to the value projection.
    """

    frequencies_K: torch.Tensor

    def __init__(
        self,
        *,
        hidden_size: int,
        num_features: int,
        max_gap_seconds: float = 30 * 24 * 3600.0,
        num_frequencies: int = 8,
    ):
        super().__init__()
        self.config = dict(
            hidden_size=hidden_size,
            num_features=num_features,
            max_gap_seconds=max_gap_seconds,
            num_frequencies=num_frequencies,
        )
        self.num_features = num_features
        self.max_gap_seconds = max_gap_seconds
        self.register_buffer(
            "frequencies_K",
            math.pi * 2.0 ** torch.arange(num_frequencies, dtype=torch.float32),
            persistent=False,
        )
        self.value_proj = nn.Linear(2 * num_features, hidden_size)
        self.gap_proj = nn.Linear(2 * num_frequencies + 1, hidden_size)
        self.norm = nn.LayerNorm(hidden_size)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> SeriesEmbedder:
        return cls(**config)

    def check(self, values_BTF: torch.Tensor, gaps_BT: torch.Tensor) -> None:
        if values_BTF.dim() != 3 or values_BTF.shape[-1] != self.num_features:
            raise ValueError(
                f"values must be [B, T, {self.num_features}] (num_features={self.num_features}); "
                f"got shape {tuple(values_BTF.shape)}"
            )
        if gaps_BT.shape != values_BTF.shape[:2]:
            raise ValueError(
                f"gaps must be [B, T] = {tuple(values_BTF.shape[:2])}; got {tuple(gaps_BT.shape)}"
            )
        # NaN fails this test too; an exported graph has no errors to raise (core_model.onnx_export)
        if not torch.compiler.is_exporting() and not bool((gaps_BT >= 0).all()):
            raise ValueError("gaps must be seconds since the previous event, >= 0; got a negative or NaN gap")

    def gap_features(self, gaps_BT: torch.Tensor) -> torch.Tensor:
        """[B, T, 2K + 1]: the scaled log gap u in [0, 1], and sin/cos(2^k pi u)."""
        u_BT = torch.log1p(gaps_BT.float()) / math.log1p(self.max_gap_seconds)
        u_BT1 = u_BT.clamp(0.0, 1.0)[..., None]
        angles_BTK = u_BT1 * self.frequencies_K
        return torch.cat([u_BT1, angles_BTK.sin(), angles_BTK.cos()], dim=-1)

    def forward(self, values_BTF: torch.Tensor, gaps_BT: torch.Tensor) -> torch.Tensor:
        self.check(values_BTF, gaps_BT)
        missing_BTF = torch.isnan(values_BTF)
        filled_BTF = values_BTF.masked_fill(missing_BTF, 0.0)
        features = torch.cat([filled_BTF, missing_BTF.to(filled_BTF.dtype)], dim=-1)
        dtype = self.value_proj.weight.dtype
        x_BTD = self.value_proj(features.to(dtype)) + self.gap_proj(self.gap_features(gaps_BT).to(dtype))
        return self.norm(x_BTD)
