"""Our inference engine vs transformers' `generate`: tokens/s, time to first token, KV-cache bytes.

Both run the same checkpoint in the same dtype: a preset random-initialised by
`core_model.load_model`, written by `core_model.save_model` to a temporary directory, and read
back by `core_model.load_model` (ours) and by `transformers.AutoModelForCausalLM.from_pretrained`
(theirs, with its experts implementation set to `--hf-experts` and checked to have taken effect).
Weights are random because they do not change speed; prompts are random ids in [3, vocab), and
generation is greedy with EOS ignored, so every request makes exactly `--new-tokens` tokens.

Figures, per preset and concurrency C (all C requests arrive at t=0):
- C = 1: tokens/s of a whole generate, decode-only tokens/s (new tokens after the first, over
  the time after the first), time to first token. Ours steps the engine by hand
  (`add_request` + `step`) to see the first token; theirs times `generate(max_new_tokens=1)` apart.
- C > 1: aggregate tokens/s. Ours: `Engine.generate` on all prompts at once (continuous
  batching); theirs: `generate` on one static, left-padded batch with an attention mask. Time to
  first token P50/P99 for ours from a run stepped by hand; theirs is one prefill for everyone.
- Whether our greedy tokens equal theirs, in every cell.
- KV-cache bytes per token for the `deepseek-v3` shape in bfloat16: ours (the latent cache),
  what transformers 5 stores (measured on a model with DeepSeek-V3's attention widths), and a
  decompressed per-head K/V cache, which is what the "at least 50x smaller" goal is written against.

Goals (from the issue): ours >= 3x transformers at C = 1, >= 5x aggregate at C = 32.

Each figure is the median of up to `--repeats` runs, interleaved between ours and theirs. A run
during which other processes kept the machine busy (read from /proc/stat) is marked disturbed
and repeated; a cell whose reported run was still disturbed says so in the table's last column.

It is not a quality benchmark (random weights), not a GPU one (it runs where the model is,
CPU by default), and not a server one: no HTTP, no tokenizer, no streaming.

    .venv/bin/python benchmarks/engine.py                # embedded, small; C = 1, 8, 32: 7-10 min, 2 cores
    .venv/bin/python benchmarks/engine.py --quick        # tiny preset, a few seconds
    .venv/bin/python benchmarks/engine.py --presets embedded --concurrency 1,8 --threads 2

It prints a table and writes JSON (environment, settings and every cell) to
benchmarks/results/engine.json.
Legend: C concurrent requests, P prompt tokens, N new tokens, B batch rows, T padded prompt length.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a clone without `pip install -e .`
    sys.path.insert(0, str(ROOT))

from transformers import AutoModelForCausalLM, DeepseekV3Config, DeepseekV3ForCausalLM  # noqa: E402
from transformers.integrations.moe import ALL_EXPERTS_FUNCTIONS  # noqa: E402

from benchmarks.common import aligned_rows, comma_separated, environment, write_report  # noqa: E402
from core_model import ConfigError, MoEConfig, MoEForCausalLM, load_model, save_model  # noqa: E402
from core_model.engine import Engine, EngineConfig, SamplingParams  # noqa: E402
from core_model.engine.cache import LatentCache  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "engine.json"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
GOALS = {1: 3.0, 32: 5.0}  # concurrency -> least ratio of ours over transformers (tokens/s)
KV_GOAL = 50.0  # least ratio of a decompressed per-head K/V cache over ours, bytes per token
KV_SHAPE = "deepseek-v3"
MIN_PROMPT_ID = 3  # leaves bos (0), eos (1) and 2 out of the prompts
# A run is disturbed (and retried) when other processes kept busy more than the cores torch
# leaves idle plus this much; its figures then say more about the neighbours than about us.
DISTURBED_CORES = 0.25
MAX_RETRIES = 3  # extra rounds of runs to replace disturbed ones
MAX_BUDGETS = 4  # a measurement stops after this many budgets of runs, disturbed ones included


@dataclass(frozen=True)
class Settings:
    presets: list[str]
    dtype: str
    concurrency: list[int]
    prompt_tokens: int
    new_tokens: int
    reference_new_tokens: dict[int, int]  # C -> new tokens for transformers, where capped
    repeats: int  # timed runs per measurement at most; the median is reported
    budget_s: float  # no further repeats of a measurement once its undisturbed runs took this long
    hf_experts: str
    threads: int | None
    seed: int
    out: Path


def parse_args(argv: list[str] | None) -> Settings:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    csv = comma_separated
    parser.add_argument("--presets", type=csv(str), default=["embedded", "small"])
    parser.add_argument("--dtype", choices=list(DTYPES), default="float32")
    parser.add_argument("--concurrency", type=csv(int), default=[1, 8, 32])
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument(
        "--reference-new-tokens",
        type=csv(str),
        default=[],
        help="C:N pairs, e.g. 32:32: transformers makes only N new tokens at concurrency C "
        "(reported per token) where its full run would not fit the time budget",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement, at most")
    parser.add_argument(
        "--budget",
        type=float,
        default=15.0,
        help="seconds of undisturbed runs per measurement after which it is not repeated",
    )
    # grouped_mm: the fastest on CPU for whole generates (2-core Xeon, float32, 32 new tokens,
    # tokens/s at C=1 and 8): embedded eager 121/351, batched_mm 41/43, grouped_mm 130/428;
    # small eager 32/66, batched_mm 9.5/6.3, grouped_mm 29/71.
    parser.add_argument(
        "--hf-experts",
        default="grouped_mm",
        help="transformers' experts implementation (eager, grouped_mm, batched_mm, ...)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads; default: torch's")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: tiny, P=16, N=8, C=1 and 4, one repeat"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.presets, args.concurrency, args.repeats = ["tiny"], [1, 4], 1
        args.prompt_tokens, args.new_tokens, args.reference_new_tokens = 16, 8, []
    try:
        caps = {int(c): int(n) for c, n in (pair.split(":") for pair in args.reference_new_tokens)}
    except ValueError:
        parser.error(f"--reference-new-tokens wants C:N pairs, got {args.reference_new_tokens}")
    if min(args.concurrency) < 1 or args.prompt_tokens < 1 or args.new_tokens < 2 or args.repeats < 1:
        parser.error("concurrency, prompt tokens and repeats must be >= 1, new tokens >= 2")
    if args.hf_experts not in ("eager", *ALL_EXPERTS_FUNCTIONS.keys()):
        parser.error(f"unknown experts implementation {args.hf_experts!r}")
    for preset in args.presets:
        try:
            config = MoEConfig.preset(preset)
        except ConfigError as error:
            parser.error(str(error))
        if config.model_type != "deepseek_v3":
            parser.error(f"preset {preset!r} is not deepseek_v3")
        if args.prompt_tokens + args.new_tokens > config.max_position_embeddings:
            parser.error(f"P + N exceeds the context of preset {preset!r}")
    return Settings(
        presets=args.presets,
        dtype=args.dtype,
        concurrency=args.concurrency,
        prompt_tokens=args.prompt_tokens,
        new_tokens=args.new_tokens,
        reference_new_tokens={c: min(n, args.new_tokens) for c, n in caps.items()},
        repeats=args.repeats,
        budget_s=args.budget,
        hf_experts=args.hf_experts,
        threads=args.threads,
        seed=args.seed,
        out=args.out,
    )


# --------------------------------------------------------------------------------- models
def build_pair(preset: str, directory: Path, settings: Settings) -> tuple[MoEForCausalLM, torch.nn.Module]:
    """Ours and transformers', both read from one checkpoint written in `directory`."""
    save_model(load_model(preset), directory)
    dtype = DTYPES[settings.dtype]
    ours = load_model(directory, dtype=dtype)
    theirs = AutoModelForCausalLM.from_pretrained(
        directory, dtype=dtype, experts_implementation=settings.hf_experts
    ).eval()
    moe_layers = [layer.mlp for layer in theirs.model.layers if hasattr(layer.mlp, "experts")]
    taken = {layer.experts.config._experts_implementation for layer in moe_layers}
    if taken != {settings.hf_experts}:  # from_pretrained falls back silently on some errors
        raise RuntimeError(f"transformers runs experts implementation {taken}, not {settings.hf_experts}")
    return ours, theirs


