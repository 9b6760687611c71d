"""ONNX export of the inspection model, and an onnxruntime model that serves in its place.

    path = export_onnx(model, "runs/qc/model/model.onnx")           # one file, any batch size
    onnx_model = OnnxModel(path)
    class_logits_BC, cell_logits_BQL, distances_BQ4 = onnx_model(images_BCSS)   # as QCModel's
    model, card = load_backend("runs/qc/model", backend="onnx")     # exports model.onnx if stale

The exporter is `torch.onnx.export(..., dynamo=True)` (torch.export, then onnxscript's
translation); the TorchScript exporter is deprecated. torch.export cannot follow the trunk's
grouped MoE dispatch (it sizes each expert's rows on the host), so the export runs every MoE
layer with the dense dispatch (`core_model.moe.moe_dispatch`): every expert on every token,
E/K times the routed FLOPs, the same logits up to float rounding. The exported graph holds no
state, so it does not count tokens per expert.

It is not the serving API or the benchmark: both take either backend through `load_backend`.
Legend: B batch, S image side (pixels), C defect classes, Q localisation cells, L = C + 1.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import onnxruntime as ort
import torch
from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidGraph, InvalidProtobuf, NoSuchFile

from core_model.moe import moe_dispatch

from .model import WEIGHTS, QCModel, load_qc_model

ONNX_FILE = "model.onnx"
INPUT, OUTPUTS = "images", ("class_logits", "cell_logits", "box_distances")
DEFAULT_OPSET = 18  # the dynamo exporter's lowest; onnxruntime runs it from 1.14 on
Backend = Literal["torch", "onnx"]
QCBackend = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def export_onnx(model: QCModel, path: str | Path, *, opset: int = DEFAULT_OPSET) -> Path:
    """Write `model` (in eval mode, MoE layers dense) to `path` as one ONNX file with a dynamic
    batch axis; the model gets its mode and dispatch back after. The file appears whole or not
    at all, so a reader never loads half an export."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    S = model.config.image_size
    images_BCSS = torch.rand(2, 3, S, S)  # batch 2: a batch of 1 would be specialised as a constant
    was_training = model.training
    model.eval()
    fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=path.parent)
    os.close(fd)
    try:
        with moe_dispatch(model, "dense"):
            torch.onnx.export(
                model,
                (images_BCSS,),
                tmp,
                input_names=[INPUT],
                output_names=list(OUTPUTS),
                dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
                opset_version=opset,
                dynamo=True,
                external_data=False,  # weights inside the one file (a few MB)
                verbose=False,
            )
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
        model.train(was_training)
    return path


def export_saved_model(directory: str | Path, *, opset: int = DEFAULT_OPSET) -> Path:
    """`directory`/model.onnx from the model `save_qc_model` wrote there."""
    model, _ = load_qc_model(directory)
    return export_onnx(model, Path(directory) / ONNX_FILE, opset=opset)


class OnnxModel:
    """An exported QCModel under onnxruntime on CPU, called as QCModel is: images [B, 3, S, S]
    in [0, 1] -> (class logits [B, C], cell logits [B, Q, L]) as float32 CPU tensors.

    `threads`: onnxruntime's intra-op threads; by default torch's, so both backends use the
    same cores. Ops run one at a time (inter-op 1): the graph is a chain of layers.
    """

    def __init__(self, path: str | Path, *, threads: int | None = None) -> None:
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"{path}: no such ONNX model file")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except (Fail, InvalidGraph, InvalidProtobuf, NoSuchFile) as error:
            raise ValueError(f"{path}: not a readable ONNX model ({error})") from error
        inputs = self.session.get_inputs()
        outputs = tuple(o.name for o in self.session.get_outputs())
        if [i.name for i in inputs] != [INPUT] or outputs != OUTPUTS:
            raise ValueError(
                f"{path}: not an exported QC model (inputs {[i.name for i in inputs]}, outputs {outputs})"
            )
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
    if not onnx_path.is_file() or onnx_path.stat().st_mtime < (directory / WEIGHTS).stat().st_mtime:
        export_onnx(model, onnx_path)
    return OnnxModel(onnx_path), card
