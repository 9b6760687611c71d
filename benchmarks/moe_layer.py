"""One MoE layer forward: our grouped dispatch vs our looped reference vs transformers' DeepseekV3MoE.

Every layer holds the same weights (transformers' parameter names are ours, so one
`load_state_dict(strict=True)` copies them), and transformers runs once per experts implementation
it registers: "eager" plus every key of `ALL_EXPERTS_FUNCTIONS` ("batched_mm", "grouped_mm", and
the hub-kernel ones, "deepgemm" and "sonicmoe", which are reported as skipped where they cannot
load). Before any timing, each output is checked against ours and each transformers
implementation is checked to have been the one that ran.

Goal: our grouped dispatch at least 1.5x the fastest transformers implementation at 512 tokens,
and never slower than it at 1 token.

It is not a model benchmark (no attention, no KV cache, no batching of requests) and not a
training one: forward only, under `torch.inference_mode`.

    .venv/bin/python benchmarks/moe_layer.py              # presets embedded and small, cpu (+ cuda)
    .venv/bin/python benchmarks/moe_layer.py --quick      # tiny preset, float32, a few seconds
    .venv/bin/python benchmarks/moe_layer.py --presets small --tokens 512 --dtypes bfloat16 --threads 1

It prints a table and writes JSON (environment and every cell) to benchmarks/results/moe_layer.json.
Legend: T tokens, D hidden size.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import itertools
import math
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a clone without `pip install -e .`
    sys.path.insert(0, str(ROOT))

from transformers import DeepseekV3Config  # noqa: E402
from transformers.integrations.moe import ALL_EXPERTS_FUNCTIONS  # noqa: E402
from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3MoE  # noqa: E402

from benchmarks.common import aligned_rows, comma_separated, environment, write_report  # noqa: E402
from core_model.config import ConfigError, MoEConfig  # noqa: E402
from core_model.moe import MoE  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "moe_layer.json"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
# Max |ours - theirs| allowed, relative to max |ours|: summation order differs between them.
TOLERANCE = {"float32": 1e-5, "bfloat16": 2e-2}
OURS = ("grouped", "looped")
INIT_STD = 0.05  # std 0.02 leaves sigmoid router scores too flat for routing to matter
BIAS_STD = 0.02  # e_score_correction_bias: small, but nonzero so that it takes part in the choice
GOALS = {512: 1.5, 1: 1.0}  # tokens -> least speedup over the fastest transformers implementation


@dataclass(frozen=True)
class Settings:
    presets: list[str]
    tokens: list[int]
    dtypes: list[str]
    devices: list[str]
    min_repeats: int
    max_repeats: int
    warmup: int
    seconds: float  # timing budget per cell, all implementations together
    threads: int | None
    seed: int
    out: Path


def parse_args(argv: list[str] | None) -> Settings:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    csv = comma_separated
    parser.add_argument("--presets", type=csv(str), default=["embedded", "small"])
    parser.add_argument("--tokens", type=csv(int), default=[1, 16, 512])
    parser.add_argument("--dtypes", type=csv(str), default=["float32", "bfloat16"])
    parser.add_argument("--device", type=csv(str), default=None, help="default: cpu, and cuda if available")
    parser.add_argument("--min-repeats", type=int, default=5)
    parser.add_argument("--max-repeats", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls per implementation")
    parser.add_argument("--seconds", type=float, default=1.0, help="timing budget per cell")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads; default: torch's")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument(
        "--quick", action="store_true", help="smoke test (overrides the grid): tiny, tokens 1 and 16, float32"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.presets, args.tokens, args.dtypes = ["tiny"], [1, 16], ["float32"]
        args.min_repeats, args.max_repeats, args.warmup, args.seconds = 1, 2, 1, 0.0
        args.device = args.device or ["cpu"]
    for dtype in args.dtypes:
        if dtype not in DTYPES:
            parser.error(f"unknown dtype {dtype!r}; choose from {', '.join(DTYPES)}")
    for preset in args.presets:
        try:
            model_type = MoEConfig.preset(preset).model_type
        except ConfigError as error:
            parser.error(str(error))
        if model_type != "deepseek_v3":
            parser.error(f"preset {preset!r} is not deepseek_v3: transformers' DeepseekV3MoE cannot run it")
    devices = args.device or ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
    return Settings(
        presets=args.presets,
        tokens=args.tokens,
        dtypes=args.dtypes,
        devices=devices,
        min_repeats=args.min_repeats,
        max_repeats=max(args.max_repeats, args.min_repeats),
        warmup=args.warmup,
        seconds=args.seconds,
        threads=args.threads,
        seed=args.seed,
        out=args.out,
    )


# --------------------------------------------------------------------------------- layers
def build_ours(config: MoEConfig, *, dtype: torch.dtype, device: str, seed: int) -> MoE:
    torch.manual_seed(seed)
    moe = MoE(config).eval()
    with torch.no_grad():
        for param in moe.parameters():
            torch.nn.init.normal_(param, std=INIT_STD)
        moe.gate.e_score_correction_bias.normal_(std=BIAS_STD)
    return _cast_all_but_router(moe, dtype).to(device)


def build_transformers(ours: MoE, implementation: str) -> DeepseekV3MoE:
    """transformers' layer with our weights, running the given experts implementation."""
    hf_config = DeepseekV3Config(**ours.config.to_hf_dict())
    hf_config._experts_implementation = implementation
    theirs = DeepseekV3MoE(hf_config).eval()
    theirs.load_state_dict(ours.state_dict(), strict=True)  # same names; casts to their float32
    device = ours.gate.weight.device
    return _cast_all_but_router(theirs, ours.experts.down_proj.dtype).to(device)