def make_prompts(vocab_size: int, *, count: int, length: int, seed: int) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(MIN_PROMPT_ID, vocab_size, (count, length), generator=generator).tolist()


def make_engine(model: MoEForCausalLM, *, concurrency: int, settings: Settings) -> Engine:
    # No prefix caching: repeats reuse the same prompts, and transformers has no prefix cache.
    needed = concurrency * (settings.prompt_tokens + settings.new_tokens)
    config = EngineConfig(
        max_cache_tokens=max(EngineConfig.max_cache_tokens, needed),
        max_sequences=max(EngineConfig.max_sequences, concurrency),
        prefix_caching=False,
    )
    return Engine(model, config=config)


def greedy(new_tokens: int) -> SamplingParams:
    return SamplingParams(max_tokens=new_tokens, temperature=0.0, ignore_eos=True)


# --------------------------------------------------------------------------------- runs
def ours_generate(engine: Engine, prompts: list[list[int]], new_tokens: int) -> tuple[float, list[list[int]]]:
    """Seconds for `Engine.generate` on all prompts at once, and the new tokens of each."""
    start = time.perf_counter()
    outputs = engine.generate(prompts, greedy(new_tokens))
    seconds = time.perf_counter() - start
    return seconds, [output.token_ids for output in outputs]


