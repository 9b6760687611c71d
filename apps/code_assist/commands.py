"""`verticals code ...`: the code-assist commands (the `verticals` command adds them).

    verticals code index ~/src/myproject --out runs/code_assist/index   # chunks + BM25 for context
    verticals serve --code-index runs/code_assist/index                 # completions use it
    verticals code eval humaneval --model embedded --samples 1 --temperature 0
    verticals code eval mbpp --model /models/deepseek-coder-1.3b-base --samples 10 --temperature 0.8
    verticals code eval humaneval --limit 5 --max-tokens 64              # a quick check
    verticals code train --out apps/code_assist/assets/fim              # the FIM adapter (27 min on 2 cores)
    verticals code ui --api http://127.0.0.1:8000                       # the Streamlit page
    VERTICALS_API_KEY=KEY verticals code ui                             # against a suite with a key

Arguments are parsed here and handed to `repository_index.py`, `evaluation.py`, `training.py`
and Streamlit.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

from apps.pages import page_process

from .settings import DEFAULT_EVALUATIONS_DIR
from .training import FimRun

UI_SCRIPT = Path(__file__).resolve().parent / "ui.py"


def add_commands(commands: argparse._SubParsersAction) -> None:
    code = commands.add_parser("code", help="code assist: index a repository, evaluate a model, train, UI")
    kinds = code.add_subparsers(dest="code_command", required=True)
    index = kinds.add_parser("index", help="chunk a repository by symbol and build its BM25 index")
    index.add_argument("path", type=Path, help="the repository's folder")
    index.add_argument(
        "--out", type=Path, default=Path("runs/code_assist/index"), help="index folder to write"
    )
    evaluate = kinds.add_parser("eval", help="pass@k on HumanEval or MBPP, executed in a sandbox")
    evaluate.add_argument("benchmark", choices=("humaneval", "mbpp"))
    evaluate.add_argument(
        "--model", default="embedded", help="preset or checkpoint directory (default: embedded)"
    )
    evaluate.add_argument("--adapter", type=Path, help="a PEFT LoRA directory to evaluate on the model")
    evaluate.add_argument("--samples", type=int, default=1, help="completions per problem (n of pass@k)")
    evaluate.add_argument("--temperature", type=float, default=0.0, help="0: greedy (one sample suffices)")
    evaluate.add_argument("--max-tokens", type=int, default=512)
    evaluate.add_argument("--limit", type=int, help="the first N problems only")
    evaluate.add_argument("--timeout", type=float, default=10.0, help="seconds per sample (wall and CPU)")
    evaluate.add_argument("--workers", type=int, default=2, help="samples executed at once")
    evaluate.add_argument(
        "--out", type=Path, default=DEFAULT_EVALUATIONS_DIR,
        help=f"folder for the JSON report, read by the UI (default: {DEFAULT_EVALUATIONS_DIR})",
    )  # fmt: skip
    train = kinds.add_parser("train", help="train the fill-in-the-middle adapter on installed packages")
    train.add_argument("--out", type=Path, required=True, help="adapter directory to write")
    train.add_argument(
        "--base", default="embedded", help="preset or checkpoint directory (default: embedded)"
    )
    train.add_argument("--examples", type=int, default=FimRun.examples)
    train.add_argument("--dev-examples", type=int, default=FimRun.dev_examples)
    train.add_argument("--epochs", type=int, default=FimRun.epochs)
    train.add_argument("--seed", type=int, default=FimRun.seed, help="of the cuts and the training order")
    ui = kinds.add_parser("ui", help="the Streamlit page: playground, evaluations, acceptance")
    ui.add_argument("--api", default="http://127.0.0.1:8000", help="the suite's URL")
    ui.add_argument(
        "--api-key", default=os.environ.get("VERTICALS_API_KEY"),
        help="the suite's key, if it was started with one (default: $VERTICALS_API_KEY)",
    )  # fmt: skip
    ui.add_argument("--port", type=int, default=8502)
    ui.add_argument("--host", default="127.0.0.1")


def run(args: argparse.Namespace) -> None:
    if args.code_command == "index":
        _index(args)
    elif args.code_command == "eval":
        _evaluate(args)
    elif args.code_command == "train":
        _train(args)
    elif args.code_command == "ui":
        sys.exit(ui_process(api=args.api, api_key=args.api_key, port=args.port, host=args.host).wait())


def _index(args: argparse.Namespace) -> None:
    from .repository_index import RepositoryIndex

    if not args.path.is_dir():
        raise FileNotFoundError(f"{args.path} is not a folder")
    index = RepositoryIndex.build(args.path, progress=True)
    index.save(args.out)
    print(f"verticals: indexed {len(index)} chunks of {index.files} files from {args.path} into {args.out}")


def _evaluate(args: argparse.Namespace) -> None:
    from .evaluation import evaluate_model

    report = evaluate_model(
        benchmark=args.benchmark,
        model=args.model,
        adapter=args.adapter,
        samples=args.samples,
        temperature=args.temperature,
        max_tokens=args.max_tokens,
        limit=args.limit,
        timeout_s=args.timeout,
        workers=args.workers,
    )
    print(report.table())
    args.out.mkdir(parents=True, exist_ok=True)
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{args.benchmark}-{Path(args.model).name}")
    if args.adapter:
        name += f"-{args.adapter.name}"
    path = args.out / f"{name}-n{args.samples}-t{args.temperature:g}.json"
    path.write_text(report.to_json(), encoding="utf-8")
    print(f"verticals: report written to {path}")


def _train(args: argparse.Namespace) -> None:
    from .training import train_fim

    run = FimRun(
        out=args.out,
        base=args.base,
        examples=args.examples,
        dev_examples=args.dev_examples,
        epochs=args.epochs,
    )
    result = train_fim(run)
    print(f"verticals: code adapter written to {result.path}; best dev {result.metrics['best']}")


def ui_process(
    *, api: str, port: int, host: str = "127.0.0.1", api_key: str | None = None
) -> subprocess.Popen[bytes]:
    """`streamlit run ui.py` against the API at `api` (with `api_key` if given); the caller waits
    for it or stops it."""
    return page_process(UI_SCRIPT, api=api, port=port, host=host, api_key=api_key)
