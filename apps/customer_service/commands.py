"""`verticals cs ...`: the customer-service commands (the `verticals` command adds them).

    verticals cs train intents --epochs 16 --out apps/customer_service/assets/intents  # BANKING77, 18 min
    verticals cs train slots --epochs 8 --out apps/customer_service/assets/slots       # NLU++ banking, 2 min
    verticals cs train replies --out apps/customer_service/assets/replies   # SGD Banks dialogues
    verticals cs train intents --epochs 1 --limit 300 --out /tmp/intents    # a quick check
    verticals cs kb import faq.csv policies.md --index-dir runs/customer_service/kb
    verticals cs console --api http://127.0.0.1:8000                        # the Streamlit console

Arguments are parsed here and handed to `training.py`, `retrieval.py` and Streamlit.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from apps.pages import page_process

from .settings import CustomerServiceSettings

UI_SCRIPT = Path(__file__).resolve().parent / "ui.py"
TRAINERS = ("intents", "slots", "replies", "sgd-intents")


def add_commands(commands: argparse._SubParsersAction) -> None:
    cs = commands.add_parser(
        "cs", help="customer service: train its adapters, import a knowledge base, console"
    )
    kinds = cs.add_subparsers(dest="cs_command", required=True)
    train = kinds.add_parser("train", help="train a customer-service adapter from the licensed datasets")
    train.add_argument("adapter", choices=TRAINERS)
    train.add_argument("--out", type=Path, required=True, help="adapter directory to write")
    train.add_argument(
        "--base", default="embedded", help="preset or checkpoint directory (default: embedded)"
    )
    train.add_argument("--epochs", type=int, default=4)
    train.add_argument("--limit", type=int, help="the first N examples of train and dev only (quick checks)")
    kb = kinds.add_parser("kb", help="the knowledge base")
    kb_kinds = kb.add_subparsers(dest="kb_command", required=True)
    imp = kb_kinds.add_parser(
        "import", help="index Markdown (## Title per entry) or CSV (question,answer) files"
    )
    imp.add_argument("files", nargs="+", type=Path)
    imp.add_argument("--index-dir", type=Path, default=Path(CustomerServiceSettings.index_dir))
    console = kinds.add_parser("console", help="the Streamlit agent console")
    console.add_argument("--api", default="http://127.0.0.1:8000", help="the suite's URL")
    console.add_argument("--port", type=int, default=8501)
    console.add_argument("--host", default="127.0.0.1")


def run(args: argparse.Namespace) -> None:
    if args.cs_command == "train":
        _train(args)
    elif args.cs_command == "kb":
        _import(args)
    elif args.cs_command == "console":
        sys.exit(console_process(api=args.api, port=args.port, host=args.host).wait())


def _train(args: argparse.Namespace) -> None:
    from . import training

    run = training.Run(out=args.out, base=args.base, epochs=args.epochs, limit=args.limit)
    trainer = {
        "intents": training.train_intents,
        "slots": training.train_slots,
        "replies": training.train_replies,
        "sgd-intents": training.train_sgd_intents,
    }[args.adapter]
    result = trainer(run)
    print(f"verticals: {args.adapter} adapter written to {result.path}; best dev {result.metrics['best']}")


def _import(args: argparse.Namespace) -> None:
    from .knowledge_base import read_sources
    from .retrieval import KnowledgeBase, MiniLMEmbeddings

    passages = read_sources(args.files)
    knowledge_base = KnowledgeBase.build(passages, MiniLMEmbeddings(), progress=True)
    knowledge_base.save(args.index_dir)
    print(
        f"verticals: indexed {len(knowledge_base)} passages from {len(args.files)} file(s) "
        f"into {args.index_dir}"
    )


def console_process(*, api: str, port: int, host: str = "127.0.0.1") -> subprocess.Popen[bytes]:
    """`streamlit run ui.py` against the API at `api`; the caller waits for it or stops it."""
    return page_process(UI_SCRIPT, api=api, port=port, host=host)
