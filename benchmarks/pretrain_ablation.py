"""Pre-training ablation: the MoE with bias updates, the MoE without them, and a dense model.

Three runs of the same preset, data, schedule and number of steps (`core_model.train.base`):
- "moe + bias updates": the default, auxiliary-loss-free balancing on;
- "moe, no bias updates": bias update rate 0, to show what the updates do to expert load;
- "dense": every layer a SwiGLU at least as wide as a MoE layer's active experts.
Reported: held-out loss on the standard-library files kept out of training, max/mean expert load
over the last logged steps (worst layer), tokens/s, parameters; and the unigram baseline.
Goals: the MoE beats the dense model on held-out loss; with bias updates max/mean load < 1.3.

    .venv/bin/python benchmarks/pretrain_ablation.py --steps 400
    .venv/bin/python benchmarks/pretrain_ablation.py --steps 400 --card core_model/assets/embedded
    .venv/bin/python benchmarks/pretrain_ablation.py --quick          # tiny preset, seconds

`--card DIR` also writes DIR/ablation.json and re-renders DIR/README.md (the model card).
It prints a table and writes JSON to benchmarks/results/pretrain_ablation.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a clone without `pip install -e .`
    sys.path.insert(0, str(ROOT))

from benchmarks.common import aligned_rows, environment, write_report  # noqa: E402
from core_model import train_tokenizer  # noqa: E402
from core_model.train.base import train_base  # noqa: E402
from core_model.train.corpus import read_source, stdlib_files  # noqa: E402
from core_model.train.model_card import ABLATION_FILE, write_model_card  # noqa: E402
from core_model.train.pretrain import PretrainConfig  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "pretrain_ablation.json"
LOAD_GOAL = 1.3
ARMS = {
    "moe + bias updates": {"dense": False, "bias": True},
    "moe, no bias updates": {"dense": False, "bias": False},
    "dense": {"dense": True, "bias": False},
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="embedded")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--bias-update-rate", type=float, default=PretrainConfig.bias_update_rate)
    parser.add_argument("--run-root", type=Path, default=ROOT / "runs" / "ablation")
    parser.add_argument("--card", type=Path, help="model directory whose card gets the ablation table")
    parser.add_argument("--quick", action="store_true", help="tiny preset on a few stdlib files, 6 steps")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    config = PretrainConfig(
        steps=args.steps, lr=args.lr, warmup_steps=min(100, args.steps // 10 + 1), eval_every=args.steps
    )
    kwargs: dict = {"tokenizer": "embedded"}
    if args.quick:
        config = replace(
            config, steps=6, seq_len=32, batch_size=4, micro_batch_size=4, warmup_steps=2, eval_every=6
        )
        files = [f for f in stdlib_files() if f.name in ("textwrap.py", "shlex.py", "glob.py")]
        corpus = args.run_root / "corpus"
        corpus.mkdir(parents=True, exist_ok=True)
        for i, file in enumerate(files):
            (corpus / f"{i}.py").write_text(read_source(file))
        kwargs = {
            "tokenizer": train_tokenizer([read_source(f) for f in files], vocab_size=300),
            "data": [corpus / "0.py", corpus / "1.py"],
            "held_out": [corpus / "2.py"],
        }
        args.preset = "tiny"
    runs = {}
    for name, arm in ARMS.items():
        run_dir = args.run_root / name.replace(" ", "_").replace(",", "").replace("+", "with")
        shutil.rmtree(run_dir, ignore_errors=True)
        arm_config = replace(config, bias_update_rate=args.bias_update_rate if arm["bias"] else 0.0)
        summary = train_base(args.preset, config=arm_config, run_dir=run_dir, dense=arm["dense"], **kwargs)
        runs[name] = {
            k: summary[k]
            for k in ("parameters", "active_parameters", "held_out_loss", "unigram_held_out_loss",
                      "tokens_per_second", "load_balance", "final_train_loss")
        }  # fmt: skip
    report = {
        "benchmark": "pretrain_ablation",
        "preset": args.preset,
        "steps": config.steps,
        "settings": vars(config),
        "environment": environment(["cpu"]),
        "runs": runs,
        "moe_beats_dense": runs["moe + bias updates"]["held_out_loss"] < runs["dense"]["held_out_loss"],
    }
    print(format_table(report))
    write_report(report, args.out)
    if args.card:
        (args.card / ABLATION_FILE).write_text(json.dumps(report, indent=2) + "\n")
        write_model_card(args.card)
        print(f"updated the model card in {args.card}")
    return report


def format_table(report: dict) -> str:
    header = ["run", "params (active)", "held-out loss", "max/mean load", "tok/s"]
    rows = []
    for name, run in report["runs"].items():
        load = run["load_balance"]
        rows.append(
            [
                name,
                f"{run['parameters'] / 1e6:.1f} M ({run['active_parameters'] / 1e6:.1f} M)",
                f"{run['held_out_loss']:.3f}",
                "n/a" if not load else f"{load['max_over_mean']:.2f} (goal < {LOAD_GOAL})",
                f"{run['tokens_per_second']:,.0f}",
            ]
        )
    unigram = next(iter(report["runs"].values()))["unigram_held_out_loss"]
    rows.append(["unigram baseline", "", f"{unigram:.3f}", "", ""])
    return "\n".join([f"{report['preset']}, {report['steps']} steps", *aligned_rows([header, *rows])])


if __name__ == "__main__":
    main()
