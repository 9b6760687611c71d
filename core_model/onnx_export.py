"""ONNX export of a vertical's trunk model, and the onnxruntime session that serves it.

    export_onnx(model, (images_BCSS,), "runs/qc/model/model.onnx",
                inputs=["images"], outputs=["class_logits", "cell_logits", "box_distances"])
    session = onnx_session("runs/qc/model/model.onnx", inputs=["images"], outputs=[...], threads=1)
    class_logits_BC, *_ = session.run(None, {"images": images_BCSS.numpy()})

The exporter is `torch.onnx.export(..., dynamo=True)` (torch.export, then onnxscript's
translation); the TorchScript exporter is deprecated. torch.export cannot follow the trunk's
grouped MoE dispatch (it sizes each expert's rows on the host), so the export runs every MoE
layer with the dense dispatch (`core_model.moe.moe_dispatch`): every expert on every token,
E/K times the routed FLOPs, the same outputs up to float rounding. The exported graph holds no
state, so it does not count tokens per expert. Every input's first axis is the batch, of any size.

Why serve a small model this way: onnxruntime runs each operation for a few microseconds where
PyTorch's eager dispatch spends about ten, and a model of a few hundred thousand parameters is
mostly that overhead (benchmarks/finance_risk.py's latency section compares the two backends).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import onnxruntime as ort
import torch
from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidGraph, InvalidProtobuf, NoSuchFile
from torch import nn

from .moe import moe_dispatch

# Opset 23 has RMSNormalization: each of the trunk's norms is one operation instead of seven (the
# fraud scoring pass: 239 nodes instead of 338 at opset 18, onnxruntime 13% faster, same outputs).
DEFAULT_OPSET = 23


def export_onnx(
    model: nn.Module,
    example_args: tuple[torch.Tensor, ...],
    path: str | Path,
    *,
    inputs: Sequence[str],
    outputs: Sequence[str],
    opset: int = DEFAULT_OPSET,
) -> Path:
    """Write `model(*example_args)` (in eval mode, MoE layers dense) to `path` as one ONNX file
    whose inputs are named `inputs` and whose first axes are one dynamic batch axis; the model gets
    its mode and dispatch back after. The examples' batch must be 2 or more (a batch of 1 would be
    specialised as a constant). The file appears whole or not at all, so a reader never loads half
    an export."""
    if len(inputs) != len(example_args):
        raise ValueError(f"{len(inputs)} input names for {len(example_args)} example arguments")
    if any(arg.shape[0] < 2 for arg in example_args):
        raise ValueError("export examples need a batch of 2 or more: a batch of 1 is exported as a constant")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    batch = torch.export.Dim("batch", min=1)
    was_training = model.training
    model.eval()
    fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=path.parent)
    os.close(fd)
    try:
        with moe_dispatch(model, "dense"):
            torch.onnx.export(
                model,
                example_args,
                tmp,
                input_names=list(inputs),
                output_names=list(outputs),
                dynamic_shapes=tuple({0: batch} for _ in example_args),
                opset_version=opset,
                dynamo=True,
                external_data=False,  # weights inside the one file
                verbose=False,
            )
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
        model.train(was_training)
    return path


def onnx_session(
    path: str | Path, *, inputs: Sequence[str], outputs: Sequence[str], threads: int | None = None, what: str
) -> ort.InferenceSession:
    """An onnxruntime CPU session of `path`, or a ValueError when the file is missing, unreadable,
    or not `what` (its inputs and outputs are not the names given). `threads`: intra-op threads,
    by default torch's, so both backends use the same cores; ops run one at a time (inter-op 1):
    these graphs are a chain of layers."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such ONNX model file")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except (Fail, InvalidGraph, InvalidProtobuf, NoSuchFile) as error:
        raise ValueError(f"{path}: not a readable ONNX model ({error})") from error
    found_inputs = [i.name for i in session.get_inputs()]
    found_outputs = [o.name for o in session.get_outputs()]
    if found_inputs != list(inputs) or found_outputs != list(outputs):
        raise ValueError(f"{path}: not an exported {what} (inputs {found_inputs}, outputs {found_outputs})")
    return session


def is_stale(onnx_path: Path, weights_path: Path) -> bool:
    """Whether `onnx_path` is missing or older than the weights it was exported from."""
    return not onnx_path.is_file() or onnx_path.stat().st_mtime < weights_path.stat().st_mtime
