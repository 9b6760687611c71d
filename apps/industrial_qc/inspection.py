"""The Inspector: one batch of images through an inspection model, and what it found in each.

    inspector = load_inspector("apps/industrial_qc/assets/model", backend="torch")
    findings = inspector.inspect(images_B3SS, sizes=[(200, 200)], threshold=0.5)
    findings[0].pred_score, findings[0].defects, findings[0].anomaly_map
    png = render_overlay(image_bytes, anomaly_map=..., defects=...)   # heat map and boxes drawn

The model is any callable with `QCModel.forward`'s contract: images [B, 3, S, S] in [0, 1] ->
(class logits [B, C], cell logits [B, Q, C + 1], box distances [B, Q, 4]); the card (config.json)
gives S, the cell size
and the class names. So PyTorch and ONNX serve alike.

What a finding means (anomalib's names where they mean the same):
- `class_scores`: the class head's softmax; `defect_class` its most likely class.
- a cell's defect score is 1 - P(background), less P("good") when the model has a "good" class
  (a good part is no defect); `anomaly_map` is that score on the cell grid, and `pred_score` its
  maximum over the cells.
- `defects`: the boxes proposed by the cells whose defect score reaches the threshold (each cell
  proposes the box its distances draw, for its most likely defect class, scored by its defect
  score times its centredness, `detection.centredness`), after non-maximum suppression per
  class. So a part fails (pred_score >= threshold) exactly when it has at least one defect box.

It is not the HTTP API, the store or the model's training; it decodes no files (`dataset.py` does).
Legend: B batch, S image side (pixels), C classes, Q cells (row-major), L cell labels (C + 1).
"""

from __future__ import annotations

import hashlib
import io
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from core_model.embedders import patch_scores_to_map

from .dataset import GOOD, load_image
from .detection import BACKGROUND, boxes_from_cells, grid_side, patch_label_probs
from .model import CARD, WEIGHTS, QCModelConfig, load_qc_model
from .settings import Backend

Forward = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


# What a QC model returns: class logits [B, C], cell logits [B, Q, C + 1], box distances [B, Q, 4].
Outputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class NoModel(RuntimeError):
    """No inspection model where the settings point; the message says how to get one."""


@dataclass(frozen=True)
class Finding:
    """What the model found in one image; boxes are in the pixels of the image as uploaded."""

    defect_class: str
    class_scores: dict[str, float]
    pred_score: float
    defects: list[dict[str, Any]]  # {"class", "box": [x0, y0, x1, y1], "score"}, best first
    anomaly_map: dict[str, Any]  # {"rows", "cols", "values": row-major, 3 decimals}


class Inspector:
    """A model (any `Forward`) and its card; `inspect` may be called from several threads (one
    forward at a time)."""

    def __init__(self, forward: Forward, card: dict[str, Any], *, version: str) -> None:
        self.forward, self.card, self.version = forward, card, version
        self.config = QCModelConfig.from_card(card)
        self.class_names = [str(name) for name in card["class_names"]]
        self.good = self.class_names.index(GOOD) if GOOD in self.class_names else None
        self._lock = threading.Lock()

    @property
    def image_size(self) -> int:
        return self.config.image_size

    def inspect(
        self, images_B3SS: torch.Tensor, *, sizes: Sequence[tuple[int, int]], threshold: float
    ) -> list[Finding]:
        """Findings for each image; `sizes` are their (width, height) as uploaded."""
        return self.findings(self.run(images_B3SS), sizes=sizes, threshold=threshold)

    def run(self, images_B3SS: torch.Tensor) -> Outputs:
        """The model's outputs for a batch (one forward at a time, whatever the thread)."""
        with self._lock, torch.inference_mode():
            outputs = self.forward(images_B3SS)
        class_logits_BC, cell_logits_BQL, distances_BQ4 = (torch.as_tensor(o) for o in outputs)
        return class_logits_BC, cell_logits_BQL, distances_BQ4

    def findings(
        self, outputs: Outputs, *, sizes: Sequence[tuple[int, int]], threshold: float
    ) -> list[Finding]:
        """The findings that `run`'s outputs say, image by image."""
        class_logits_BC, cell_logits_BQL, distances_BQ4 = outputs
        class_probs_BC = torch.softmax(class_logits_BC.float(), dim=-1)
        cell_probs_BQL = patch_label_probs(cell_logits_BQL)
        defect_BQ = defect_scores(cell_probs_BQL, good=self.good)
        return [
            self._finding(
                class_probs_BC[b], cell_probs_BQL[b], defect_BQ[b], distances_BQ4[b],
                size=size, threshold=threshold,
            )
            for b, size in enumerate(sizes)
        ]  # fmt: skip

    def _finding(
        self,
        class_probs_C: torch.Tensor,
        cell_probs_QL: torch.Tensor,
        defect_Q: torch.Tensor,
        distances_Q4: torch.Tensor,
        *,
        size: tuple[int, int],
        threshold: float,
    ) -> Finding:
        G = grid_side(len(defect_Q))
        scores = [round(float(p), 6) for p in class_probs_C]
        return Finding(
            defect_class=self.class_names[int(class_probs_C.argmax())],
            class_scores=dict(zip(self.class_names, scores, strict=True)),
            pred_score=round(float(defect_Q.max()), 6),
            defects=self._defects(cell_probs_QL, defect_Q, distances_Q4, size=size, threshold=threshold),
            anomaly_map={"rows": G, "cols": G, "values": [round(float(v), 3) for v in defect_Q]},
        )

    def _defects(
        self,
        cell_probs_QL: torch.Tensor,
        defect_Q: torch.Tensor,
        distances_Q4: torch.Tensor,
        *,
        size: tuple[int, int],
        threshold: float,
    ) -> list[dict[str, Any]]:
        """The boxes the cells at or above the threshold propose, each cell given to its most
        likely defect class with its defect score (`boxes_from_cells`, then suppression)."""
        class_probs_QC = cell_probs_QL[:, BACKGROUND + 1 :].clone()
        if self.good is not None:
            class_probs_QC[:, self.good] = -1.0  # never a defect's class
        best_Q = class_probs_QC.argmax(dim=-1)
        scored_QL = torch.zeros_like(cell_probs_QL)
        scored_QL[torch.arange(len(best_Q)), best_Q + 1] = defect_Q
        found = boxes_from_cells(scored_QL, distances_Q4, cell_size=self.config.cell, threshold=threshold)
        width, height = size
        scale_4 = np.array([width, height, width, height]) / self.config.image_size
        assert found.scores_N is not None
        return [
            {"class": self.class_names[int(label)], "box": [round(float(v), 1) for v in box_4 * scale_4],
             "score": round(float(score), 6)}
            for box_4, label, score in zip(found.boxes_N4, found.labels_N, found.scores_N, strict=True)
        ]  # fmt: skip


