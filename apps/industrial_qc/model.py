"""The inspection model: image patches through the suite's MoE trunk, read as a bidirectional
encoder, with a defect-class head and two per-cell localisation heads (label and box).

    model = QCModel(QCModelConfig.preset("small"))
    class_logits_BC, cell_logits_BQL, distances_BQ4 = model(images_BCSS)   # images in [0, 1]
    save_qc_model(model, "runs/qc/model", class_names=names, metrics={"accuracy": 0.99})
    save_qc_model(model, "assets/model", class_names=names, precision="int8")   # a quarter the bytes
    model, card = load_qc_model("runs/qc/model")                   # card: config.json as a dict

Images enter through `PatchEmbedder` with its convolutional stem (3x3 stride-2 convolutions down
to the patch grid, then 2-D learned positions), the trunk runs with `causal=False` so every patch
reads every other, and three heads read its states: `SequenceClassificationHead` (mean over
patches) gives the image's defect class, and two `TokenClassificationHead`s give each localisation
cell (its patch's state fused with the stem's map at the cell's stride) its background-or-class
logits and, as in FCOS (https://arxiv.org/abs/1904.01355), the distances from its centre to the
edges of the defect it lies on; `detection.py` turns these into boxes (each confident cell
proposes its box, then non-maximum suppression) and a heat map. Box decoding stays outside the
model, and this module's `forward` adds no data-dependent control flow (its shape check is
constant under tracing).
NOTE: the trunk's grouped MoE dispatch (`core_model/moe.py`) sizes each expert's rows on the host,
which `torch.export` cannot follow: ONNX export (`export.py`) runs the MoE layers with the dense
dispatch, every expert on every token, and gives the model its grouped dispatch back after.

It is not the training loop, the dataset or the CNN baseline (`baseline.py`), and holds no
pretrained weights: the trunk is fresh (`Trunk.init_weights`).
Legend: B batch, S image side (pixels), P patches (grid * grid, row-major), D hidden size,
C defect classes, L cell labels (C + 1: background first, then the classes), Q localisation
cells (row-major; Q = P unless cells are finer than patches), k cells per patch side, W stem
channels at the cells' stride.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from core_model.config import MoEConfig
from core_model.embedders import PatchEmbedder
from core_model.heads import SequenceClassificationHead, TokenClassificationHead
from core_model.model import Trunk


@dataclass(frozen=True)
class QCModelConfig:
    image_size: int = 192  # S: images are resized to S x S before the model (NEU-DET: 200 -> 192)
    patch_size: int = 16  # pixels a side of a trunk token
    # Widths of PatchEmbedder's convolutional stem, one per halving: log2(patch_size) of them.
    stem_channels: tuple[int, ...] = (24, 48, 96, 192)
    # Pixels a side of a localisation cell, a power of two up to patch_size: a cell reads its
    # patch's state and the stem's map of its stride. None: one cell per patch.
    cell_size: int | None = None
    # 3x3 convolutions over the grid of cells before the cell heads (residual, as FCOS's head
    # tower): each cell reads its neighbours at the cells' resolution, where edges are placed.
    cell_tower: int = 2
    hidden_size: int = 160
    layers: int = 6
    heads: int = 4
    experts: int = 8  # routed experts of each MoE layer (the first layer is dense)
    experts_per_patch: int = 2
    num_classes: int = 6  # C defect classes (NEU-DET has 6)
    dropout: float = 0.1
    # Pixels arrive in [0, 1]; the model standardises them itself, so a served (or ONNX) model
    # takes the image as decoded. NEU-DET's grey levels: mean 0.49, std 0.20 (a tenth of the images).
    pixel_mean: float = 0.49
    pixel_std: float = 0.20

    def __post_init__(self) -> None:
        object.__setattr__(self, "stem_channels", tuple(self.stem_channels))  # a card's JSON list
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}"
            )
        if 2 ** len(self.stem_channels) != self.patch_size:
            raise ValueError(
                f"patch_size {self.patch_size} needs log2({self.patch_size}) stem_channels, one per "
                f"halving; got {len(self.stem_channels)}"
            )
        if self.patch_size % self.cell or self.cell < 2 or self.cell & (self.cell - 1):
            raise ValueError(
                f"cell_size {self.cell} must be a power of two from 2 to patch_size {self.patch_size}: "
                "a cell reads the stem's map of its stride"
            )
        if self.hidden_size % self.heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by heads {self.heads}")
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {self.num_classes}")

    @classmethod
    def from_card(cls, card: dict[str, Any]) -> QCModelConfig:
        """The config in a saved model's card (config.json), ignoring fields it does not know; a
        card without `cell_tower` predates it (0)."""
        known = {f.name for f in fields(cls)}
        return cls(**{"cell_tower": 0} | {k: v for k, v in card["model"].items() if k in known})

    @classmethod
    def preset(cls, name: str) -> QCModelConfig:
        if name not in PRESETS:
            raise ValueError(f"unknown QC model preset {name!r}; presets: {', '.join(PRESETS)}")
        return PRESETS[name]

    @property
    def grid(self) -> int:
        """Patches a side."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid * self.grid

    @property
    def cell(self) -> int:
        """Pixels a side of a localisation cell."""
        return self.cell_size or self.patch_size

    @property
    def cell_stage(self) -> int:
        """The stem stage whose map has one pixel per localisation cell (cell = 2^(stage + 1))."""
        return self.cell.bit_length() - 2

    @property
    def cells_per_side(self) -> int:
        """Q = cells_per_side^2 localisation cells, row-major over the image."""
        return self.image_size // self.cell

    @property
    def num_cells(self) -> int:
        return self.cells_per_side**2

    def trunk_config(self) -> MoEConfig:
        return MoEConfig.embedding_trunk(
            hidden_size=self.hidden_size, layers=self.layers, heads=self.heads, experts=self.experts,
            experts_per_token=self.experts_per_patch, positions=self.num_patches,
        )  # fmt: skip


