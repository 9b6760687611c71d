"""`verticals finance ...`: the finance-risk commands (the `verticals` command adds them).

    verticals finance train                       # the shipped model's recipe, into runs/finance/model
    verticals finance train --preset tiny --epochs 1 --out /tmp/fraud   # a quick CPU run (~1 min)
    verticals finance update --model runs/finance/model --database sqlite:///runs/finance.db
    verticals finance update --model runs/finance/model --through 2018-09-16 --days 7 --epochs 2
    verticals finance ui --api http://127.0.0.1:8000 --port 8504       # the analysts' dashboard
    verticals finance replay --day 2018-08-08 --seed-only              # seed the store, before the API
    verticals finance replay --api http://127.0.0.1:8000 --day 2018-08-08 --rate 20   # a live day

`train` runs the handbook protocol on the data set (as the benchmark's `ours` section does) and
saves the model; `update` fine-tunes a saved model on the days labelled since it last learned,
read from the scoring database (`updating.py` says which days and which labels); `ui` starts the
dashboard (`ui.py`); `replay` seeds the store and posts a day to the API (`replay.py`). Arguments are
parsed here and handed to the modules that do the work; each subcommand adds its parser in
`add_commands` and its handler to `HANDLERS`. Torch is imported by the handlers only.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import date
from pathlib import Path

from apps.pages import page_process

from .settings import FinanceSettings

DEFAULT_API = "http://127.0.0.1:8000"
DEFAULT_UI_PORT = 8504
DEFAULT_DAY = date(2018, 8, 8)  # the benchmark's first test day: the shipped model never trained on it
UI_SCRIPT = Path(__file__).resolve().parent / "ui.py"


def add_commands(commands: argparse._SubParsersAction) -> None:
    finance = commands.add_parser(
        "finance", help="finance risk: train and update the fraud model, the dashboard"
    )
    kinds = finance.add_subparsers(dest="finance_command", required=True)
    _add_model_commands(kinds)
    _add_desk_commands(kinds)


def _add_model_commands(kinds: argparse._SubParsersAction) -> None:
    train = kinds.add_parser("train", help="train the fraud model on the handbook protocol and save it")
    train.add_argument(
        "--test-start", type=_day, default=date(2018, 8, 8), help="first test day (%(default)s)"
    )
    train.add_argument("--train-days", type=int, default=7, help="days of the training block (%(default)s)")
    train.add_argument("--preset", default="small", help="the model's size: tiny or small (%(default)s)")
    train.add_argument(
        "--history", type=int, default=16, help="the card's last transactions read (%(default)s)"
    )
    train.add_argument(
        "--epochs", type=int, default=6, help="at most this many, chosen on the weeks before (%(default)s)"
    )
    train.add_argument(
        "--out", type=Path, default=Path("runs/finance/model"),
        help="(default: %(default)s; the shipped model is not overwritten unless named)",
    )  # fmt: skip
    train.add_argument("--no-progress", action="store_true")

    update = kinds.add_parser("update", help="fine-tune a saved fraud model on newly labelled days")
    update.add_argument("--model", type=Path, required=True, help="the model folder, updated in place")
    update.add_argument(
        "--database", default=FinanceSettings.database, help="transactions and labels (%(default)s)"
    )
    update.add_argument(
        "--through", type=_day, help="last labelled day (default: the newest stored transaction's - 7 days)"
    )
    update.add_argument("--days", type=int, help="only the last N of the newly labelled days")
    update.add_argument("--epochs", type=int, help="fine-tuning epochs (default: FINE_TUNING's, 2)")
    update.add_argument("--lr", type=float, help="fine-tuning peak learning rate (default: FINE_TUNING's)")
    update.add_argument("--no-progress", action="store_true")


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a day as YYYY-MM-DD, got {text!r}") from None


def run_train(args: argparse.Namespace) -> None:
    from dataclasses import replace

    from .model import FraudModelConfig
    from .training import TrainingConfig, protocol_data, train_on_protocol
    from .updating import replace_model

    config = replace(FraudModelConfig.preset(args.preset), history=args.history)
    print(f"verticals: reading the transactions around {args.test_start} ...", flush=True)
    data = protocol_data(test_start=str(args.test_start), train_days=args.train_days, history=args.history)
    model, report = train_on_protocol(
        data, config=config, training=TrainingConfig(epochs=args.epochs), progress=not args.no_progress
    )
    replace_model(model, args.out, metrics=report, keep_previous=False)
    print(
        f"verticals: fraud model written to {args.out}; trained on {report['blocks']['train']} "
        f"({report['chosen']['epochs']} epochs), test {report['blocks']['test']}: AUC {report['auc']:.4f}, "
        f"AP {report['ap']:.4f}, CP@100 {report['cp_at_k']:.4f}"
    )


def run_update(args: argparse.Namespace) -> None:
    from dataclasses import replace

    from sqlalchemy.engine import make_url

    from .store import TransactionStore
    from .training import FINE_TUNING
    from .updating import UpdateError, require_model, update_model

    require_model(args.model)  # before anything else: the commonest mistake
    url = make_url(args.database)
    if url.get_backend_name() == "sqlite" and url.database and not Path(url.database).is_file():
        raise UpdateError(f"no database at {url.database}: transactions are stored by `verticals serve`")
    if args.days is not None and args.days < 1:
        raise UpdateError(f"--days must be at least 1, got {args.days}")
    chosen = {name: getattr(args, name) for name in ("epochs", "lr") if getattr(args, name) is not None}
    training = replace(FINE_TUNING, **chosen)
    store = TransactionStore(args.database)
    try:
        record = update_model(
            model_dir=args.model, store=store, through=args.through, days=args.days, training=training,
            progress=not args.no_progress,
        )  # fmt: skip
    finally:
        store.close()
    print(
        f"verticals: {args.model} fine-tuned on {record['first_day']}..{record['last_day']} "
        f"({record['transactions']:,} transactions, {record['frauds']} frauds, labels as of "
        f"{record['labels_known_at']}); loss {record['loss_before']:.4f} -> {record['loss_after']:.4f}; "
        f"the version before is in {args.model}.previous"
    )


def _add_desk_commands(kinds: argparse._SubParsersAction) -> None:
    ui = kinds.add_parser(
        "ui", help="the analysts' dashboard (Streamlit): alert queue, labels, daily metrics"
    )
    ui.add_argument("--api", default=DEFAULT_API, help="the suite's URL (%(default)s)")
    ui.add_argument("--api-key", default=os.environ.get("VERTICALS_API_KEY"))
    ui.add_argument("--port", type=int, default=DEFAULT_UI_PORT)
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument(
        "--refresh", type=int, default=10, help="seconds between refreshes; 0: never (%(default)s)"
    )
    replay = kinds.add_parser("replay", help="seed the store, then post a day of transactions to the API")
    replay.add_argument("--api", default=DEFAULT_API, help="the suite's URL (%(default)s)")
    replay.add_argument("--api-key", default=os.environ.get("VERTICALS_API_KEY"))
    replay.add_argument("--day", type=_day, default=DEFAULT_DAY, help="the day to replay (%(default)s)")
    replay.add_argument(
        "--rate", type=float, default=20.0, help="transactions per second; 0: at once (%(default)s)"
    )
    replay.add_argument("--limit", type=int, help="only the day's first N transactions")
    replay.add_argument("--database", default=FinanceSettings.database, help="seeded directly (%(default)s)")
    replay.add_argument("--model", default=FinanceSettings.model, help="scores the seeded week (%(default)s)")
    replay.add_argument("--no-seed", action="store_true", help="the store is seeded already: only replay")
    replay.add_argument(
        "--seed-only", action="store_true", help="seed the store and stop (before the API starts)"
    )
    replay.add_argument("--no-progress", action="store_true")


def run_ui(args: argparse.Namespace) -> None:
    sys.exit(
        ui_process(
            api=args.api, api_key=args.api_key, port=args.port, host=args.host, refresh=args.refresh
        ).wait()
    )


def run_replay(args: argparse.Namespace) -> None:
    from .replay import ReplayError, day_transactions, load_window, replay, wait_for_api

    print(f"verticals: reading the transactions up to {args.day} ...", flush=True)
    frame = load_window(args.day, seed=not args.no_seed)
    if not args.no_seed:
        seed_store(database=args.database, model=args.model, frame=frame, day=args.day)
    if args.seed_only:
        return
    transactions = day_transactions(frame, args.day)[: args.limit]
    try:
        wait_for_api(args.api, api_key=args.api_key, timeout_s=600)
        print(f"verticals: replaying {len(transactions):,} transactions of {args.day} into {args.api} "
              f"at {args.rate or 'full'} per second", flush=True)  # fmt: skip
        report = replay(
            api=args.api, transactions=transactions, rate=args.rate, api_key=args.api_key,
            progress=not args.no_progress,
        )  # fmt: skip
    except ReplayError as error:
        raise SystemExit(f"verticals: error: {error}") from None
    print(
        f"verticals: replayed {report.posted:,} transactions of {args.day} in {report.seconds:.0f} s "
        f"({report.alerts} alerts; {report.skipped} scored before, skipped)"
    )


def seed_store(*, database: str, model: str, frame, day: date) -> None:
    """Seeds the store for replaying `day` (see `replay.seed`) and says what it stored."""
    from .model import WEIGHTS
    from .replay import seed
    from .store import TransactionStore

    model_dir = model if (Path(model) / WEIGHTS).is_file() else None
    if model_dir is None:
        print(f"verticals: no fraud model at {model}: the seeded week is stored unscored", flush=True)
    store = TransactionStore(database)
    try:
        report = seed(store, frame, day=day, model_dir=model_dir)
    finally:
        store.close()
    print(
        f"verticals: seeded {database} with {report.stored:,} transactions before {day} "
        f"({report.scored:,} scored offline) in {report.seconds:.0f} s",
        flush=True,
    )


def ui_process(
    *, api: str, port: int, host: str = "127.0.0.1", api_key: str | None = None, refresh: int = 10
) -> subprocess.Popen[bytes]:
    """`streamlit run ui.py` (the dashboard) against the API at `api`."""
    return page_process(
        UI_SCRIPT, api=api, port=port, host=host, api_key=api_key, args=["--refresh", str(refresh)]
    )


def replay_process(*, api: str, day: date, rate: float, database: str, log: Path) -> subprocess.Popen[bytes]:
    """`verticals finance replay --no-seed` in a subprocess (it waits for the API), output to `log`."""
    command = [
        sys.executable, "-m", "apps.cli", "finance", "replay", "--no-seed", "--api", api,
        "--day", str(day), "--rate", str(rate), "--database", database,
    ]  # fmt: skip
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)


def start_replay(*, api: str, day: date, rate: float, settings: FinanceSettings) -> subprocess.Popen | None:
    """`make run`'s fraud desk feed, before the API starts: the store seeded for `day` unless it is
    already, then the replay in a subprocess that waits for the API (None without a model)."""
    from .model import WEIGHTS
    from .replay import load_window, seeded
    from .store import TransactionStore

    if not (Path(settings.model) / WEIGHTS).is_file():
        print(
            f"verticals: no fraud model at {settings.model}, so no replay: `verticals finance train`",
            flush=True,
        )
        return None
    store = TransactionStore(settings.database)
    try:
        ready = seeded(store, day=day)
    finally:
        store.close()
    if not ready:
        print(f"verticals: seeding {settings.database} for the replay of {day} (once, about 2 minutes) ...")
        seed_store(database=settings.database, model=settings.model, frame=load_window(day), day=day)
    log = Path("runs/finance/replay.log")
    print(
        f"verticals: replaying {day} into the API at {rate:g} transactions/s once it is up (progress: {log})"
    )
    return replay_process(api=api, day=day, rate=rate, database=settings.database, log=log)


HANDLERS: dict[str, Callable[[argparse.Namespace], None]] = {
    "train": run_train, "update": run_update, "ui": run_ui, "replay": run_replay,
}  # fmt: skip


def run(args: argparse.Namespace) -> None:
    HANDLERS[args.finance_command](args)
