"""The scorer's model pass (`FraudModel.variants`) exported to ONNX, and served by onnxruntime.

    path = export_onnx(model, "runs/finance/model/model.onnx")   # one file, any batch size
    scoring_pass = OnnxScoringPass(path, threads=1)
    logits_BP, weights_BT = scoring_pass(events_BTF, gaps_BT, mask_BT, aggregates_BPA)  # as variants'
    scoring_pass = load_scoring_pass(model, "runs/finance/model", backend="onnx")  # exports if stale

The scorer calls either backend the same way. onnxruntime spends a few microseconds on each of
the pass's ~330 small operations where PyTorch's eager dispatch spends about ten
(`benchmarks/finance_risk.py`'s latency section compares the two backends over HTTP).
Legend: B transactions, T history, F event features, P variants, A aggregate features.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import get_args

import torch
from torch import nn

from core_model import onnx_export
from core_model.onnx_export import is_stale, onnx_session

from .features import FEATURES
from .model import WEIGHTS, FraudModel
from .sequences import EVENT_FEATURES
from .settings import Backend

ONNX_FILE = "model.onnx"
INPUTS = ("events", "gaps", "mask", "aggregates")
OUTPUTS = ("logits", "weights")
BACKENDS = get_args(Backend)
ScoringPass = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]
]


class _Variants(nn.Module):
    """`model.variants` as a module's forward, which is what the exporter traces."""

    def __init__(self, model: FraudModel) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        events_BTF: torch.Tensor,
        gaps_BT: torch.Tensor,
        mask_BT: torch.Tensor,
        aggregates_BPA: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.variants(events_BTF, gaps_BT, mask_BT, aggregates_BPA)


def export_onnx(model: FraudModel, path: str | Path) -> Path:
    """Write `model`'s scoring pass to `path`: inputs events [B, T, F], gaps [B, T], mask [B, T]
    (bool) and aggregates [B, P, A] (P = A + 1: the transaction and one probe per feature), outputs
    the variants' logits [B, P] and the attention [B, T]."""
    B, T, F, A = 2, model.config.history, len(EVENT_FEATURES), len(FEATURES)
    mask_BT = torch.ones(B, T, dtype=torch.bool)
    mask_BT[0, : T // 2] = False  # a short history: the graph must not assume a full one
    examples = (torch.randn(B, T, F), torch.rand(B, T) * 3600, mask_BT, torch.randn(B, A + 1, A))
    return onnx_export.export_onnx(_Variants(model), examples, path, inputs=INPUTS, outputs=OUTPUTS)


class OnnxScoringPass:
    """An exported scoring pass under onnxruntime on CPU, called as `FraudModel.variants` is."""

    def __init__(self, path: str | Path, *, threads: int | None = None) -> None:
        self.session = onnx_session(
            path, inputs=INPUTS, outputs=OUTPUTS, threads=threads, what="fraud scoring pass"
        )

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`inputs`: events [B, T, F], gaps [B, T], mask [B, T] (bool), aggregates [B, P, A]."""
        feed = {name: tensor.numpy() for name, tensor in zip(INPUTS, inputs, strict=True)}
        logits_BP, weights_BT = self.session.run(list(OUTPUTS), feed)
        return torch.from_numpy(logits_BP), torch.from_numpy(weights_BT)


def load_scoring_pass(model: FraudModel, directory: str | Path, *, backend: Backend) -> ScoringPass:
    """`model` (loaded from `directory`) as the scorer's pass on `backend`: "torch" runs it in
    PyTorch; "onnx" exports `directory`/model.onnx first when it is missing or older than the
    weights (a few seconds), then runs it in onnxruntime on one thread."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; backends: {', '.join(BACKENDS)}")
    if backend == "torch":

        def torch_pass(*inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            with torch.inference_mode():
                return model.variants(*inputs)

        return torch_pass
    directory = Path(directory)
    onnx_path = directory / ONNX_FILE
    if is_stale(onnx_path, directory / WEIGHTS):
        export_onnx(model, onnx_path)
    return OnnxScoringPass(onnx_path, threads=1)
