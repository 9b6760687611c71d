"""ONNX export of the inspection model, and an onnxruntime model that serves in its place.

    path = export_onnx(model, "runs/qc/model/model.onnx")           # one file, any batch size
    onnx_model = OnnxModel(path)
    class_logits_BC, cell_logits_BQL, distances_BQ4 = onnx_model(images_BCSS)   # as QCModel's
    model, card = load_backend("runs/qc/model", backend="onnx")     # exports model.onnx if stale

The export itself (dense MoE dispatch, a dynamic batch axis, a file written whole) is
`core_model.onnx_export`'s.

It is not the serving API or the benchmark: both take either backend through `load_backend`.
Legend: B batch, S image side (pixels), C defect classes, Q localisation cells, L = C + 1.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch

from core_model import onnx_export
from core_model.onnx_export import DEFAULT_OPSET, is_stale, onnx_session

from .model import WEIGHTS, QCModel, load_qc_model

ONNX_FILE = "model.onnx"
INPUT, OUTPUTS = "images", ("class_logits", "cell_logits", "box_distances")
Backend = Literal["torch", "onnx"]
QCBackend = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def export_onnx(model: QCModel, path: str | Path, *, opset: int = DEFAULT_OPSET) -> Path:
    """Write `model` to `path` as one ONNX file with a dynamic batch axis (its mode and dispatch
    unchanged after)."""
    S = model.config.image_size
    images_BCSS = torch.rand(2, 3, S, S)
    return onnx_export.export_onnx(model, (images_BCSS,), path, inputs=[INPUT], outputs=OUTPUTS, opset=opset)


def export_saved_model(directory: str | Path, *, opset: int = DEFAULT_OPSET) -> Path:
    """`directory`/model.onnx from the model `save_qc_model` wrote there."""
    model, _ = load_qc_model(directory)
    return export_onnx(model, Path(directory) / ONNX_FILE, opset=opset)


class OnnxModel:
    """An exported QCModel under onnxruntime on CPU, called as QCModel is: images [B, 3, S, S]
    in [0, 1] -> (class logits [B, C], cell logits [B, Q, L]) as float32 CPU tensors.
    `threads`: onnxruntime's intra-op threads (by default torch's)."""

    def __init__(self, path: str | Path, *, threads: int | None = None) -> None:
        self.session = onnx_session(path, inputs=[INPUT], outputs=OUTPUTS, threads=threads, what="QC model")
        inputs = self.session.get_inputs()
        self.image_size = int(inputs[0].shape[-1])

    def __call__(self, images_BCSS: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        S = self.image_size
        if images_BCSS.dim() != 4 or tuple(images_BCSS.shape[1:]) != (3, S, S):
            raise ValueError(
                f"images must be [B, 3, {S}, {S}] (image_size={S}; resize them first); "
                f"got shape {tuple(images_BCSS.shape)}"
            )
        feed = {INPUT: images_BCSS.detach().to("cpu", torch.float32).contiguous().numpy()}
        class_logits_BC, cell_logits_BQL, distances_BQ4 = self.session.run(list(OUTPUTS), feed)
        return (
            torch.from_numpy(class_logits_BC),
            torch.from_numpy(cell_logits_BQL),
            torch.from_numpy(distances_BQ4),
        )


def load_backend(directory: str | Path, backend: Backend = "torch") -> tuple[QCBackend, dict[str, Any]]:
    """The model saved in `directory` as a callable of either backend, and its card.

    "onnx" exports `directory`/model.onnx first when it is missing or older than the weights.
    """
    if backend not in ("torch", "onnx"):
        raise ValueError(f"unknown backend {backend!r}; backends: torch, onnx")
    model, card = load_qc_model(directory)
    if backend == "torch":
        return model, card
    directory = Path(directory)
    onnx_path = directory / ONNX_FILE
    if is_stale(onnx_path, directory / WEIGHTS):
        export_onnx(model, onnx_path)
    return OnnxModel(onnx_path), card
