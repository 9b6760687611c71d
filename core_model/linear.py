"""`Linear`: an `nn.Linear` that multiplies a few rows in the layout this CPU runs fastest.

A decode step multiplies each weight by one row per running sequence, reading every weight from
memory. With 2 to 8 rows in float32 on CPU, `x @ W^T` and the same product written `(W @ x^T)^T`
can differ by 1.5 to 3 times, and which one wins depends on the CPU: on one Xeon host the
transposed form streamed the weight 1.4-4x faster, on another (family 6, model 207) it ran 1.5-2x
slower. So the process measures both once, on the first few-row product, and keeps the faster
(`few_rows_layout`; `VERTICALS_FEW_ROWS_LAYOUT=plain|transposed` decides instead). With one row
both run the same matrix-vector kernel, and from 16 rows up they are level.
`benchmarks/small_matmul.py` measures both on the model's shapes.

    y = linear(x, weight, bias)     # F.linear's contract, any leading dimensions
"""

from __future__ import annotations

import functools
import os
import time

import torch
import torch.nn.functional as F
from torch import nn

FEW_ROWS = range(2, 9)  # rows for which the two layouts differ on CPU in float32
LAYOUTS = ("plain", "transposed")  # x @ W^T, (W @ x^T)^T
LAYOUT_VARIABLE = "VERTICALS_FEW_ROWS_LAYOUT"
TRANSPOSED_MARGIN = 1.2  # how much faster the transposed form must measure to be used


def few_rows_pay(rows: int, x: torch.Tensor) -> bool:
    """Whether `rows` rows of `x` multiply faster as (W @ x^T)^T on this CPU."""
    return (
        rows in FEW_ROWS
        and x.dtype == torch.float32
        and x.device.type == "cpu"
        and few_rows_layout() == "transposed"
    )


@functools.cache
def few_rows_layout() -> str:
    """ "plain" or "transposed": the layout of 2-8 float32 rows on this CPU, measured once per
    process (about 30 ms) unless VERTICALS_FEW_ROWS_LAYOUT names one."""
    chosen = os.environ.get(LAYOUT_VARIABLE, "").strip().lower()
    if chosen:
        if chosen not in LAYOUTS:
            raise ValueError(f"{LAYOUT_VARIABLE}={chosen!r}: expected one of {', '.join(LAYOUTS)}")
        return chosen
    plain, transposed = measure_layouts()
    return "transposed" if transposed * TRANSPOSED_MARGIN < plain else "plain"


def measure_layouts(
    *, rows: int = 4, shape: tuple[int, int] = (256, 256), megabytes: int = 16
) -> tuple[float, float]:
    """Seconds per product of `rows` rows by a weight read from past the core's own caches, as
    x @ W^T and as (W @ x^T)^T: the best of 5 rounds each, the layouts taking turns."""
    copies = max(2, megabytes * 2**20 // (shape[0] * shape[1] * 4))
    weights = [torch.full(shape, 0.5) for _ in range(copies)]
    x = torch.full((rows, shape[1]), 0.25)
    products = (lambda w: torch.mm(x, w.t()), lambda w: torch.mm(w, x.t()).t().contiguous())
    best = [float("inf"), float("inf")]
    with torch.inference_mode():
        for _ in range(5):
            for i, product in enumerate(products):
                started = time.perf_counter()
                for w in weights:
                    product(w)
                best[i] = min(best[i], (time.perf_counter() - started) / copies)
    return best[0], best[1]


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear(x, weight, bias), computed as (W @ x^T)^T where that is faster (few_rows_pay)."""
    rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
    if weight.dtype != x.dtype or not few_rows_pay(rows, x):
        return F.linear(x, weight, bias)
    y_NO = torch.mm(weight, x.reshape(rows, x.shape[-1]).t()).t().contiguous()
    if bias is not None:
        y_NO += bias
    return y_NO.view(*x.shape[:-1], weight.shape[0])


class Linear(nn.Linear):
    """nn.Linear (same parameters, same state-dict keys) whose forward is `linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