PRESETS = {
    # The fast tests: 32-px images, a 4 x 4 grid of 8-px patches, 4-px cells (finer than a
    # patch, as at "small"), 45 k parameters.
    "tiny": QCModelConfig(
        image_size=32,
        patch_size=8,
        stem_channels=(8, 8, 16),
        cell_size=4,
        hidden_size=32,
        layers=2,
        heads=2,
        experts=4,
    ),
    # The real one: 3.2 M parameters. NEU-DET images are 200 px; 192 px with 16-px patches gives
    # a 12 x 12 grid (144 tokens), so attention stays cheap on a 2-core CPU (an epoch of the
    # 1,440 training images about 40 s, a quarter of it the stem); 8-px patches (576 tokens)
    # cost 4-6x that. Localisation cells are 8 px (24 x 24) because NEU's boxes are small
    # (shorter side: median 43 px, inclusions and scratches about 20 px): a thin defect still
    # covers whole cells that can propose its box.
    "small": QCModelConfig(cell_size=8),
}


class QCModel(nn.Module):
    """Images [B, 3, S, S] in [0, 1] -> (class logits [B, C], cell logits [B, Q, C + 1], box
    distances [B, Q, 4] in pixels: left, top, right, bottom from each cell's centre).

    Each cell's features are its patch's trunk state plus the stem's map at the cell's stride
    through a 1x1 convolution (`fuse_cells`, a top-down fusion as in feature pyramids): the trunk
    says what the defect is, the stem where its edges run. Q = P with one cell per patch.
    """

    pixel_mean: torch.Tensor
    pixel_std: torch.Tensor

    def __init__(self, config: QCModelConfig):
        super().__init__()
        self.config = config
        D = config.hidden_size
        self.embedder = PatchEmbedder(
            hidden_size=D, patch_size=config.patch_size, max_grid=config.grid,
            stem_channels=config.stem_channels,
        )  # fmt: skip
        self.trunk = Trunk(config.trunk_config())  # its 1-token embedding table is never read
        self.trunk.init_weights()
        self.classifier = SequenceClassificationHead(
            hidden_size=D, num_labels=config.num_classes, pooling="mean", dropout=config.dropout
        )
        self.cell_skip = nn.Conv2d(config.stem_channels[config.cell_stage], D, kernel_size=1)
        self.cell_tower = nn.Sequential(*(conv_norm_gelu(D) for _ in range(config.cell_tower)))
        self.localiser = TokenClassificationHead(
            hidden_size=D,
            num_labels=config.num_classes + 1,
            dropout=config.dropout,
            bidirectional=True,
        )
        self.boxer = TokenClassificationHead(
            hidden_size=D, num_labels=4, dropout=config.dropout, bidirectional=True
        )
        self.register_buffer("pixel_mean", torch.tensor(config.pixel_mean), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(config.pixel_std), persistent=False)

    def to_config(self) -> dict[str, Any]:
        return asdict(self.config)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, images_BCSS: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        check_image_size(images_BCSS, self.config)
        x_BCSS = (images_BCSS - self.pixel_mean) / self.pixel_std
        tokens_BPD, _, stem_maps = self.embedder.encode(x_BCSS)
        hidden_BPD = self.trunk(tokens_BPD, causal=False)
        cells_BQD = self.refine_cells(self.fuse_cells(hidden_BPD, stem_maps[self.config.cell_stage]))
        cell_logits_BQL, distances_BQ4 = self.localiser(cells_BQD), self.boxer(cells_BQD)
        return self.classify(hidden_BPD), cell_logits_BQL, box_distances(distances_BQ4, self.config)

    def fuse_cells(self, hidden_BPD: torch.Tensor, stem_map_BWQQ: torch.Tensor) -> torch.Tensor:
        """Each cell's features [B, Q, D], row-major over the image: GELU of its patch's state plus
        the stem's map at the cell through a 1x1 convolution. Static reshapes only, so it exports."""
        G, k = self.config.grid, self.config.patch_size // self.config.cell
        patches_BDGG = hidden_BPD.transpose(1, 2).reshape(-1, hidden_BPD.shape[-1], G, G)
        up_BDQQ = patches_BDGG.repeat_interleave(k, dim=2).repeat_interleave(k, dim=3)
        cells_BDQQ = F.gelu(up_BDQQ + self.cell_skip(stem_map_BWQQ))
        return cells_BDQQ.flatten(2).transpose(1, 2)

    def refine_cells(self, cells_BQD: torch.Tensor) -> torch.Tensor:
        """The cells [B, Q, D] plus what `cell_tower` reads of their neighbourhoods (each 3x3
        layer one cell further): on NEU-DET, 12 epochs, val mAP50 0.280 -> 0.387 with two layers
        (test 0.289 -> 0.321)."""
        if not len(self.cell_tower):
            return cells_BQD
        side = self.config.cells_per_side
        grid_BDQQ = cells_BQD.transpose(1, 2).reshape(-1, cells_BQD.shape[-1], side, side)
        return cells_BQD + self.cell_tower(grid_BDQQ).flatten(2).transpose(1, 2)

    def classify(self, hidden_BPD: torch.Tensor) -> torch.Tensor:
        """The class head's own sum for "mean" pooling with no padding (a test checks they agree).

        NOTE: `SequenceClassificationHead.forward` checks its padding mask with `bool(...)`, a
        data-dependent branch that `torch.export` (and so ONNX export) refuses; every image has
        all its patches, so the mean needs no mask.
        """
        return self.classifier.classifier(self.classifier.dropout(hidden_BPD.mean(dim=1)))