def ours_stepped(engine: Engine, prompts: list[list[int]], new_tokens: int) -> tuple[float, dict]:
    """All prompts added at t=0, then `step()` by hand: when each first token appeared, in seconds."""
    start = time.perf_counter()
    ids = [engine.add_request(prompt, greedy(new_tokens)) for prompt in prompts]
    first: dict[str, float] = {}
    finals: dict[str, list[int]] = {}
    while len(finals) < len(ids):
        outputs = engine.step()
        now = time.perf_counter() - start
        for output in outputs:
            if output.token_ids and output.request_id not in first:
                first[output.request_id] = now
            if output.finished:
                finals[output.request_id] = output.token_ids
    total = time.perf_counter() - start
    return total, {"first_token_s": [first[i] for i in ids], "tokens": [finals[i] for i in ids]}


@torch.inference_mode()
def theirs_generate(
    model: torch.nn.Module, prompts: list[list[int]], new_tokens: int
) -> tuple[float, list[list[int]]]:
    """Seconds for transformers' `generate` on one static batch, left-padded, and the new tokens."""
    longest = max(len(prompt) for prompt in prompts)
    input_ids_BT = torch.zeros(len(prompts), longest, dtype=torch.long)
    mask_BT = torch.zeros_like(input_ids_BT)
    for row, prompt in enumerate(prompts):
        input_ids_BT[row, longest - len(prompt) :] = torch.tensor(prompt)
        mask_BT[row, longest - len(prompt) :] = 1
    device = model.device
    start = time.perf_counter()
    out_BT = model.generate(
        input_ids=input_ids_BT.to(device),
        attention_mask=mask_BT.to(device),
        max_new_tokens=new_tokens,
        do_sample=False,
        eos_token_id=None,  # ignore EOS, as ours does: every row makes exactly new_tokens
        pad_token_id=0,
    )
    seconds = time.perf_counter() - start
    return seconds, out_BT[:, longest:].tolist()


# --------------------------------------------------------------------------------- timing
@dataclass
class Run:
    seconds: float
    result: Any
    others_cores: float | None  # cores kept busy by other processes meanwhile; None: unknown
    idle_cores: int  # cores that torch's threads leave to others

    @property
    def disturbed(self) -> bool:
        return self.others_cores is not None and self.others_cores > self.idle_cores + DISTURBED_CORES


def timed(run: Callable[[], tuple[float, Any]]) -> Run:
    """Runs it, and measures how busy the rest of the machine was meanwhile (from /proc/stat).

    NOTE: on a shared machine, another process holding one core turns a 2-thread torch run
    10-100x slower (its threads wait on each other's time slices), so such runs are flagged.
    """
    gc.collect()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    idle_cores = max(cores - torch.get_num_threads(), 0)
    before, start = _cpu_seconds(), time.perf_counter()
    seconds, result = run()
    wall, after = time.perf_counter() - start, _cpu_seconds()
    if before is None or after is None:
        return Run(seconds, result, None, idle_cores)
    others_s = (after[0] - before[0]) - (after[1] - before[1])
    return Run(seconds, result, max(others_s, 0.0) / wall, idle_cores)


