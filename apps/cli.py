"""The `verticals` command: the one entry point of the suite.

    verticals info                       # the embedded default model
    verticals info --model tiny          # any preset
    verticals info --model CHECKPOINT    # a Hugging Face DeepSeek-V2/V3 directory (reads config.json only)
    verticals serve                      # the OpenAI-compatible API on http://127.0.0.1:8000/v1
    verticals serve --model CHECKPOINT --host 0.0.0.0 --api-key KEY   # (or VERTICALS_API_KEY=KEY)
    verticals serve --adapter sql=/adapters/sql    # a PEFT LoRA directory, used as model "embedded:sql"
    verticals serve --cs-database postgresql://...  # the customer-service router's database (/cs)
    verticals serve --code-index runs/code_assist/index   # code completions with repository context (/code)
    verticals run                        # `make run`: the API and every page (console :8501, code :8502,
                                         # medical :8503, fraud desk :8504 with a day replayed into it,
                                         # defect dashboard :8505 with a simulated line)
    verticals cs train intents --out DIR  # customer-service adapters, knowledge base, console
    verticals code eval humaneval        # code assist: index a repository, evaluate a model, train, UI
    verticals qc train                   # industrial QC: train, evaluate, export the inspection model
    verticals train base --preset embedded --steps 2500 --export core_model/assets/embedded
    torchrun --nproc-per-node 2 -m apps.cli train base ...        # the same, over 2 processes
    verticals train adapter --task sequence-classification --train t.jsonl --dev d.jsonl --out adapters/x
    verticals train prune --keep 8 --export pruned/       # drop the least-used experts
    verticals train distill --layers 3 --steps 500 --export student/

It is the composition root: the only code that knows every app. It parses arguments and prints;
the work happens in `core_model` and the apps.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import signal
import sys
from datetime import date
from pathlib import Path

from apps.code_assist import commands as code_commands
from apps.code_assist.settings import CodeAssistSettings
from apps.customer_service import commands as cs_commands
from apps.customer_service.settings import CustomerServiceSettings
from apps.finance_risk import commands as finance_commands
from apps.finance_risk.settings import FinanceSettings
from apps.industrial_qc import commands as qc_commands
from apps.industrial_qc import desk as qc_desk
from apps.industrial_qc.settings import QCSettings
from apps.medical import commands as medical_commands
from apps.medical.settings import MedicalSettings
from core_model import ConfigError, MoEConfig
from core_model.checkpoint import ASSETS
from core_model.config import PRESETS

DEFAULT_MODEL = "embedded"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="verticals", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    info = commands.add_parser("info", help="print a model's architecture and memory arithmetic")
    info.add_argument("--model", default=DEFAULT_MODEL, help="preset name or checkpoint directory")
    serve = commands.add_parser("serve", help="serve the model over an OpenAI-compatible HTTP API")
    serve.add_argument("--model", default=DEFAULT_MODEL, help="preset name or checkpoint directory")
    serve.add_argument("--served-model-name", help="the model id clients send (default: --model)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--api-key",
        default=os.environ.get("VERTICALS_API_KEY"),
        help="require `Authorization: Bearer KEY` (default: $VERTICALS_API_KEY); needed off loopback",
    )
    serve.add_argument("--max-cache-tokens", type=int, help="KV cache capacity in tokens")
    serve.add_argument("--max-queue", type=int, default=256, help="waiting requests before 429")
    serve.add_argument(
        "--no-access-log", action="store_true", help="no log line per request (errors are still logged)"
    )
    serve.add_argument(
        "--quantize", choices=["int8"], help="weight-only int8 for linears and experts (about 1/4 the memory)"
    )
    serve.add_argument(
        "--engine-replicas",
        type=_replica_count,
        default="auto",
        help="engines for streamed requests, one process each (default auto: one per CPU core while "
        "their weights fit in 2 GiB; one on CUDA)",
    )
    serve.add_argument(
        "--adapter",
        action="append",
        default=[],
        type=_adapter,
        metavar="NAME=DIR",
        help="load a PEFT LoRA directory, used as model MODEL:NAME (repeatable)",
    )
    serve.add_argument(
        "--cs-database",
        default=os.environ.get("VERTICALS_DATABASE_URL", CustomerServiceSettings.database_url),
        help="customer service: its database URL (default: $VERTICALS_DATABASE_URL, else a SQLite file)",
    )
    serve.add_argument(
        "--cs-knowledge-base", nargs="+", default=[], metavar="FILE",
        help="customer service: Markdown or CSV knowledge base (default: the imported index, else the demo)",
    )  # fmt: skip
    serve.add_argument("--cs-index-dir", default=CustomerServiceSettings.index_dir)
    for kind in ("intent", "slot", "reply"):
        serve.add_argument(
            f"--cs-{kind}-adapter",
            default=getattr(CustomerServiceSettings, f"{kind}_adapter"),
            help=f"customer service: the {kind} adapter directory (default: the shipped one)",
        )
    serve.add_argument(
        "--cs-draft-copy-bias", type=_copy_bias, metavar="BIAS",
        default=CustomerServiceSettings.draft_copy_bias,
        help="customer service: how strongly drafts copy their passages: inf (default) writes their "
        "sentences alone, 0 lets the model write freely, a number between pulls it towards them",
    )  # fmt: skip
    serve.add_argument("--no-customer-service", action="store_true", help="leave the /cs router out")
    serve.add_argument(
        "--code-database",
        default=os.environ.get("VERTICALS_DATABASE_URL", CodeAssistSettings.database_url),
        help="code assist: its database URL (default: $VERTICALS_DATABASE_URL, else a SQLite file)",
    )
    serve.add_argument("--code-index", help="code assist: a `verticals code index` folder used as context")
    serve.add_argument(
        "--code-adapter", default=CodeAssistSettings.adapter,
        help="code assist: the fill-in-the-middle adapter directory (default: the shipped one)",
    )  # fmt: skip
    serve.add_argument(
        "--code-max-tokens", type=int, default=CodeAssistSettings.max_tokens,
        help=f"code assist: new tokens per completion at most (default {CodeAssistSettings.max_tokens})",
    )  # fmt: skip
    serve.add_argument(
        "--code-copy-bias", type=_copy_bias, metavar="BIAS", default=CodeAssistSettings.copy_bias,
        help="code assist: how strongly a completion is pulled along an index snippet its line occurs "
        f"in (default {CodeAssistSettings.copy_bias:g}; 0: off)",
    )  # fmt: skip
    serve.add_argument("--no-code-assist", action="store_true", help="leave the /code router out")
    serve.add_argument(
        "--medical-registry", default=MedicalSettings.registry,
        help="medical: the adapter registry the federation publishes to (default: %(default)s)",
    )  # fmt: skip
    serve.add_argument(
        "--medical-rounds-database", default=MedicalSettings.rounds_database,
        help="medical: the database `verticals fed run` records rounds in (default: %(default)s)",
    )  # fmt: skip
    serve.add_argument("--no-medical", action="store_true", help="leave the /medical router out")
    serve.add_argument(
        "--finance-model", default=FinanceSettings.model,
        help="finance: the fraud model folder (default: %(default)s; /finance/score answers 503 without one)",
    )  # fmt: skip
    serve.add_argument(
        "--finance-database", default=FinanceSettings.database,
        help="finance: the database of transactions and labels (default: %(default)s)",
    )  # fmt: skip
    serve.add_argument(
        "--finance-threshold", type=float, default=FinanceSettings.threshold,
        help="finance: alert when a score reaches this (default %(default)s; a request may set its own)",
    )  # fmt: skip
    serve.add_argument(
        "--finance-backend", choices=["torch", "onnx"], default=FinanceSettings.backend,
        help="finance: run the scoring pass in onnxruntime (exported on first use) or PyTorch "
        "(default: %(default)s)",
    )  # fmt: skip
    serve.add_argument("--no-finance", action="store_true", help="leave the /finance router out")
    serve.add_argument(
        "--qc-model", default=QCSettings.model,
        help="industrial QC: the inspection model folder (default: %(default)s; "
        "/qc/inspect answers 503 without one)",
    )  # fmt: skip
    serve.add_argument(
        "--qc-database", default=QCSettings.database,
        help="industrial QC: the database of inspections, feedback and settings (default: %(default)s)",
    )  # fmt: skip
    serve.add_argument(
        "--qc-images", default=QCSettings.images,
        help="industrial QC: the folder of uploaded images, one file per content (default: %(default)s)",
    )  # fmt: skip
    serve.add_argument(
        "--qc-threshold", type=float, default=QCSettings.threshold,
        help="industrial QC: a part fails when pred_score reaches this, until an operator sets one "
        "(default %(default)s)",
    )  # fmt: skip
    serve.add_argument(
        "--qc-backend", choices=["torch", "onnx"], default=QCSettings.backend,
        help="industrial QC: run the model in PyTorch or onnxruntime (exported on first use)",
    )  # fmt: skip
    serve.add_argument("--no-qc", action="store_true", help="leave the /qc router out")
    run = commands.add_parser("run", help="the suite's API and the customer-service console (`make run`)")
    run.add_argument("--port", type=int, default=8000, help="API port")
    run.add_argument("--console-port", type=int, default=8501, help="customer-service console port")
    run.add_argument("--code-port", type=int, default=8502, help="code-assist page port")
    run.add_argument("--medical-port", type=int, default=8503, help="medical federation page port")
    run.add_argument("--finance-port", type=int, default=8504, help="fraud desk port")
    run.add_argument(
        "--finance-day", type=date.fromisoformat, default=finance_commands.DEFAULT_DAY,
        help="the day replayed into the scoring API (default %(default)s)",
    )  # fmt: skip
    run.add_argument(
        "--finance-rate",
        type=float,
        default=20.0,
        help="replayed transactions per second (default %(default)s)",
    )
    run.add_argument("--no-finance-replay", action="store_true", help="no seeding and no replay of a day")
    run.add_argument("--finance-model", default=FinanceSettings.model, help="the fraud model (%(default)s)")
    run.add_argument("--finance-database", default=FinanceSettings.database, help="(default: %(default)s)")
    run.add_argument("--qc-port", type=int, default=qc_desk.DEFAULT_UI_PORT, help="defect dashboard port")
    run.add_argument(
        "--qc-rate", type=float, default=1.0, help="simulated line: parts per second (%(default)s)"
    )
    run.add_argument("--no-qc-replay", action="store_true", help="no simulated production line")
    run.add_argument("--qc-model", default=QCSettings.model, help="the inspection model (%(default)s)")
    run.add_argument("--qc-database", default=QCSettings.database, help="(default: %(default)s)")
    run.add_argument("--qc-images", default=QCSettings.images, help="(default: %(default)s)")
    _add_train_commands(commands)
    cs_commands.add_commands(commands)
    code_commands.add_commands(commands)
    medical_commands.add_commands(commands)
    finance_commands.add_commands(commands)
    qc_commands.add_commands(commands)
    args = parser.parse_args(argv)
    try:
        if args.command == "info":
            print(describe(args.model))
        elif args.command == "serve":
            run_server(args)
        elif args.command == "train":
            run_train(args)
        elif args.command == "run":
            run_suite(args)
        elif args.command == "cs":
            cs_commands.run(args)
        elif args.command == "code":
            code_commands.run(args)
        elif args.command in ("fed", "medical"):
            medical_commands.run(args)
        elif args.command == "finance":
            finance_commands.run(args)
        elif args.command == "qc":
            qc_commands.run(args)
    except (ConfigError, FileNotFoundError, ValueError) as error:
        print(f"verticals: error: {error}", file=sys.stderr)
        return 2
    return 0


def run_server(args: argparse.Namespace) -> None:
    """Settings first (an unsafe bind fails before anything loads), then the app, then uvicorn."""
    # Imported here: `info` must work without the serve extra (fastapi, uvicorn).
    import uvicorn

    from apps.suite import create_app
    from core_model.serve import ServeSettings

    settings = ServeSettings(
        model=args.model,
        served_model_name=args.served_model_name,
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        max_queue=args.max_queue,
        max_cache_tokens=args.max_cache_tokens,
        adapters=tuple(args.adapter),
        quantize=args.quantize,
        engine_replicas=args.engine_replicas,
    )
    customer_service = None
    if not args.no_customer_service:
        customer_service = CustomerServiceSettings(
            database_url=args.cs_database,
            knowledge_base=tuple(args.cs_knowledge_base),
            index_dir=args.cs_index_dir,
            intent_adapter=args.cs_intent_adapter,
            slot_adapter=args.cs_slot_adapter,
            reply_adapter=args.cs_reply_adapter,
            draft_copy_bias=args.cs_draft_copy_bias,
        )
    code_assist = None
    if not args.no_code_assist:
        code_assist = CodeAssistSettings(
            database_url=args.code_database,
            index_dir=args.code_index,
            adapter=args.code_adapter,
            max_tokens=args.code_max_tokens,
            copy_bias=args.code_copy_bias,
        )
    medical = None
    if not args.no_medical:
        medical = MedicalSettings(
            registry=args.medical_registry, rounds_database=args.medical_rounds_database
        )
    finance = None
    if not args.no_finance:
        finance = FinanceSettings(
            database=args.finance_database, model=args.finance_model, threshold=args.finance_threshold,
            backend=args.finance_backend,
        )  # fmt: skip
    industrial_qc = None
    if not args.no_qc:
        industrial_qc = QCSettings(
            database=args.qc_database, model=args.qc_model, images=args.qc_images,
            threshold=args.qc_threshold, backend=args.qc_backend,
        )  # fmt: skip
    app = create_app(
        settings, customer_service=customer_service, code_assist=code_assist, medical=medical,
        finance=finance, industrial_qc=industrial_qc,
    )  # fmt: skip
    auth = "Bearer key required" if settings.api_key else "no API key"
    print(f"verticals: serving {settings.model_name!r} at {settings.url}/v1 ({auth})")
    print(f"verticals: health at {settings.url}/health, metrics at {settings.url}/metrics")
    sys.stdout.flush()
    # NOTE: the models, tokenizer and tables loaded above are millions of long-lived objects; left to
    # the garbage collector, each of its full passes walks them all and stalls every request for
    # a quarter of a second (the fraud desk's P99 at 20 clients: 223-249 ms with, 21-27 without).
    gc.collect()
    gc.freeze()
    uvicorn.run(
        app, host=settings.host, port=settings.port, log_level="info", access_log=not args.no_access_log
    )


def run_suite(args: argparse.Namespace) -> None:
    """`make run`: the Streamlit pages in subprocesses; the fraud desk's store seeded for its replay
    (before the API, which reads its recent history at start) and the replay in a subprocess; the
    API in this one."""
    api = f"http://127.0.0.1:{args.port}"
    pages = [
        cs_commands.console_process(api=api, port=args.console_port),
        code_commands.ui_process(api=api, port=args.code_port),
        medical_commands.ui_process(api=api, port=args.medical_port),
        finance_commands.ui_process(api=api, port=args.finance_port),
        qc_desk.ui_process(api=api, port=args.qc_port),
    ]
    print(f"verticals: agent console at http://127.0.0.1:{args.console_port} (API {api})")
    print(f"verticals: code assist at http://127.0.0.1:{args.code_port}; editors: {api}/code")
    print(f"verticals: medical federation page at http://127.0.0.1:{args.medical_port}")
    print(f"verticals: fraud desk at http://127.0.0.1:{args.finance_port}")
    print(f"verticals: defect dashboard at http://127.0.0.1:{args.qc_port}")
    # uvicorn stops on SIGTERM, then raises it again: exiting then runs the `finally` that stops the pages
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    replays: list = []
    try:
        if not args.no_finance_replay:  # the pages wait for the API meanwhile
            replays.append(finance_commands.start_replay(
                api=api, day=args.finance_day, rate=args.finance_rate,
                settings=FinanceSettings(database=args.finance_database, model=args.finance_model),
            ))  # fmt: skip
        if not args.no_qc_replay:  # it waits for the API too
            replays.append(qc_desk.start_replay(api=api, rate=args.qc_rate, model=args.qc_model))
        # The simulated lines post a transaction and a part every second: no line for each.
        main(["serve", "--port", str(args.port), "--no-access-log", "--finance-model", args.finance_model,
              "--finance-database", args.finance_database, "--qc-model", args.qc_model,
              "--qc-database", args.qc_database, "--qc-images", args.qc_images])  # fmt: skip
    finally:
        for process in [*pages, *(replay for replay in replays if replay)]:
            process.terminate()
            process.wait(timeout=10)


def _add_train_commands(commands: argparse._SubParsersAction) -> None:
    from core_model.train.adapters import AdapterTrainingConfig
    from core_model.train.examples import TASKS
    from core_model.train.pretrain import PretrainConfig

    train = commands.add_parser("train", help="pre-train a base model, train an adapter, compress a model")
    kinds = train.add_subparsers(dest="train_command", required=True)
    base = kinds.add_parser("base", help="pre-train a base model (the embedded default) from text")
    base.add_argument("--preset", default="embedded", help="model shape (default: embedded)")
    base.add_argument("--tokenizer", default="embedded", help="preset or directory with tokenizer.json")
    base.add_argument(
        "--data", nargs="+", type=Path, help="text files or folders (default: the suite corpus)"
    )
    base.add_argument("--held-out", nargs="+", type=Path, help="text files or folders for held-out loss")
    base.add_argument("--dense", action="store_true", help="train the dense baseline of the preset")
    base.add_argument("--run-dir", type=Path, help="checkpoints and log.jsonl (default: runs/PRESET)")
    base.add_argument("--export", type=Path, help="write the trained checkpoint and model card here")
    base.add_argument("--no-resume", action="store_true", help="start over even if run-dir has a checkpoint")
    base.add_argument("--no-progress", action="store_true")
    _add_options(base, PretrainConfig())

    adapter = kinds.add_parser("adapter", help="train a LoRA adapter (and task head) on JSONL examples")
    adapter.add_argument("--task", required=True, choices=TASKS)
    adapter.add_argument("--train", required=True, type=Path, help="JSONL training examples")
    adapter.add_argument("--dev", required=True, type=Path, help="JSONL dev examples (early stopping)")
    adapter.add_argument("--out", required=True, type=Path, help="adapter directory to write")
    adapter.add_argument("--model", default=DEFAULT_MODEL, help="base: preset or checkpoint directory")
    adapter.add_argument("--labels", help="comma-separated label order (default: sorted training labels)")
    adapter.add_argument("--no-progress", action="store_true")
    _add_options(adapter, AdapterTrainingConfig())

    prune = kinds.add_parser("prune", help="drop the least-used routed experts of a model")
    prune.add_argument("--model", default=DEFAULT_MODEL, help="preset or checkpoint directory")
    prune.add_argument("--keep", type=int, required=True, help="routed experts to keep per layer")
    prune.add_argument("--export", type=Path, required=True, help="write the pruned checkpoint here")

    distil = kinds.add_parser("distill", help="train a smaller student on a model's logits")
    distil.add_argument("--model", default=DEFAULT_MODEL, help="teacher: preset or checkpoint directory")
    distil.add_argument("--layers", type=int, required=True, help="student layers (else the teacher's shape)")
    distil.add_argument("--export", type=Path, required=True, help="write the student checkpoint here")
    distil.add_argument("--run-dir", type=Path, default=Path("runs/distill"))
    distil.add_argument(
        "--alpha", type=float, default=0.5, help="weight of the teacher's KL (0: train without teacher)"
    )
    distil.add_argument("--no-progress", action="store_true")
    _add_options(distil, PretrainConfig())


def _add_options(parser: argparse.ArgumentParser, defaults: object) -> None:
    """One --option per field of a config dataclass, typed and defaulted from `defaults`."""
    for name, value in vars(defaults).items():
        flag = f"--{name.replace('_', '-')}"
        if isinstance(value, tuple):
            parser.add_argument(flag, nargs="+", default=list(value), help=f"default {' '.join(value)}")
        elif value is None:
            parser.add_argument(flag, type=int, default=None, help="default: once per epoch")
        elif isinstance(value, bool):  # --flag / --no-flag: type=bool would read "False" as True
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=value)
        else:
            parser.add_argument(flag, type=type(value), default=value, help=f"default {value}")


def _options(args: argparse.Namespace, config_type: type) -> object:
    return config_type(**{name: getattr(args, name) for name in vars(config_type())})


def run_train(args: argparse.Namespace) -> None:
    from core_model.train.pretrain import PretrainConfig

    if args.train_command == "base":
        run_train_base(args)
    elif args.train_command == "adapter":
        run_train_adapter(args)
    elif args.train_command == "prune":
        from core_model.train.compress import prune_report

        _print_compression(prune_report(args.model, keep=args.keep, export_dir=args.export), args.export)
    elif args.train_command == "distill":
        from core_model.train.compress import distil_report

        report = distil_report(
            args.model,
            layers=args.layers,
            config=_options(args, PretrainConfig),  # type: ignore[arg-type]
            run_dir=args.run_dir,
            export_dir=args.export,
            alpha=args.alpha,
            progress=not args.no_progress,
        )
        _print_compression(report, args.export)


def run_train_base(args: argparse.Namespace) -> None:
    import shutil

    from core_model.train.base import train_base
    from core_model.train.pretrain import PretrainConfig

    run_dir = args.run_dir or Path("runs") / (args.preset + ("-dense" if args.dense else ""))
    if args.no_resume and run_dir.exists():
        shutil.rmtree(run_dir)
    summary = train_base(
        args.preset,
        config=_options(args, PretrainConfig),  # type: ignore[arg-type]
        run_dir=run_dir,
        export_dir=args.export,
        tokenizer=args.tokenizer,
        data=args.data,
        held_out=args.held_out,
        dense=args.dense,
        progress=not args.no_progress,
    )
    held = summary["held_out_loss"]
    print(
        f"verticals: trained {summary['steps']} steps, {summary['tokens_seen']:,} tokens; "
        f"held-out loss {'n/a' if held is None else f'{held:.4f}'}; run in {run_dir}"
        + (f"; exported to {args.export}" if args.export else "")
    )


def run_train_adapter(args: argparse.Namespace) -> None:
    import torch

    from core_model import load_model, load_tokenizer
    from core_model.train.adapters import AdapterTrainingConfig, train_adapter
    from core_model.train.examples import read_examples

    config = _options(args, AdapterTrainingConfig)
    train, dev = read_examples(args.train, args.task), read_examples(args.dev, args.task)
    labels = [label.strip() for label in args.labels.split(",")] if args.labels else None
    result = train_adapter(
        load_model(args.model, dtype=torch.float32),  # trained in float32 (CPU and GPU alike)
        load_tokenizer(args.model),
        task=args.task,
        train=train,
        dev=dev,
        out_dir=args.out,
        labels=labels,
        config=config,  # type: ignore[arg-type]
        progress=not args.no_progress,
    )
    best = result.metrics.get("best", {})
    shown = ", ".join(f"{k} {v:.4f}" for k, v in best.items() if isinstance(v, float))
    print(f"verticals: adapter written to {result.path}; best dev: {shown or 'n/a'}")


def _print_compression(report: dict, export: Path) -> None:
    before, after = report["before"], report["after"]
    print(f"verticals: {report['method']}; exported to {export}")
    for name, row in (("before", before), ("after", after)):
        print(
            f"  {name:<6} {row['parameters'] / 1e6:6.2f} M parameters, "
            f"{row['bf16_megabytes']:6.1f} MiB in bf16, "
            f"held-out loss {row['held_out_loss']:.4f}"
        )


def _adapter(value: str) -> tuple[str, str]:
    name, equals, path = value.partition("=")
    if not (name and equals and path):
        raise argparse.ArgumentTypeError(f"expected NAME=DIR, got {value!r}")
    return name, path


def _copy_bias(value: str) -> float:
    try:
        bias = float(value)
    except ValueError:
        bias = math.nan
    if not bias >= 0:
        raise argparse.ArgumentTypeError(f"expected 'inf' or a number >= 0, got {value!r}")
    return bias


def _replica_count(value: str) -> int | str:
    if value == "auto":
        return value
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a count >= 1, got {value!r}")
    return int(value)


def describe(source: str) -> str:
    """A model's summary from its config alone: nothing is loaded, so any size works."""
    config, weights = _config_and_weights(source)
    experts = (
        f"{config.n_routed_experts} routed (top {config.num_experts_per_tok}, "
        f"{config.scoring_func}, {config.topk_method}) + {config.n_shared_experts or 0} shared"
        if config.n_routed_experts
        else "none (dense)"
    )
    moe_layers = sum(config.is_moe_layer(i) for i in range(config.num_hidden_layers))
    rows = [
        ("model", source),
        ("weights", weights),
        ("architecture", f"{config.model_type}, {config.num_hidden_layers} layers ({moe_layers} MoE)"),
        (
            "hidden size",
            f"{config.hidden_size}, {config.num_attention_heads} heads, vocab {config.vocab_size}",
        ),
        (
            "attention",
            f"MLA: q_lora_rank {config.q_lora_rank}, kv_lora_rank {config.kv_lora_rank}, "
            f"rope dim {config.qk_rope_head_dim}, rope scaling {_rope(config)}",
        ),
        ("experts", experts),
        (
            "parameters",
            f"{_count(config.num_parameters())} total, "
            f"{_count(config.num_parameters(active=True))} active per token",
        ),
        ("weights in bf16", _bytes(config.num_parameters() * 2)),
        ("latent KV cache", f"{_bytes(config.kv_cache_bytes_per_token(dtype_bytes=2))} per token in bf16"),
        ("context", f"{config.max_position_embeddings} positions"),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def _config_and_weights(source: str) -> tuple[MoEConfig, str]:
    path = Path(source)
    if path.is_dir():
        return MoEConfig.from_json_file(path / "config.json"), f"checkpoint at {path}"
    if source not in PRESETS:
        raise FileNotFoundError(
            f"{source!r} is neither a checkpoint directory nor a preset ({', '.join(PRESETS)})"
        )
    shipped = ASSETS / source
    if (shipped / "config.json").exists():
        return MoEConfig.from_json_file(shipped / "config.json"), f"shipped in core_model/assets/{source}"
    if source.startswith("deepseek-"):
        return MoEConfig.preset(source), "shape only: pass --model CHECKPOINT_DIR to use real weights"
    return MoEConfig.preset(source), "none shipped: random initialisation with a fixed seed"


def _rope(config: MoEConfig) -> str:
    if not config.rope_scaling:
        return "none"
    return f"{config.rope_scaling['type']} x{config.rope_scaling.get('factor')}"


def _count(n: int) -> str:
    return f"{n / 1e9:.1f} B" if n >= 1e9 else f"{n / 1e6:.1f} M"


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


if __name__ == "__main__":
    sys.exit(main())
