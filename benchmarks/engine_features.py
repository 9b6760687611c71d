"""What two engine features cost: a mix of LoRA adapters, and weight-only int8.

- Adapters: aggregate tokens/s of C concurrent requests on the base model alone, then the same
  requests spread over 4 different adapters (rank 8 on the MLA projections, shared experts and
  dense MLP). Goal (from the issue): the mix keeps at least 70 % of the base-only throughput.
- int8: weight bytes and tokens/s of the int8 model against the same model in bfloat16, and
  greedy agreement over the new tokens (the share of each request's tokens, from the start, that
  match). NOTE: with the random `embedded` weights logits are nearly flat, so agreement here is a
  lower bound of what a trained model gives.

It is not the engine-vs-transformers benchmark (`benchmarks/engine.py`) and runs on CPU.

    .venv/bin/python benchmarks/engine_features.py            # embedded, C = 32: about a minute
    .venv/bin/python benchmarks/engine_features.py --quick    # tiny preset, a few seconds

It prints a table and writes JSON to benchmarks/results/engine_features.json.
Legend: C concurrent requests, P prompt tokens, N new tokens.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a clone without `pip install -e .`
    sys.path.insert(0, str(ROOT))

from benchmarks.common import environment, write_report  # noqa: E402
from core_model import MoEForCausalLM, load_model  # noqa: E402
from core_model.engine import Engine, EngineConfig, SamplingParams  # noqa: E402
from core_model.engine.lora import save_adapter  # noqa: E402
from core_model.engine.quantize import quantize_int8, weight_bytes  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "engine_features.json"
ADAPTER_TARGETS = (
    "q_a_proj",
    "q_b_proj",
    "kv_a_proj_with_mqa",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
)
ADAPTER_GOAL = 0.70


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="embedded")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--adapters", type=int, default=4)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--quick", action="store_true", help="tiny preset, C = 4, P = 16, N = 8")
    args = parser.parse_args(argv)
    if args.quick:
        args.preset, args.concurrency, args.prompt_tokens, args.new_tokens = "tiny", 4, 16, 8
    return args


def prompts(vocab_size: int, *, count: int, length: int) -> list[list[int]]:
    generator = torch.Generator().manual_seed(0)
    return [torch.randint(3, vocab_size, (length,), generator=generator).tolist() for _ in range(count)]


def timed_generate(
    engine: Engine, batch: list[list[int]], new_tokens: int, adapters: list[str | None]
) -> dict:
    params = SamplingParams(max_tokens=new_tokens, temperature=0, ignore_eos=True)
    engine.generate(batch[:1], SamplingParams(max_tokens=2, temperature=0, ignore_eos=True))  # warm-up
    ids = {
        engine.add_request(p, params, adapter=a): i
        for i, (p, a) in enumerate(zip(batch, adapters, strict=True))
    }
    tokens: dict[int, list[int]] = {}
    start = time.perf_counter()
    while len(tokens) < len(batch):
        tokens.update({ids[o.request_id]: o.token_ids for o in engine.step() if o.finished})
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "tokens_per_s": len(batch) * new_tokens / seconds,
        "token_ids": [tokens[i] for i in range(len(batch))],
    }


def random_adapter(directory: Path, model: MoEForCausalLM, *, seed: int, rank: int = 8) -> Path:
    generator = torch.Generator().manual_seed(seed)
    weights = {}
    for name, module in model.named_modules():
        linear = getattr(module, "base", module)  # already wrapped for an adapter loaded before
        if isinstance(linear, torch.nn.Linear) and name.rsplit(".", 1)[-1] in ADAPTER_TARGETS:
            weights[name] = (
                torch.randn(rank, linear.in_features, generator=generator) * 0.02,
                torch.randn(linear.out_features, rank, generator=generator) * 0.02,
            )
    return save_adapter(directory, weights, rank=rank, alpha=2 * rank)


def adapter_mix(args: argparse.Namespace, batch: list[list[int]]) -> dict:
    model = load_model(args.preset)
    engine = Engine(model, config=EngineConfig(max_loras=args.adapters, max_sequences=args.concurrency))
    base = timed_generate(engine, batch, args.new_tokens, [None] * len(batch))  # no adapter loaded yet
    names = [f"adapter{i}" for i in range(args.adapters)]
    with tempfile.TemporaryDirectory() as root:
        for i, name in enumerate(names):
            engine.load_adapter(name, random_adapter(Path(root) / name, model, seed=i))
    mixed = timed_generate(engine, batch, args.new_tokens, [names[i % len(names)] for i in range(len(batch))])
    ratio = mixed["tokens_per_s"] / base["tokens_per_s"]
    return {
        "base_tokens_per_s": base["tokens_per_s"],
        "mixed_tokens_per_s": mixed["tokens_per_s"],
        "adapters": args.adapters,
        "ratio": ratio,
        "goal": ADAPTER_GOAL,
        "goal_met": ratio >= ADAPTER_GOAL,
    }


def int8_against_bfloat16(args: argparse.Namespace, batch: list[list[int]]) -> dict:
    reference = load_model(args.preset, dtype=torch.bfloat16)
    quantized = quantize_int8(copy.deepcopy(reference))
    results = {}
    for label, model in (("bfloat16", reference), ("int8", quantized)):
        run = timed_generate(Engine(model), batch, args.new_tokens, [None] * len(batch))
        results[label] = {"weight_bytes": weight_bytes(model), **run}
    agreement = [
        _leading_match(a, b) / len(a)
        for a, b in zip(results["bfloat16"].pop("token_ids"), results["int8"].pop("token_ids"), strict=True)
    ]
    return {
        **results,
        "memory_ratio": results["int8"]["weight_bytes"] / results["bfloat16"]["weight_bytes"],
        "speed_ratio": results["int8"]["tokens_per_s"] / results["bfloat16"]["tokens_per_s"],
        "greedy_agreement_mean": sum(agreement) / len(agreement),
    }


def _leading_match(a: list[int], b: list[int]) -> int:
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        if x != y:
            return i
    return len(a)


def format_table(report: dict) -> str:
    mix, q = report["adapters"], report["int8"]
    goal = "ok" if mix["goal_met"] else "MISSED"
    return "\n".join(
        [
            f"adapters ({report['settings']['preset']}, C={report['settings']['concurrency']}):",
            f"  base only      {mix['base_tokens_per_s']:9.1f} tok/s",
            f"  {mix['adapters']} adapters mixed {mix['mixed_tokens_per_s']:8.1f} tok/s"
            f"   ratio {mix['ratio']:.2f}  goal >= {mix['goal']:.2f}: {goal}",
            "int8 against bfloat16:",
            f"  weights        {q['bfloat16']['weight_bytes'] / 2**20:8.1f} MiB -> "
            f"{q['int8']['weight_bytes'] / 2**20:.1f} MiB (x{q['memory_ratio']:.2f})",
            f"  tokens/s       {q['bfloat16']['tokens_per_s']:8.1f} -> {q['int8']['tokens_per_s']:.1f} "
            f"(x{q['speed_ratio']:.2f})",
            f"  greedy agreement, leading tokens: {q['greedy_agreement_mean']:.0%}"
            " (random weights: a lower bound)",
        ]
    )


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    vocab = load_model(args.preset).config.vocab_size
    batch = prompts(vocab, count=args.concurrency, length=args.prompt_tokens)
    report = {
        "environment": environment(["cpu"]),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "adapters": {},
        "int8": {},
    }
    report["adapters"] = adapter_mix(args, batch)
    report["int8"] = int8_against_bfloat16(args, batch)
    print(format_table(report))
    write_report(report, args.out)
    return report


if __name__ == "__main__":
    main()
