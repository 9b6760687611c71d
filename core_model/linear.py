"""`Linear`: an `nn.Linear` that multiplies a few rows in the layout the CPU runs fastest.

A decode step multiplies each weight by one row per running sequence. With 2 to 8 rows in float32
on CPU, MKL computes `x @ W^T` 1.5 to 3 times slower than the same product written `(W @ x^T)^T`,
which streams the weight's rows (a decode step reads every weight from memory, so that is its
cost); with one row both run the same matrix-vector kernel, and from 16 rows up they are level.
`benchmarks/small_matmul.py` measures both on the model's shapes.

    y = linear(x, weight, bias)     # F.linear's contract, any leading dimensions
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

FEW_ROWS = range(2, 9)  # rows for which (W @ x^T)^T beats x @ W^T on CPU in float32


def few_rows_pay(rows: int, x: torch.Tensor) -> bool:
    """Whether `rows` rows of `x` multiply faster as (W @ x^T)^T."""
    return rows in FEW_ROWS and x.dtype == torch.float32 and x.device.type == "cpu"


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear(x, weight, bias), computed as (W @ x^T)^T where that is faster (few_rows_pay)."""
    rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
    if not few_rows_pay(rows, x) or weight.dtype != x.dtype:
        return F.linear(x, weight, bias)
    y_NO = torch.mm(weight, x.reshape(rows, x.shape[-1]).t()).t().contiguous()
    if bias is not None:
        y_NO += bias
    return y_NO.view(*x.shape[:-1], weight.shape[0])


class Linear(nn.Linear):
    """nn.Linear (same parameters, same state-dict keys) whose forward is `linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
