"""The CNN baseline: a small convolutional network with the same two outputs as `QCModel`.

    baseline = CNNBaseline(QCModelConfig.preset("small"))
    class_logits_BC, patch_logits_BPL = baseline(images_BCSS)       # images in [0, 1]

Strided 3x3 convolution blocks (BatchNorm, ReLU) bring the image down to the same grid as the
model's patches, a 1x1 convolution gives each cell background-or-class logits, and global
average pooling then a Linear give the image's class. Same outputs, same shapes: the training
loop, `detection.py` and the benchmark serve both models unchanged. At the "small" preset it
has 1.2 M parameters (the MoE model: 2.6 M), at "tiny" 19 k (ours: 29 k).

It is not a pretrained backbone (trained from scratch, like ours) and not a detector of its own:
boxes come from `detection.py`. It takes its image size, grid and classes from `QCModelConfig`
and ignores the trunk's fields.
Legend: B batch, S image side (pixels), G grid side (S / patch_size), P patches (G * G,
row-major), W channels, C defect classes, L patch labels (C + 1, background first).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .model import QCModelConfig, check_image_size


def conv_block(in_channels: int, out_channels: int, *, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class CNNBaseline(nn.Module):
    """Images [B, 3, S, S] in [0, 1] -> (class logits [B, C], cell logits [B, P, C + 1]).

    One stride-2 block per halving: log2(patch_size) blocks (4 at 16-px patches), widths
    doubling from `width` up to 8 x `width`.
    """

    pixel_mean: torch.Tensor
    pixel_std: torch.Tensor

    def __init__(self, config: QCModelConfig, *, width: int | None = None):
        super().__init__()
        downs = int(round(math.log2(config.patch_size)))
        if 2**downs != config.patch_size:
            raise ValueError(f"the CNN baseline needs a power-of-two patch_size; got {config.patch_size}")
        self.config = config
        width = width or max(8, config.hidden_size // 5)  # 32 at "small", 8 at "tiny"
        widths = [min(width * 2**i, 8 * width) for i in range(downs)]
        blocks, in_channels = [], 3
        for out_channels in widths:
            blocks.append(conv_block(in_channels, out_channels, stride=2))
            in_channels = out_channels
        self.features = nn.Sequential(*blocks)
        self.localiser = nn.Conv2d(in_channels, config.num_classes + 1, 1)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(in_channels, config.num_classes)
        self.register_buffer("pixel_mean", torch.tensor(config.pixel_mean), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(config.pixel_std), persistent=False)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, images_BCSS: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_image_size(images_BCSS, self.config)
        x_BWGG = self.features((images_BCSS - self.pixel_mean) / self.pixel_std)
        class_logits_BC = self.classifier(self.dropout(x_BWGG.mean(dim=(2, 3))))
        cell_logits_BLGG = self.localiser(self.dropout(x_BWGG))
        return class_logits_BC, cell_logits_BLGG.flatten(2).transpose(1, 2)  # row-major, as patches