def conv_norm_gelu(channels: int) -> nn.Sequential:
    """A 3x3 convolution (same size), GroupNorm (up to 8 groups) and GELU."""
    return nn.Sequential(
        nn.Conv2d(channels, channels, 3, padding=1, bias=False),
        nn.GroupNorm(math.gcd(8, channels), channels),
        nn.GELU(),
    )


def box_distances(raw_BQ4: torch.Tensor, config: QCModelConfig) -> torch.Tensor:
    """A box head's raw outputs -> distances in pixels [B, Q, 4] from each cell's centre to its
    box's left, top, right and bottom edges: softplus keeps them positive (and, unlike FCOS's
    exp, bounded in its gradient), in units of a patch so a fresh head proposes patch-sized boxes."""
    return F.softplus(raw_BQ4.float()) * config.patch_size


def check_image_size(images_BCSS: torch.Tensor, config: QCModelConfig) -> None:
    """A ValueError unless images are [B, 3, S, S] with the configured S (a shape check only,
    so it stays a constant under ONNX tracing)."""
    S = config.image_size
    if images_BCSS.dim() != 4 or tuple(images_BCSS.shape[1:]) != (3, S, S):
        raise ValueError(
            f"images must be [B, 3, {S}, {S}] (image_size={S}; resize them first); "
            f"got shape {tuple(images_BCSS.shape)}"
        )