def _cpu_seconds() -> tuple[float, float] | None:
    """(busy CPU seconds of the whole machine, steal included; of this process), or None off Linux."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields)
    own = os.times()
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK"), own.user + own.system


def measure_interleaved(
    runs: dict[str, Callable[[], tuple[float, Any]]], settings: Settings
) -> dict[str, list[Run]]:
    """Every run of each measurement. Each round calls every measurement once, in turn, so that
    machine noise lands on all alike. A measurement stops at `settings.repeats` undisturbed runs,
    or once those took `settings.budget_s` (a slow reference at high concurrency runs once), or
    after MAX_RETRIES extra rounds or MAX_BUDGETS budgets of runs of any kind."""
    done: dict[str, list[Run]] = {name: [] for name in runs}
    for _ in range(settings.repeats + MAX_RETRIES):
        for name, run in runs.items():
            clean = [r.seconds for r in done[name] if not r.disturbed]
            spent = sum(r.seconds for r in done[name])
            enough = len(clean) >= settings.repeats or sum(clean) >= settings.budget_s
            if not enough and spent < MAX_BUDGETS * settings.budget_s:
                done[name].append(timed(run))
    return done


def median_run(runs: list[Run]) -> Run:
    """The undisturbed run of median time (the lower of an even count), its result with its time;
    among all runs where every one was disturbed."""
    pool = [run for run in runs if not run.disturbed] or runs
    return sorted(pool, key=lambda run: run.seconds)[(len(pool) - 1) // 2]


def percentile(values: list[float], q: int) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def first_difference(ours: list[list[int]], theirs: list[list[int]]) -> int | None:
    """Index of the first new token where some request differs (over the shorter run); None: none."""
    for a, b in zip(ours, theirs, strict=True):
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            if x != y:
                return i
    return None


# --------------------------------------------------------------------------------- cells
def warm_up(engine: Engine, theirs: torch.nn.Module, vocab_size: int) -> None:
    prompts = make_prompts(vocab_size, count=2, length=8, seed=12345)
    engine.generate(prompts, greedy(4))
    theirs_generate(theirs, prompts, 4)


def run_cell(
    ours: MoEForCausalLM, theirs: torch.nn.Module, *, preset: str, concurrency: int, settings: Settings
) -> dict:
    C, P, N = concurrency, settings.prompt_tokens, settings.new_tokens
    N_ref = settings.reference_new_tokens.get(C, N)
    prompts = make_prompts(ours.config.vocab_size, count=C, length=P, seed=settings.seed + C)
    engine = make_engine(ours, concurrency=C, settings=settings)
    warm_up(engine, theirs, ours.config.vocab_size)
    runs = measure_interleaved(
        {
            "ours": lambda: ours_generate(engine, prompts, N),
            "ours_stepped": lambda: ours_stepped(engine, prompts, N),
            "theirs": lambda: theirs_generate(theirs, prompts, N_ref),
            "theirs_first": lambda: theirs_generate(theirs, prompts, 1),
        },
        settings,
    )
    reported = {name: median_run(done) for name, done in runs.items()}
    ours_s, ours_tokens = reported["ours"].seconds, reported["ours"].result
    stepped_s, stepped = reported["ours_stepped"].seconds, reported["ours_stepped"].result
    theirs_s, theirs_tokens = reported["theirs"].seconds, reported["theirs"].result
    theirs_first_s = reported["theirs_first"].seconds
    assert all(len(t) == N for t in ours_tokens) and all(len(t) == N_ref for t in theirs_tokens)
    assert stepped["tokens"] == ours_tokens, "Engine.generate and stepping by hand gave other tokens"
    first_s = stepped["first_token_s"]
    ours_tps, theirs_tps = C * N / ours_s, C * N_ref / theirs_s
    difference = first_difference(ours_tokens, theirs_tokens)
    cell = {
        "preset": preset,
        "dtype": settings.dtype,
        "concurrency": C,
        "prompt_tokens": P,
        "new_tokens": N,
        "reference_new_tokens": N_ref,
        "ours_seconds": ours_s,
        "ours_tokens_per_s": ours_tps,
        "ours_stepped_seconds": stepped_s,
        "ours_ttft_p50_ms": percentile(first_s, 50) * 1e3,
        "ours_ttft_p99_ms": percentile(first_s, 99) * 1e3,
        "theirs_seconds": theirs_s,
        "theirs_tokens_per_s": theirs_tps,
        "theirs_ttft_ms": theirs_first_s * 1e3,  # one prefill gives every row its first token
        "ratio": ours_tps / theirs_tps,
        # decode-only: new tokens after the first, over the time after the (last) first token
        "ours_decode_tokens_per_s": C * (N - 1) / (stepped_s - max(first_s)),
        "theirs_decode_tokens_per_s": C * (N_ref - 1) / max(theirs_s - theirs_first_s, 1e-9),
        "same_greedy_tokens": difference is None,
        "first_difference": difference,
        "runs_s": {name: [run.seconds for run in done] for name, done in runs.items()},
        "others_cores": {name: [run.others_cores for run in done] for name, done in runs.items()},
        "disturbed": sorted(name for name, run in reported.items() if run.disturbed),
        "engine_config": {k: str(v) for k, v in asdict(engine.config).items()},
    }
    cell["decode_ratio"] = cell["ours_decode_tokens_per_s"] / cell["theirs_decode_tokens_per_s"]
    goal = GOALS.get(C)
    cell["goal_ratio"], cell["goal_met"] = goal, None if goal is None else cell["ratio"] >= goal
    return cell


# --------------------------------------------------------------------------------- KV cache
def kv_cache_bytes(shape: str = KV_SHAPE, dtype: torch.dtype = torch.bfloat16) -> dict:
    """Bytes per token, all layers, for `shape`: ours, transformers 5's (measured), decompressed K/V."""
    config = MoEConfig.preset(shape)
    element = torch.empty((), dtype=dtype).element_size()
    ours = config.kv_cache_bytes_per_token(dtype_bytes=element)
    # What our engine allocates: the latent cache of a tiny model, scaled from its width to shape's.
    tiny = MoEConfig.preset("tiny")
    tiny_cache = LatentCache(tiny, num_blocks=1, block_size=1, dtype=dtype, device="cpu")
    per_value = tiny_cache.bytes_per_token_per_layer / (tiny.kv_lora_rank + tiny.qk_rope_head_dim)
    ours_scaled = per_value * (config.kv_lora_rank + config.qk_rope_head_dim) * config.num_hidden_layers
    full_cache = LatentCache(config, num_blocks=1, block_size=1, dtype=dtype, device="cpu")
    if not ours == ours_scaled == full_cache.bytes_per_token_per_layer * config.num_hidden_layers:
        raise AssertionError(
            f"latent cache bytes per token disagree: {ours}, {ours_scaled}, {full_cache.width}"
        )
    theirs = measure_transformers_cache(config, dtype)
    theirs_total = theirs["bytes_per_token_per_layer"] * config.num_hidden_layers
    values_per_head = config.qk_nope_head_dim + config.qk_rope_head_dim + config.v_head_dim
    decompressed = config.num_attention_heads * values_per_head * element * config.num_hidden_layers
    return {
        "shape": shape,
        "dtype": str(dtype).removeprefix("torch."),
        "layers": config.num_hidden_layers,
        "ours_bytes_per_token": ours,
        "ours_latent_cache_bytes_per_token_per_layer": {
            "tiny": tiny_cache.bytes_per_token_per_layer,
            shape: full_cache.bytes_per_token_per_layer,
        },
        "transformers_bytes_per_token": theirs_total,
        "transformers_cache": theirs,
        "decompressed_bytes_per_token": decompressed,
        "ratio_vs_transformers": theirs_total / ours,
        "ratio_vs_decompressed": decompressed / ours,
        "goal_ratio": KV_GOAL,
        "goal_met": decompressed / ours >= KV_GOAL,
    }