def _cast_all_but_router(layer: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    for name, param in layer.named_parameters():
        if not name.startswith("gate."):  # routers stay float32 in both, as in checkpoints
            param.data = param.data.to(dtype)
    return layer


def transformers_implementations() -> list[str]:
    return ["eager", *ALL_EXPERTS_FUNCTIONS.keys()]


@contextlib.contextmanager
def count_calls(layer: DeepseekV3MoE, implementation: str) -> Iterator[list[int]]:
    """Counts calls of the experts function registered as `implementation`: proof that it ran."""
    original = type(layer.experts).forward.__wrapped__  # the eager forward, under the dispatcher
    registered = ALL_EXPERTS_FUNCTIONS.get_interface(implementation, original)
    calls = [0]

    def spy(*args, **kwargs):
        calls[0] += 1
        return registered(*args, **kwargs)

    ALL_EXPERTS_FUNCTIONS[implementation] = spy  # a local override of the shared instance
    try:
        yield calls
    finally:
        del ALL_EXPERTS_FUNCTIONS[implementation]


def build_runners(
    ours: MoE, x_BTD: torch.Tensor, dtype_name: str
) -> tuple[dict[str, Callable[[], torch.Tensor]], dict[str, dict]]:
    """Callables to time, and per implementation {"status", "max_abs_diff"} or {"status", "reason"}."""

    def run_ours(dispatch: str) -> Callable[[], torch.Tensor]:
        def run() -> torch.Tensor:
            ours.dispatch = dispatch
            return ours(x_BTD)

        return run

    runners = {name: run_ours(name) for name in OURS}
    with torch.inference_mode():
        expected = runners["grouped"]()
        looped_diff = (runners["looped"]() - expected).abs().max().item()
    scale = max(expected.abs().max().item(), 1.0)
    checks = {"grouped": {"status": "ok", "max_abs_diff": 0.0}}
    checks["looped"] = {"status": "ok", "max_abs_diff": looped_diff}
    for implementation in transformers_implementations():
        name = f"hf:{implementation}"
        try:
            theirs = build_transformers(ours, implementation)
            with torch.inference_mode(), count_calls(theirs, implementation) as calls:
                out = theirs(x_BTD)
        except Exception as error:  # hub kernels absent, no CUDA, wrong dtype: reported, not fatal
            checks[name] = {"status": "skipped", "reason": f"{type(error).__name__}: {error}"[:300]}
            continue
        assert theirs.experts.config._experts_implementation == implementation, name
        assert calls[0] == 1, f"{name}: its experts function ran {calls[0]} times, not once"
        checks[name] = {"status": "ok", "max_abs_diff": (out - expected).abs().max().item()}
        runners[name] = _bind(theirs, x_BTD)
    for name, check in checks.items():
        diff = check.get("max_abs_diff", 0.0)
        if diff > TOLERANCE[dtype_name] * scale:
            raise AssertionError(f"{name} differs from ours by {diff:.3g} (output scale {scale:.3g})")
    return runners, checks


def _bind(layer: torch.nn.Module, x_BTD: torch.Tensor) -> Callable[[], torch.Tensor]:
    return lambda: layer(x_BTD)


# --------------------------------------------------------------------------------- timing
def time_interleaved(
    runners: dict[str, Callable[[], torch.Tensor]], *, device: str, settings: Settings
) -> dict[str, list[float]]:
    """Milliseconds per call. Each round calls every implementation once, starting one further on,
    so that machine noise lands on all of them alike."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def timed(run: Callable[[], torch.Tensor]) -> float:
        sync()
        start = time.perf_counter()
        run()
        sync()
        return time.perf_counter() - start

    names = list(runners)
    with torch.inference_mode():
        round_s = 0.0
        for _ in range(max(settings.warmup, 1)):
            round_s = sum(timed(runners[name]) for name in names)
        repeats = max(settings.min_repeats, math.ceil(settings.seconds / max(round_s, 1e-9)))
        repeats = min(repeats, settings.max_repeats)
        times_ms: dict[str, list[float]] = {name: [] for name in names}
        for round_index in range(repeats):
            shift = round_index % len(names)
            for name in names[shift:] + names[:shift]:
                times_ms[name].append(timed(runners[name]) * 1e3)
    return times_ms


def run_cell(preset: str, *, device: str, dtype_name: str, tokens: int, settings: Settings) -> dict:
    config = MoEConfig.preset(preset)
    ours = build_ours(config, dtype=DTYPES[dtype_name], device=device, seed=settings.seed)
    generator = torch.Generator().manual_seed(settings.seed + tokens)
    x_BTD = torch.randn(1, tokens, config.hidden_size, generator=generator).to(device, DTYPES[dtype_name])
    runners, results = build_runners(ours, x_BTD, dtype_name)
    gc.collect()
    for name, times in time_interleaved(runners, device=device, settings=settings).items():
        quartiles = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
        results[name].update(
            median_ms=statistics.median(times),
            q1_ms=quartiles[0],
            q3_ms=quartiles[2],
            min_ms=min(times),
            repeats=len(times),
        )
    theirs = {
        name: r["median_ms"] for name, r in results.items() if name.startswith("hf:") and "median_ms" in r
    }
    fastest = min(theirs, key=theirs.__getitem__)
    grouped_ms = results["grouped"]["median_ms"]
    speedup = theirs[fastest] / grouped_ms
    goal = GOALS.get(tokens)
    return {
        "preset": preset,
        "device": device,
        "dtype": dtype_name,
        "tokens": tokens,
        "results": results,
        "fastest_transformers": fastest,
        "speedup": speedup,
        "speedup_vs_looped": results["looped"]["median_ms"] / grouped_ms,
        "max_abs_diff": max(r.get("max_abs_diff", 0.0) for r in results.values()),
        "goal_speedup": goal,
        "goal_met": None if goal is None else speedup >= goal,
    }


# --------------------------------------------------------------------------------- report
def format_table(cells: list[dict]) -> str:
    columns = list(dict.fromkeys(n for c in cells for n, r in c["results"].items() if "median_ms" in r))
    header = ["preset", "device", "dtype", "T", *(f"{n} ms" for n in columns), "speedup", "vs looped"]
    rows = [[*header, "max diff", "goal"]]
    for c in cells:
        times = [
            f"{c['results'][n]['median_ms']:.3f}" if "median_ms" in c["results"][n] else "-" for n in columns
        ]
        goal = (
            "" if c["goal_met"] is None else f"{'ok' if c['goal_met'] else 'MISSED'} (>={c['goal_speedup']}x)"
        )
        speedups = [f"{c['speedup']:.2f}x", f"{c['speedup_vs_looped']:.2f}x"]
        rows.append([c["preset"], c["device"], c["dtype"], str(c["tokens"]), *times, *speedups])
        rows[-1] += [f"{c['max_abs_diff']:.2g}", goal]
    lines = aligned_rows(rows)
    skipped = {n: r["reason"] for c in cells for n, r in c["results"].items() if r["status"] == "skipped"}
    lines += [f"skipped {name}: {reason}" for name, reason in skipped.items()]
    lines.append("speedup: fastest transformers median / our grouped median; vs looped: looped / grouped")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    settings = parse_args(argv)
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    cells = []
    grid = itertools.product(settings.presets, settings.devices, settings.dtypes, settings.tokens)
    for preset, device, dtype_name, tokens in grid:
        cell = run_cell(preset, device=device, dtype_name=dtype_name, tokens=tokens, settings=settings)
        grouped_ms = cell["results"]["grouped"]["median_ms"]
        print(
            f"{preset} {device} {dtype_name} T={tokens}: grouped {grouped_ms:.3f} ms, "
            f"{cell['speedup']:.2f}x {cell['fastest_transformers']}",
            flush=True,
        )
        cells.append(cell)
    report = {
        "environment": environment(settings.devices),
        "settings": {**asdict(settings), "out": str(settings.out)},
        "goal": "grouped >= 1.5x the fastest transformers implementation at 512 tokens, >= 1x at 1 token",
        "cells": cells,
    }
    print(format_table(cells))
    write_report(report, settings.out)
    return report


if __name__ == "__main__":
    main()