WEIGHTS, CARD = "model.safetensors", "config.json"
Precision = Literal["float32", "int8"]
SCALE_SUFFIX = ".int8_scale"
INT8_MIN_NUMEL = 2048  # smaller tensors (norms, biases, the routers) stay float32


def save_qc_model(
    model: QCModel,
    directory: str | Path,
    *,
    class_names: list[str],
    metrics: dict[str, Any] | None = None,
    precision: Precision = "float32",
) -> Path:
    """`directory`/model.safetensors and config.json (the model's shape, its class names in
    logit order, `metrics`, and the weights' precision).

    `precision="int8"` stores each large matrix as int8 with one float16 scale per row
    (symmetric, absmax / 127; `quantize_int8`): about a quarter of the bytes, for a model shipped
    inside the repository; `load_qc_model` turns it back into float32."""
    if len(class_names) != model.config.num_classes:
        raise ValueError(f"{len(class_names)} class names for a model of {model.config.num_classes} classes")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    if precision == "int8":
        state = quantize_int8(state)
    save_file(state, str(directory / WEIGHTS))
    card = {
        "model": model.to_config(), "class_names": list(class_names), "metrics": metrics or {},
        "precision": precision,
    }  # fmt: skip
    (directory / CARD).write_text(json.dumps(card, indent=2) + "\n")
    return directory


def quantize_int8(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Large float tensors as int8 plus a float16 scale per row (`name` + SCALE_SUFFIX): a row
    is an output channel of a convolution kernel, else a row of the last dimension (an expert's
    output unit in the stacked experts)."""
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if not tensor.is_floating_point() or tensor.dim() < 2 or tensor.numel() < INT8_MIN_NUMEL:
            out[name] = tensor
            continue
        rows_RK = (
            tensor.float().flatten(1) if tensor.dim() == 4 else tensor.float().reshape(-1, tensor.shape[-1])
        )
        scale_R1 = (rows_RK.abs().amax(dim=1, keepdim=True) / 127.0).clamp(min=1e-8).half().float()
        out[name] = (rows_RK / scale_R1).round().clamp(-127, 127).to(torch.int8).reshape(tensor.shape)
        out[name + SCALE_SUFFIX] = scale_R1.squeeze(1).half()
    return out


def dequantize_int8(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The float32 state of `quantize_int8`'s output."""
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if name.endswith(SCALE_SUFFIX):
            continue
        if name + SCALE_SUFFIX not in state:
            out[name] = tensor
            continue
        scale_R1 = state[name + SCALE_SUFFIX].float()[:, None]
        rows_RK = (
            tensor.float().flatten(1) if tensor.dim() == 4 else tensor.float().reshape(-1, tensor.shape[-1])
        )
        out[name] = (rows_RK * scale_R1).reshape(tensor.shape)
    return out


def load_qc_model(directory: str | Path) -> tuple[QCModel, dict[str, Any]]:
    """The model saved in `directory` (eval mode, float32) and its card, or a ValueError saying
    why the folder is not a QC model."""
    directory = Path(directory)
    if not (directory / WEIGHTS).is_file() or not (directory / CARD).is_file():
        raise ValueError(f"{directory}: not a QC model (needs {WEIGHTS} and {CARD})")
    card = json.loads((directory / CARD).read_text())
    if not isinstance(card.get("model"), dict) or not isinstance(card.get("class_names"), list):
        raise ValueError(f"{directory / CARD}: not a QC model card (needs 'model' and 'class_names')")
    config = QCModelConfig.from_card(card)
    if len(card["class_names"]) != config.num_classes:
        raise ValueError(
            f"{directory / CARD}: {len(card['class_names'])} class names, {config.num_classes} classes"
        )
    model = QCModel(config)
    state = load_file(str(directory / WEIGHTS))
    try:
        model.load_state_dict(dequantize_int8(state) if card.get("precision") == "int8" else state)
    except RuntimeError as error:  # missing, unexpected or misshapen weights
        raise ValueError(
            f"{directory / WEIGHTS} does not hold the model its card describes (written by another "
            f"version of the model? retrain it with `verticals qc train`): {error}"
        ) from error
    return model.eval(), card