@torch.inference_mode()
def measure_transformers_cache(config: MoEConfig, dtype: torch.dtype, tokens: int = 5) -> dict:
    """What transformers' DeepseekV3 keeps per token per layer, read off a real forward's cache.

    The model has `config`'s attention widths (heads, latent, rope, nope and value dims: all that
    the cache can depend on) but two layers, a small hidden size and vocabulary, and small experts,
    so that it builds in a second on CPU.
    """
    hf_config = DeepseekV3Config(
        **{
            **config.to_hf_dict(),
            "vocab_size": 64,
            "hidden_size": 64,
            "intermediate_size": 64,
            "moe_intermediate_size": 16,
            "q_lora_rank": 32,
            "num_hidden_layers": 2,
            "first_k_dense_replace": 1,
            "n_routed_experts": 8,
            "num_experts_per_tok": 2,
            "n_group": 1,
            "topk_group": 1,
        }
    )
    model = DeepseekV3ForCausalLM(hf_config).to(dtype).eval()
    out = model(torch.randint(0, 64, (1, tokens)), use_cache=True)
    cache = getattr(out, "cache", None) or out.past_key_values
    layers = []
    for layer in cache.layers:
        keys, values = layer.keys, layer.values
        nbytes = keys.numel() * keys.element_size() + values.numel() * values.element_size()
        layers.append({"keys": list(keys.shape), "values": list(values.shape), "bytes": nbytes})
    per_layer = {layer["bytes"] for layer in layers}
    if len(per_layer) != 1:
        raise AssertionError(f"transformers' cache layers differ in size: {layers}")
    return {
        "class": type(cache).__name__,
        "layers_measured": layers,
        "tokens": tokens,
        "bytes_per_token_per_layer": per_layer.pop() // tokens,
    }


