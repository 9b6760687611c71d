"""The CNN baseline: a small convolutional network with the same two outputs as `QCModel`.

    baseline = CNNBaseline(QCModelConfig.preset("small"))
    class_logits_BC, cell_logits_BQL, distances_BQ4 = baseline(images_BCSS)   # images in [0, 1]

Strided 3x3 convolution blocks (BatchNorm, ReLU) bring the image down to the model's
localisation cells, dilated blocks widen the context, 1x1 convolutions give each cell its
background-or-class logits and its box distances, and global average pooling then a Linear give
the image's class.
Same outputs, same shapes: the training loop, `detection.py` and the benchmark serve both
models unchanged. At "small" it has 0.58 M parameters (the MoE model: 3.22 M), at "tiny" 14 k
(ours: 45 k).

It is not a pretrained backbone (trained from scratch, like ours) and not a detector of its own:
boxes come from `detection.py`. It takes its image size, cell size and classes from
`QCModelConfig` and ignores the trunk's fields.
Legend: B batch, S image side (pixels), G cells a side (S / cell), Q cells (G * G, row-major),
W channels, C defect classes, L cell labels (C + 1, background first).
"""

from __future__ import annotations

import torch
from torch import nn

from .model import QCModelConfig, box_distances, check_image_size


def conv_block(in_channels: int, out_channels: int, *, stride: int, dilation: int = 1) -> nn.Sequential:
    """Two 3x3 convolutions, each with BatchNorm and ReLU; the first strided, the second dilated."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class CNNBaseline(nn.Module):
    """Images [B, 3, S, S] in [0, 1] -> (class logits [B, C], cell logits [B, Q, C + 1], box
    distances [B, Q, 4]), as `QCModel`.

    One stride-2 block per halving down to the localisation cell (3 at 8-px cells), widths
    doubling from `width` (up to 8 x `width`); then stride-1 blocks with dilation 2, 4, ... at the
    last width until there are `blocks` in all, so finer cells do not cost the deep layers their
    context (a receptive field of about 90 px at "small").
    """

    pixel_mean: torch.Tensor
    pixel_std: torch.Tensor

    def __init__(self, config: QCModelConfig, *, width: int | None = None, blocks: int = 4):
        super().__init__()
        downs = config.cell_stage + 1  # the config holds cells to powers of two
        self.config = config
        width = width or max(8, config.hidden_size // 5)  # 32 at "small", 8 at "tiny"
        layers, in_channels = [], 3
        for i in range(max(downs, blocks)):
            out_channels = min(width * 2**i, 8 * width) if i < downs else in_channels
            stride, dilation = (2, 1) if i < downs else (1, 2 ** (i - downs + 1))
            layers.append(conv_block(in_channels, out_channels, stride=stride, dilation=dilation))
            in_channels = out_channels
        self.features = nn.Sequential(*layers)
        self.localiser = nn.Conv2d(in_channels, config.num_classes + 1, 1)
        self.boxer = nn.Conv2d(in_channels, 4, 1)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(in_channels, config.num_classes)
        self.register_buffer("pixel_mean", torch.tensor(config.pixel_mean), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(config.pixel_std), persistent=False)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, images_BCSS: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        check_image_size(images_BCSS, self.config)
        x_BWGG = self.features((images_BCSS - self.pixel_mean) / self.pixel_std)
        class_logits_BC = self.classifier(self.dropout(x_BWGG.mean(dim=(2, 3))))
        cells_BWGG = self.dropout(x_BWGG)
        row_major = lambda maps_BXGG: maps_BXGG.flatten(2).transpose(1, 2)  # noqa: E731 (as the model's)
        distances_BQ4 = box_distances(row_major(self.boxer(cells_BWGG)), self.config)
        return class_logits_BC, row_major(self.localiser(cells_BWGG)), distances_BQ4
