"""Fraud scoring on the Fraud Detection Handbook's simulated transactions, by its delayed-label
protocol: train on a block of days, skip 7 days (labels arrive late), test on the next 7 days
(cards already known compromised left out). Test AUC ROC, average precision and card
precision@100 per day, for each model on the same features and rows; each model is tuned on the
same protocol two weeks earlier.

    .venv/bin/python benchmarks/finance_risk.py                     # every section (~15 min)
    .venv/bin/python benchmarks/finance_risk.py --sections baselines,ours --train-days 28
    .venv/bin/python benchmarks/finance_risk.py --sections ours --keep-model runs/finance/model
    .venv/bin/python benchmarks/finance_risk.py --sections continual  # updated vs frozen (~5 min)
    .venv/bin/python benchmarks/finance_risk.py --sections continual --preset tiny --continual-weeks 2

Sections: baselines (logistic regression, gradient-boosted trees), ours (the card's history through
the MoE trunk, plus the same features; its epoch count chosen on the validation weeks: what
`verticals finance train` runs), latency (POST /finance/score over loopback HTTP at 1 and 20
concurrent clients, `verticals serve` in its own process with the model of --keep-model, else the
shipped one, and 37 days of history in SQLite, replaying the test week's first transactions; once
per scoring backend, PyTorch and onnxruntime, first with Python clients (urllib3), then with
wrk's at the highest concurrency),
continual (over the data's last weeks, a model trained once before them against the same model
fine-tuned each week on the newly labelled days, with `training.fine_tune` as `verticals finance
update` does). Writes benchmarks/results/finance_risk.json and prints a table.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import threading
import time
from dataclasses import replace
from datetime import UTC, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (  # noqa: E402
    aligned_rows,
    comma_separated,
    concurrent_latency,
    environment,
    parse_sections,
    post,
    run_sections,
    section_parser,
    suite_server,
    write_report,
    wrk_latency,
)

SECTIONS = ("baselines", "ours", "latency", "continual")
DATA_DAYS = 183  # 2018-04-01..2018-09-30 (SOURCE.md): the continual weeks end on its last day
PARTS = ("train", "test")
# the handbook's published test figures (chapters 5 and 7), for the table's last rows
HANDBOOK = {
    "handbook XGBoost": {"auc": 0.869, "ap": 0.687, "cp_at_k": 0.303},
    "handbook LSTM + attention": {"auc": 0.874, "ap": 0.667, "cp_at_k": 0.295},
}


def load(args: argparse.Namespace) -> dict:
    from apps.finance_risk.features import FEATURES
    from apps.finance_risk.training import protocol_data

    data = protocol_data(test_start=args.test_start, train_days=args.train_days, history=args.history)
    arrays = {
        name: {
            part: (rows[FEATURES].to_numpy(), rows["fraud"].to_numpy())
            for part, rows in zip(PARTS, pair, strict=True)
        }
        for name, pair in data.frames.items()
    }  # fmt: skip
    return {"protocol": data, "split": data.split, "validation": data.validation, "frame": data.frame,
            "frames": data.frames, "arrays": arrays}  # fmt: skip


def bench_baselines(args: argparse.Namespace) -> dict:
    from apps.finance_risk.baselines import BASELINES, fit_baseline
    from apps.finance_risk.metrics import fraud_metrics

    data = args.data
    (Xv, yv), (Xv_test, yv_test) = data["arrays"]["validation"]["train"], data["arrays"]["validation"]["test"]
    (X, y), (X_test, _) = data["arrays"]["test"]["train"], data["arrays"]["test"]["test"]
    out = {}
    for name in BASELINES:
        started = time.perf_counter()
        model, chosen = fit_baseline(name, Xv, yv, X_valid=Xv_test, y_valid=yv_test, X_refit=X, y_refit=y)
        scores = model.predict_proba(X_test)[:, 1]
        out[name] = {
            **fraud_metrics(data["frames"]["test"][1], scores, k=100), "chosen": chosen,
            "seconds": round(time.perf_counter() - started, 1),
        }  # fmt: skip
    return out


def bench_ours(args: argparse.Namespace) -> dict:
    """Epochs chosen by validation AP (trained on the validation weeks' training block), then the
    model trained that long on the test protocol's training block (`verticals finance train`)."""
    from apps.finance_risk.model import FraudModelConfig, save_fraud_model
    from apps.finance_risk.training import TrainingConfig, train_on_protocol

    config = replace(FraudModelConfig.preset(args.preset), history=args.history)
    started = time.perf_counter()
    model, report = train_on_protocol(
        args.data["protocol"], config=config, training=TrainingConfig(epochs=args.epochs)
    )
    if args.keep_model:
        save_fraud_model(model, args.keep_model, metrics=report)
    return {
        **report, "config": model.to_config(), "parameters": sum(p.numel() for p in model.parameters()),
        "seconds": round(time.perf_counter() - started, 1),
    }  # fmt: skip


def bench_continual(args: argparse.Namespace) -> dict:
    """Over the data's last `--continual-weeks` weeks: a model trained `--continual-epochs` epochs
    on the week before the label delay that precedes the first of them (frozen) against the same
    model fine-tuned before each week on the days whose labels have arrived by then and that it
    has not seen (updated). Before a week starting on day s, labels are known for the days up to
    s - DELAY_DAYS - 1, so the update before week w > 0 tunes on days s - 14..s - 8 (never a label
    from after); before the first week those days are the frozen model's own training block, so
    the two models agree on it. Both score the same rows (cards known compromised by then left
    out). The epochs are fixed rather than chosen on earlier weeks, to keep the section short.
    The peer over the same weeks: gradient-boosted trees tuned on the validation block and fitted
    on the same training block (frozen), and refitted before each week on the days the update
    tunes on (retrained, as the handbook retrains)."""
    from apps.finance_risk.baselines import build_baseline, fit_baseline
    from apps.finance_risk.features import DELAY_DAYS
    from apps.finance_risk.metrics import fraud_metrics
    from apps.finance_risk.model import FraudModelConfig
    from apps.finance_risk.protocol import DelayedSplit
    from apps.finance_risk.training import (
        FINE_TUNING,
        TrainingConfig,
        fine_tune,
        fit,
        predict,
        protocol_data,
    )

    started = time.perf_counter()
    first = DATA_DAYS - 7 * args.continual_weeks
    data = protocol_data(
        test_start=day_date(first), train_days=args.train_days, history=args.history, stop_day=DATA_DAYS
    )
    config = replace(FraudModelConfig.preset(args.preset), history=args.history)
    train, _ = data.frames["test"]
    frozen, _ = fit(config, data.examples["test"][0], training=TrainingConfig(epochs=args.continual_epochs))
    trained = {"blocks": data.split.dates()["train"], "rows": len(train),
               "frauds": int(train["fraud"].sum()), "epochs": args.continual_epochs,
               "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip
    (valid_train, valid_test), (_, _) = data.frames["validation"], data.frames["test"]
    trees, chosen = fit_baseline(
        "boosted_trees", *arrays(valid_train), X_valid=arrays(valid_test)[0], y_valid=arrays(valid_test)[1],
        X_refit=arrays(train)[0], y_refit=arrays(train)[1],
    )  # fmt: skip
    chosen.pop("validation_ap")
    retrained = trees
    tuning = replace(FINE_TUNING, epochs=args.update_epochs, lr=args.update_lr)
    updated, seen = frozen, data.split.train_start + data.split.train_days  # days before `seen` trained on
    day, weeks = data.frame["day"], []
    for w in range(args.continual_weeks):
        start = first + 7 * w
        labelled = start - DELAY_DAYS  # days before it have their labels by `start`
        row: dict = {"test": f"{day_date(start)}..{day_date(start + 6)}", "tuned_on": "-"}
        if labelled > seen:
            tune = data.frame[(day >= seen) & (day < labelled)]
            tick = time.perf_counter()
            updated, _ = fine_tune(updated, data.examples_of(tune), training=tuning)
            retrained = build_baseline("boosted_trees", **chosen).fit(*arrays(tune))
            row |= {"tuned_on": f"{day_date(seen)}..{day_date(labelled - 1)}", "tune_rows": len(tune),
                    "tune_frauds": int(tune["fraud"].sum()),
                    "tune_s": round(time.perf_counter() - tick, 1)}  # fmt: skip
            seen = labelled
        _, test = DelayedSplit(train_start=labelled - 7, train_days=7, delay_days=DELAY_DAYS).apply(
            data.frame
        )
        examples = data.examples_of(test)
        row |= {"rows": len(test), "frauds": int(test["fraud"].sum())}
        for name, model in (("frozen", frozen), ("updated", updated)):
            row[name] = fraud_metrics(test, predict(model, examples), k=100)
        for name, model in (("trees_frozen", trees), ("trees_retrained", retrained)):
            row[name] = fraud_metrics(test, model.predict_proba(arrays(test)[0])[:, 1], k=100)
        weeks.append(row)
    mean = {
        name: {key: float(np.mean([week[name][key] for week in weeks])) for key in ("auc", "ap", "cp_at_k")}
        for name in CONTINUAL_MODELS
    }
    return {
        "trained": trained, "fine_tuning": {"epochs": tuning.epochs, "lr": tuning.lr}, "weeks": weeks,
        "mean": mean, "seconds": round(time.perf_counter() - started, 1),
    }  # fmt: skip


def day_date(day: int) -> str:
    from apps.finance_risk.protocol import FIRST_DAY

    return (FIRST_DAY + pd.Timedelta(days=day)).strftime("%Y-%m-%d")


def bench_latency(args: argparse.Namespace) -> dict:
    """Each backend's server on its own copy of one prefilled store, replaying the same rows."""
    from apps.finance_risk.settings import FinanceSettings

    model = args.keep_model or FinanceSettings.model  # the shipped model unless this run trained one
    if not (Path(model) / "model.safetensors").is_file():
        raise SystemExit(f"no fraud model at {model}: run the 'ours' section with --keep-model")
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        prefilled = Path(tmp, "prefilled.db")
        replay = prefill(f"sqlite:///{prefilled}", args.data["frame"], start=args.data["split"].test_start)
        for backend in args.backends:
            database = Path(tmp, f"{backend}.db")
            with sqlite3.connect(prefilled) as source, sqlite3.connect(database) as copy:
                source.backup(copy)
            options = [
                "--finance-model", str(model), "--finance-database", f"sqlite:///{database}",
                "--finance-backend", backend, "--no-customer-service", "--no-code-assist", "--no-medical",
            ]  # fmt: skip
            if args.no_access_log:
                options.append("--no-access-log")
            with suite_server(options, log=Path(tmp, f"server-{backend}.log")) as url:
                rows = iter(replay)
                results[backend] = {
                    f"clients_{c}": score_latency(url, rows, c, args.requests) for c in args.concurrency
                }
                if args.wrk_seconds > 0:  # the rows no client sent yet
                    clients = max(args.concurrency)
                    results[f"{backend}, wrk"] = {
                        f"clients_{clients}": wrk_latency(
                            url, "/finance/score", list(rows), clients=clients, seconds=args.wrk_seconds
                        )
                    }
    return results


def prefill(database: str, frame: pd.DataFrame, *, start: int) -> list[dict]:
    """Stores the 37 days before day `start` (features as scored, labels a week after each
    transaction) and returns day `start`'s transactions as request bodies, in time order."""
    from apps.finance_risk.features import FEATURES
    from apps.finance_risk.scoring import TERMINAL_DAYS
    from apps.finance_risk.store import TransactionStore

    def body(r) -> dict:
        stamp = r.timestamp.to_pydatetime().replace(tzinfo=UTC)
        return {"transaction_id": str(r.transaction_id), "customer_id": str(r.customer_id),
                "terminal_id": str(r.terminal_id), "amount": float(r.amount), "timestamp": stamp}  # fmt: skip

    history = frame[(frame["day"] >= start - TERMINAL_DAYS) & (frame["day"] < start)]
    derived = [name for name in FEATURES if name != "amount"]
    store = TransactionStore(database)
    store.add_transactions(
        {**body(r), "features": {name: float(getattr(r, name)) for name in derived}}
        for r in history.itertuples()
    )
    store.add_labels(
        {"transaction_id": str(r.transaction_id), "fraud": int(r.fraud), "source": "import",
         "arrived_at": r.timestamp.to_pydatetime().replace(tzinfo=UTC) + timedelta(days=7)}
        for r in history.itertuples()
    )  # fmt: skip
    store.close()
    day = frame[frame["day"] == start]
    return [{**body(r), "timestamp": body(r)["timestamp"].isoformat()} for r in day.itertuples()]


def score_latency(url: str, rows, clients: int, requests: int) -> dict:
    """Each transaction of `rows` (an iterator the clients share) is scored once."""
    lock = threading.Lock()

    def send(http, _, client: int, i: int) -> None:
        with lock:
            body = next(rows)
        post(http, "/finance/score", json=body)

    return concurrent_latency(url, clients=clients, requests=requests, send=send)


def table(report: dict) -> list[str]:
    rows = [["model", "test AUC", "AP", "CP@100", "seconds"]]
    results = {**report.get("baselines", {}), "ours (MoE trunk over the card history)": report.get("ours")}
    for name, result in results.items():
        if isinstance(result, dict) and "auc" in result:
            rows.append([name, f"{result['auc']:.4f}", f"{result['ap']:.4f}", f"{result['cp_at_k']:.4f}",
                         f"{result['seconds']:.0f}"])  # fmt: skip
    for name, figures in HANDBOOK.items():
        rows.append([name, f"{figures['auc']:.3f}", f"{figures['ap']:.3f}", f"{figures['cp_at_k']:.3f}", "-"])
    if "perfect" in report:
        rows.append(["a perfect scorer (the labels)", "1", "1", f"{report['perfect']['cp_at_k']:.4f}", "-"])
    lines = aligned_rows(rows)
    if "latency" in report:
        latency = [["POST /finance/score", "backend", "P50 ms", "P99 ms", "requests/s"]]
        for backend, runs in report["latency"].items():
            for result in runs.values() if isinstance(runs, dict) else []:
                if isinstance(result, dict):
                    latency.append([f"{result['clients']} clients", backend, str(result["p50_ms"]),
                                    str(result["p99_ms"]), str(result["requests_per_s"])])  # fmt: skip
        lines += [""] + aligned_rows(latency)
    if "continual" in report:
        lines += [""] + continual_table(report["continual"])
    sizes = report["rows"]
    lines.append(
        f"blocks {report['blocks']}; train {sizes['train']:,} transactions ({sizes['train_frauds']} frauds), "
        f"test {sizes['test']:,} ({sizes['test_frauds']} frauds)"
    )
    return lines


def perfect_scorer(test: pd.DataFrame) -> dict:
    """What the test block allows: a scorer that knew every label. Its card precision@100 is
    below 1, since fewer than 100 cards a day are compromised, and is the ceiling the models'
    CP@100 are read against."""
    from apps.finance_risk.metrics import fraud_metrics

    return fraud_metrics(test, test["fraud"].to_numpy(float), k=100)


def arrays(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    from apps.finance_risk.features import FEATURES

    return frame[FEATURES].to_numpy(), frame["fraud"].to_numpy()


CONTINUAL_MODELS = ("frozen", "updated", "trees_frozen", "trees_retrained")


def continual_table(result: dict) -> list[str]:
    lines = []
    for metric, key in (("AP", "ap"), ("CP@100", "cp_at_k"), ("AUC", "auc")):
        rows = [
            [
                "test week",
                "tuned on",
                f"{metric}: ours frozen",
                "ours updated",
                "trees frozen",
                "trees retrained",
            ]
        ]
        for week in [*result["weeks"], {"test": "mean", "tuned_on": "", **result["mean"]}]:
            rows.append(
                [week["test"], week["tuned_on"]] + [f"{week[model][key]:.4f}" for model in CONTINUAL_MODELS]
            )
        lines += aligned_rows(rows) + [""]
    tuning = result["fine_tuning"]
    return lines + [
        f"continual: frozen vs updated weekly ({tuning['epochs']} epochs at lr {tuning['lr']:g} on each "
        f"newly labelled week); frozen model trained {result['trained']['epochs']} epochs on "
        f"{result['trained']['blocks']}"
    ]


def main(argv: list[str] | None = None) -> dict:
    from apps.finance_risk.training import FINE_TUNING

    parser = section_parser(__doc__, SECTIONS, results="finance_risk.json")
    parser.add_argument("--test-start", default="2018-08-08", help="first day of the test block")
    parser.add_argument("--train-days", type=int, default=7, help="days of the training block")
    parser.add_argument("--preset", default="small", help="the fraud model's size (FraudModelConfig presets)")
    parser.add_argument("--history", type=int, default=16, help="the card's last transactions read")
    parser.add_argument("--epochs", type=int, default=6, help="at most this many (chosen on validation)")
    parser.add_argument("--continual-weeks", type=int, default=4, help="continual: the data's last weeks")
    parser.add_argument("--continual-epochs", type=int, default=4, help="continual: the frozen model's")
    parser.add_argument("--update-epochs", type=int, default=FINE_TUNING.epochs, help="continual: per update")
    parser.add_argument(
        "--update-lr", type=float, default=FINE_TUNING.lr, help="continual: fine-tuning peak lr"
    )
    parser.add_argument("--keep-model", type=Path, help="save the trained model here (for verticals serve)")
    parser.add_argument("--concurrency", type=comma_separated(int), default=[1, 20], help="latency: clients")
    parser.add_argument("--requests", type=int, default=50, help="latency: requests per client")
    parser.add_argument(
        "--backends", type=comma_separated(str), default=["torch", "onnx"],
        help="latency: the scoring pass's backends, each on its own server and copy of the store",
    )  # fmt: skip
    parser.add_argument(
        "--wrk-seconds", type=int, default=4,
        help="latency: then this long of wrk's clients (a C load generator: `apt-get install wrk`; 0: none)",
    )  # fmt: skip
    parser.add_argument("--no-access-log", action="store_true", help="latency: no access log lines")
    args = parse_sections(parser, argv)
    args.data = load(args)
    train, test = args.data["frames"]["test"]
    report: dict = {"environment": environment(["cpu"]), "blocks": args.data["split"].dates()}
    report["validation_blocks"] = args.data["validation"].dates()
    report["rows"] = {
        "train": len(train), "train_frauds": int(train["fraud"].sum()),
        "test": len(test), "test_frauds": int(test["fraud"].sum()),
    }  # fmt: skip
    report["perfect"] = perfect_scorer(test)
    run_sections(
        report,
        sections=SECTIONS,
        chosen=args.sections,
        benches={
            "baselines": bench_baselines,
            "ours": bench_ours,
            "latency": bench_latency,
            "continual": bench_continual,
        },  # fmt: skip
        args=args,
    )
    print("\n".join(table(report)))
    write_report(report, args.out)
    return report


if __name__ == "__main__":
    main()