# --------------------------------------------------------------------------------- report
def format_row(c: dict) -> list[str]:
    goal = "" if c["goal_met"] is None else f"{'ok' if c['goal_met'] else 'MISSED'} (>={c['goal_ratio']:g}x)"
    capped = "" if c["reference_new_tokens"] == c["new_tokens"] else f" (N={c['reference_new_tokens']})"
    return [
        c["preset"],
        c["dtype"],
        str(c["concurrency"]),
        f"{c['ours_tokens_per_s']:.1f}",
        f"{c['theirs_tokens_per_s']:.1f}{capped}",
        f"{c['ratio']:.2f}x",
        f"{c['ours_decode_tokens_per_s']:.1f}",
        f"{c['theirs_decode_tokens_per_s']:.1f}",
        f"{c['decode_ratio']:.2f}x",
        f"{c['ours_ttft_p50_ms']:.0f}",
        f"{c['ours_ttft_p99_ms']:.0f}",
        f"{c['theirs_ttft_ms']:.0f}",
        "yes" if c["same_greedy_tokens"] else f"no (from {c['first_difference']})",
        goal,
        ",".join(c["disturbed"]) or "quiet",
    ]


HEADER = [
    "preset",
    "dtype",
    "C",
    "ours tok/s",
    "hf tok/s",
    "ratio",
    "ours decode",
    "hf decode",
    "ratio",
    "ours TTFT p50 ms",
    "p99 ms",
    "hf TTFT ms",
    "same tokens",
    "goal",
    "machine",
]


def format_table(cells: list[dict], kv: dict) -> str:
    lines = aligned_rows([HEADER, *(format_row(c) for c in cells)])
    lines.append(
        "tok/s: C * N / seconds of the whole generate (aggregate); decode: tokens after the first / "
        "time after the first; hf TTFT: generate(max_new_tokens=1) of the whole batch; machine: "
        f"measurements whose reported run had other processes on > {DISTURBED_CORES} cores beyond those "
        "torch left idle (untrustworthy)"
    )
    v3 = kv["transformers_cache"]["layers_measured"][0]
    goal = f"{'ok' if kv['goal_met'] else 'MISSED'} (>={kv['goal_ratio']:g}x)"
    lines += [
        f"KV cache, {kv['shape']} {kv['dtype']}, bytes per token over {kv['layers']} layers:",
        f"  ours (latent)                   {kv['ours_bytes_per_token']:>10,}",
        f"  transformers 5 (measured)       {kv['transformers_bytes_per_token']:>10,}  "
        f"ratio {kv['ratio_vs_transformers']:.2f}x  (keys {v3['keys']}, values {v3['values']} per layer)",
        f"  decompressed per-head K/V       {kv['decompressed_bytes_per_token']:>10,}  "
        f"ratio {kv['ratio_vs_decompressed']:.1f}x  goal {goal}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    settings = parse_args(argv)
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    cells = []
    for preset in settings.presets:
        with tempfile.TemporaryDirectory(prefix=f"engine-bench-{preset}-") as directory:
            ours, theirs = build_pair(preset, Path(directory), settings)
            for concurrency in settings.concurrency:
                cell = run_cell(ours, theirs, preset=preset, concurrency=concurrency, settings=settings)
                row = zip(HEADER, format_row(cell), strict=True)
                print("  ".join(f"{name}={value}" for name, value in row), flush=True)
                cells.append(cell)
            del ours, theirs
            gc.collect()
    kv = kv_cache_bytes()
    report = {
        "environment": environment(["cpu"]),
        "settings": {**asdict(settings), "out": str(settings.out)},
        "goals": {
            "tokens_per_s": {str(c): g for c, g in GOALS.items()},
            "kv_cache_vs_decompressed": KV_GOAL,
        },
        "cells": cells,
        "kv_cache": kv,
    }
    print(format_table(cells, kv))
    write_report(report, settings.out)
    return report


if __name__ == "__main__":
    main()
