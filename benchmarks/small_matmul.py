"""A linear layer over a few rows, as a decode step runs it: `x @ W^T` (F.linear) against the same
product written `(W @ x^T)^T` (what `core_model.linear` does for 2 to 8 rows in float32 on a CPU
where its own short measurement finds it faster: `few_rows_layout`).

Each weight has the shape of one of the embedded model's linears, and enough copies of it rotate
to overflow the CPU's caches, so every product reads its weight from memory, as a decode step
does (it reads every weight once per step). The two results are checked to agree first.

    .venv/bin/python benchmarks/small_matmul.py                     # rows 1..64, one thread
    .venv/bin/python benchmarks/small_matmul.py --rows 1,4 --threads 2

It prints a table (microseconds per product and the ratio) and writes JSON to
benchmarks/results/small_matmul.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a clone without `pip install -e .`
    sys.path.insert(0, str(ROOT))

from benchmarks.common import aligned_rows, comma_separated, environment, write_report  # noqa: E402
from core_model.config import MoEConfig  # noqa: E402
from core_model.linear import FEW_ROWS, few_rows_layout  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "small_matmul.json"
MEMORY_BYTES = 96 * 2**20  # weights rotated through per shape: past any CPU's last-level cache


def embedded_shapes() -> dict[str, tuple[int, int]]:
    """(out, in) of the embedded model's linears, by name."""
    c = MoEConfig.preset("embedded")
    assert c.q_lora_rank is not None
    return {
        "q_b_proj": (c.num_attention_heads * c.qk_head_dim, c.q_lora_rank),
        "kv_a_proj_with_mqa": (c.kv_lora_rank + c.qk_rope_head_dim, c.hidden_size),
        "o_proj": (c.hidden_size, c.num_attention_heads * c.v_head_dim),
        "expert gate_up": (2 * c.moe_intermediate_size, c.hidden_size),
        "expert down": (c.hidden_size, c.moe_intermediate_size),
        "dense up": (c.intermediate_size, c.hidden_size),
        "lm_head": (c.vocab_size, c.hidden_size),
    }


def time_us(product, weights: list[torch.Tensor], repeats: int) -> float:
    """Median over 5 rounds of the mean microseconds per product, weights taken in turn."""
    rounds = []
    for _ in range(5):
        started = time.perf_counter()
        for i in range(repeats):
            product(weights[i % len(weights)])
        rounds.append((time.perf_counter() - started) / repeats * 1e6)
    return statistics.median(rounds)


def measure(shape: tuple[int, int], rows: int, repeats: int) -> dict:
    out_features, in_features = shape
    copies = max(2, MEMORY_BYTES // (out_features * in_features * 4))
    weights = [torch.randn(out_features, in_features) for _ in range(copies)]
    x = torch.randn(rows, in_features)
    torch.testing.assert_close(F.linear(x, weights[0]), torch.mm(weights[0], x.t()).t(), rtol=1e-4, atol=1e-4)
    plain = time_us(lambda w: F.linear(x, w), weights, repeats)
    transposed = time_us(lambda w: torch.mm(w, x.t()).t(), weights, repeats)
    return {"rows": rows, "x_Wt_us": round(plain, 1), "W_xt_us": round(transposed, 1)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=comma_separated(int), default=[1, 2, 4, 8, 16, 64])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the engine uses 1)")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    results = {
        name: [measure(shape, rows, args.repeats) for rows in args.rows]
        for name, shape in embedded_shapes().items()
    }
    table = [["linear (out, in)", *[f"{r} rows" for r in args.rows]]]
    shapes = embedded_shapes()
    for name, cells in results.items():
        table.append(
            [f"{name} {shapes[name]}"]
            + [f"{c['x_Wt_us']:.0f} / {c['W_xt_us']:.0f} ({c['x_Wt_us'] / c['W_xt_us']:.1f}x)" for c in cells]
        )
    print(f"microseconds per product, x @ W^T / (W @ x^T)^T (ratio), {args.threads} thread(s)")
    print("\n".join(aligned_rows(table)))
    layout = few_rows_layout()
    form = "(W @ x^T)^T" if layout == "transposed" else "x @ W^T"
    rows = f"{FEW_ROWS.start} to {FEW_ROWS.stop - 1} rows"
    print(f"core_model.linear measured {layout!r} on this CPU: {form} for {rows}")
    report = {
        "environment": environment(["cpu"]),
        "threads": args.threads,
        "shapes": shapes,
        "results": results,
        "few_rows_layout": layout,
    }
    write_report(report, args.out)


if __name__ == "__main__":
    main()
