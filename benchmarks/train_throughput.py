"""Training throughput: one optimiser step (forward, backward, AdamW) of our model vs transformers'.

Both models hold the same weights (ours saved, transformers' `DeepseekV3ForCausalLM` loaded from
that checkpoint with its experts implementation `--hf-experts`) and train on the same random
token batches. Runs alternate between the two so machine noise lands on both; the median of the
timed steps counts. On CUDA both run under bfloat16 autocast (as `core_model.train.pretrain`
does) and the table adds model FLOPs utilisation: (6 x active parameters + attention) FLOPs per
token x tokens/s over the GPU's dense bfloat16 peak. Goal there: at least 35%.

    .venv/bin/python benchmarks/train_throughput.py                 # embedded and small, cpu (+ cuda)
    .venv/bin/python benchmarks/train_throughput.py --quick         # tiny preset, a few seconds

It prints a table and writes JSON to benchmarks/results/train_throughput.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a clone without `pip install -e .`
    sys.path.insert(0, str(ROOT))

from transformers import AutoModelForCausalLM  # noqa: E402

from benchmarks.common import aligned_rows, comma_separated, environment, write_report  # noqa: E402
from core_model import MoEConfig, MoEForCausalLM, save_model  # noqa: E402
from core_model.train.optim import adamw  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "train_throughput.json"
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12}  # dense, per GPU
MFU_GOAL = 0.35


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", type=comma_separated(str), default=["embedded", "small"])
    parser.add_argument("--devices", type=comma_separated(str), default=None, help="default: cpu (+ cuda)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per model")
    parser.add_argument("--hf-experts", default="grouped_mm", help="transformers' experts implementation")
    parser.add_argument("--quick", action="store_true", help="tiny preset, batch 2 x 32, 2 steps")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if args.quick:
        args.presets, args.batch_size, args.seq_len, args.steps = ["tiny"], 2, 32, 2
    if args.devices is None:
        args.devices = ["cpu", "cuda"] if torch.cuda.is_available() and not args.quick else ["cpu"]
    return args


def build_pair(preset: str, device: str, hf_experts: str, directory: Path) -> tuple[torch.nn.Module, ...]:
    config = MoEConfig.preset(preset)
    ours = MoEForCausalLM(config)
    ours.init_weights(torch.Generator().manual_seed(0))
    save_model(ours, directory)
    theirs = AutoModelForCausalLM.from_pretrained(
        directory, dtype=torch.float32, experts_implementation=hf_experts
    )
    return ours.to(device).train(), theirs.to(device).train()


def step_function(model: torch.nn.Module, batch_BT1: torch.Tensor, *, ours: bool) -> Callable[[], None]:
    optimizer = adamw(model, lr=1e-4)
    device = batch_BT1.device

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out = model(batch_BT1[:, :-1])
            logits = out if ours else out.logits
            loss = F.cross_entropy(logits.flatten(0, 1).float(), batch_BT1[:, 1:].flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def timed_steps(steps: dict[str, Callable[[], None]], count: int, device: str) -> dict[str, float]:
    """Median seconds per step of each, the two alternating, after one warm-up step each."""
    for step in steps.values():
        step()
    seconds: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(count):
        for name, step in steps.items():
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            step()
            if device == "cuda":
                torch.cuda.synchronize()
            seconds[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in seconds.items()}


def flops_per_token(config: MoEConfig, seq_len: int) -> float:
    """Training FLOPs per token: 6 x active parameters outside the embedding, plus causal attention."""
    active = config.num_parameters(active=True) - config.vocab_size * config.hidden_size
    attention = 3 * config.num_hidden_layers * config.num_attention_heads * seq_len
    return 6 * active + attention * (config.qk_head_dim + config.v_head_dim)


def peak_flops(device: str) -> float | None:
    if device != "cuda":
        return None
    name = torch.cuda.get_device_name()
    return next((flops for key, flops in PEAK_BF16_FLOPS.items() if key in name), None)


def run_cell(preset: str, device: str, args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as directory:
        ours, theirs = build_pair(preset, device, args.hf_experts, Path(directory))
    config = ours.config
    generator = torch.Generator().manual_seed(0)
    batch = torch.randint(10, config.vocab_size, (args.batch_size, args.seq_len + 1), generator=generator)
    batch = batch.to(device)
    seconds = timed_steps(
        {"ours": step_function(ours, batch, ours=True), "theirs": step_function(theirs, batch, ours=False)},
        args.steps,
        device,
    )
    tokens = args.batch_size * args.seq_len
    cell = {
        "preset": preset,
        "device": device,
        "dtype": "bfloat16 autocast" if device == "cuda" else "float32",
        "tokens_per_step": tokens,
        "ours_tokens_per_s": tokens / seconds["ours"],
        "theirs_tokens_per_s": tokens / seconds["theirs"],
        "ratio": seconds["theirs"] / seconds["ours"],
        "flops_per_token": flops_per_token(config, args.seq_len),
    }
    peak = peak_flops(device)
    cell["mfu"] = cell["flops_per_token"] * cell["ours_tokens_per_s"] / peak if peak else None
    del ours, theirs
    return cell


def format_table(cells: list[dict]) -> str:
    header = ["preset", "device", "dtype", "ours tok/s", "transformers tok/s", "ratio", "MFU"]
    rows = [
        [
            c["preset"],
            c["device"],
            c["dtype"],
            f"{c['ours_tokens_per_s']:,.0f}",
            f"{c['theirs_tokens_per_s']:,.0f}",
            f"{c['ratio']:.2f}x",
            "n/a" if c["mfu"] is None else f"{c['mfu']:.1%} (goal {MFU_GOAL:.0%})",
        ]
        for c in cells
    ]
    return "\n".join(aligned_rows([header, *rows]))


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    cells = [run_cell(preset, device, args) for device in args.devices for preset in args.presets]
    report = {
        "benchmark": "train_throughput",
        "settings": {
            "batch_size": args.batch_size,
            "seq_len": args.seq_len,
            "steps": args.steps,
            "hf_experts": args.hf_experts,
        },
        "environment": environment(args.devices),
        "cells": cells,
    }
    print(format_table(cells))
    write_report(report, args.out)
    return report


if __name__ == "__main__":
    main()