def defect_scores(cell_probs_BQL: torch.Tensor, *, good: int | None) -> torch.Tensor:
    """Each cell's probability of a defect [B, Q]: 1 - P(background), less P(good) if any."""
    no_defect_BQ = cell_probs_BQL[..., BACKGROUND]
    if good is not None:
        no_defect_BQ = no_defect_BQ + cell_probs_BQL[..., good + 1]
    return (1.0 - no_defect_BQ).clamp(0.0, 1.0)


def model_version(directory: str | Path) -> str:
    """The first 12 hex digits of the weights' SHA-256 (the card's when there are no weights)."""
    directory = Path(directory)
    source = directory / WEIGHTS if (directory / WEIGHTS).is_file() else directory / CARD
    return hashlib.sha256(source.read_bytes()).hexdigest()[:12]


def load_inspector(directory: str | Path, *, backend: Backend = "torch") -> Inspector:
    """The model saved in `directory`, served by `backend` ("torch", or "onnx": exported there
    first when stale, see `export.load_backend`); a NoModel saying how to get one when the folder
    holds none, a ValueError when it is not one or the backend is unavailable."""
    directory = Path(directory)
    if not (directory / CARD).is_file():
        raise NoModel(
            f"no inspection model at {directory} (needs {WEIGHTS} and {CARD}): train one with "
            f"`verticals qc train --out DIR` and serve its folder with `verticals serve --qc-model DIR`"
        )
    forward, card = _load_backend(directory, backend)
    return Inspector(forward, card, version=model_version(directory))


def _load_backend(directory: Path, backend: Backend) -> tuple[Forward, dict[str, Any]]:
    try:  # here, not at the top: onnxruntime is loaded only by a server that inspects
        from .export import load_backend
    except ImportError as error:  # no export module or no onnxruntime: PyTorch serves alone
        if backend != "torch":
            raise ValueError(
                f"the {backend} backend is unavailable ({error}): use --qc-backend torch"
            ) from None
        return load_qc_model(directory)
    return load_backend(directory, backend)


# ------------------------------------------------------------------------------------ overlay
HEAT_RGB = (255, 40, 0)
HEAT_OPACITY = 0.6  # of a cell with defect score 1
BOX_RGB = (255, 230, 0)


def render_overlay(image: bytes, *, anomaly_map: dict[str, Any], defects: list[dict[str, Any]]) -> bytes:
    """The image as uploaded (its own size) with the heat map blended in (red, more opaque where
    the defect score is higher) and each defect's box and "class score" drawn; PNG bytes."""
    pixels_3HW = load_image(image)  # 16-bit and float images keep their grey levels
    base = Image.fromarray((pixels_3HW.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    scores_1Q = torch.tensor([anomaly_map["values"]], dtype=torch.float32)
    grid, (W, H) = (anomaly_map["rows"], anomaly_map["cols"]), base.size
    map_HW = patch_scores_to_map(scores_1Q, grid, image_size=(H, W), mode="bilinear")[0].clamp(0, 1)
    heat = Image.fromarray((map_HW.numpy() * 255 * HEAT_OPACITY).astype(np.uint8), mode="L")
    out = Image.composite(Image.new("RGB", base.size, HEAT_RGB), base, heat)
    draw = ImageDraw.Draw(out)
    width = max(1, round(min(base.size) / 150))
    for defect in defects:
        x0, y0, x1, y1 = defect["box"]
        draw.rectangle((x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)), outline=BOX_RGB, width=width)
        label = f"{defect['class']} {defect['score']:.2f}"
        left, top, right, bottom = draw.textbbox((x0 + 2, y0 + 1), label)
        draw.rectangle((left - 1, top - 1, right + 1, bottom + 1), fill=(0, 0, 0))
        draw.text((x0 + 2, y0 + 1), label, fill=BOX_RGB)
    buffer = io.BytesIO()
    out.save(buffer, format="PNG")
    return buffer.getvalue()
