"""Fraud scoring on the Fraud Detection Handbook's simulated transactions, by its delayed-label
protocol: train on a block of days, skip 7 days (labels arrive late), test on the next 7 days
(cards already known compromised left out). Test AUC ROC, average precision and card
precision@100 per day, for each model on the same features and rows; each model is tuned on the
same protocol two weeks earlier.

    .venv/bin/python benchmarks/finance_risk.py                     # the handbook's weeks (~1 min)
    .venv/bin/python benchmarks/finance_risk.py --train-days 28     # four weeks of training
    .venv/bin/python benchmarks/finance_risk.py --sections ours --keep-model runs/finance/model

Sections: baselines (logistic regression, gradient-boosted trees), ours (the card's history through
the MoE trunk, plus the same features; its epoch count chosen on the validation weeks), latency
(POST /finance/score over loopback HTTP at 1 and 20 concurrent clients, `verticals serve` in its
own process with the saved model and 37 days of history in SQLite, replaying the test week's first
transactions). Writes
benchmarks/results/finance_risk.json and prints a table.
"""

from __future__ import annotations

import argparse
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
    ROOT,
    aligned_rows,
    comma_separated,
    concurrent_latency,
    environment,
    parse_sections,
    run_sections,
    section_parser,
    suite_server,
    write_report,
)

SECTIONS = ("baselines", "ours", "latency")
PARTS = ("train", "test")
# the handbook's published test figures (chapters 5 and 7), for the table's last rows
HANDBOOK = {
    "handbook XGBoost": {"auc": 0.869, "ap": 0.687, "cp_at_k": 0.303},
    "handbook LSTM + attention": {"auc": 0.874, "ap": 0.667, "cp_at_k": 0.295},
}


def load(args: argparse.Namespace) -> dict:
    from apps.finance_risk.features import FEATURES, with_features
    from apps.finance_risk.protocol import DelayedSplit
    from apps.finance_risk.sequences import card_series
    from apps.finance_risk.training import Examples
    from apps.finance_risk.transactions import DATASET, FILE, read_transactions
    from core_model.datasets import dataset_dir

    split = DelayedSplit.starting(args.test_start, train_days=args.train_days)
    split = split.shifted(-(args.train_days + split.delay_days))  # the test block starts at test_start
    validation = split.shifted(-(split.delay_days + split.test_days))
    history_days = 30 + split.delay_days  # the widest feature window reaches this far back
    frame = read_transactions(
        dataset_dir(DATASET) / FILE, days=(max(0, validation.train_start - history_days), split.test_stop)
    )
    frame = with_features(frame)
    series = card_series(frame, length=args.history)
    positions = pd.Series(np.arange(len(frame)), index=frame.index)
    blocks = {"validation": validation.apply(frame), "test": split.apply(frame)}
    examples = {
        name: [
            Examples.of(rows, series.take(positions[rows.index].to_numpy()), args.history) for rows in pair
        ]
        for name, pair in blocks.items()
    }
    arrays = {
        name: {
            part: (rows[FEATURES].to_numpy(), rows["fraud"].to_numpy())
            for part, rows in zip(PARTS, pair, strict=True)
        }
        for name, pair in blocks.items()
    }  # fmt: skip
    return {
        "split": split,
        "validation": validation,
        "frame": frame,
        "frames": blocks,
        "arrays": arrays,
        "examples": examples,
    }


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
    model trained that long on the test protocol's training block."""
    from sklearn.metrics import average_precision_score

    from apps.finance_risk.metrics import fraud_metrics
    from apps.finance_risk.model import FraudModelConfig, save_fraud_model
    from apps.finance_risk.training import TrainingConfig, fit, predict

    config = replace(FraudModelConfig.preset(args.preset), history=args.history)
    training = TrainingConfig(epochs=args.epochs)
    (valid_train, valid_test), (train, test) = (
        args.data["examples"]["validation"],
        args.data["examples"]["test"],
    )
    started = time.perf_counter()

    def validation_ap(model) -> float:
        return float(average_precision_score(valid_test.labels_N.numpy(), predict(model, valid_test)))

    _, history = fit(config, valid_train, training=training, evaluate=validation_ap)
    epochs = int(np.argmax(history)) + 1
    model, _ = fit(config, train, training=replace(training, epochs=epochs))
    scores = predict(model, test)
    metrics = fraud_metrics(args.data["frames"]["test"][1], scores, k=100)
    if args.keep_model:
        save_fraud_model(model, args.keep_model, metrics={**metrics, "blocks": args.data["split"].dates()})
    return {
        **metrics,
        "chosen": {"epochs": epochs, "validation_ap_by_epoch": [round(v, 4) for v in history]},
        "config": model.to_config(), "parameters": sum(p.numel() for p in model.parameters()),
        "seconds": round(time.perf_counter() - started, 1),
    }  # fmt: skip


def bench_latency(args: argparse.Namespace) -> dict:
    model = args.keep_model or ROOT / "runs/finance/model"
    if not (Path(model) / "model.safetensors").is_file():
        raise SystemExit(f"no fraud model at {model}: run the 'ours' section with --keep-model first")
    with tempfile.TemporaryDirectory() as tmp:
        database = f"sqlite:///{tmp}/finance.db"
        replay = prefill(database, args.data["frame"], start=args.data["split"].test_start)
        options = [
            "--finance-model", str(model), "--finance-database", database,
            "--no-customer-service", "--no-code-assist", "--no-medical",
        ]  # fmt: skip
        with suite_server(options, log=Path(tmp, "server.log")) as url:
            rows = iter(replay)
            return {f"clients_{c}": score_latency(url, rows, c, args.requests) for c in args.concurrency}


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
        http.post("/finance/score", json=body).raise_for_status()

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
    lines = aligned_rows(rows)
    if "latency" in report:
        latency = [["POST /finance/score", "P50 ms", "P99 ms", "requests/s"]]
        for result in report["latency"].values():
            if isinstance(result, dict):
                latency.append([f"{result['clients']} clients", str(result["p50_ms"]), str(result["p99_ms"]),
                                str(result["requests_per_s"])])  # fmt: skip
        lines += [""] + aligned_rows(latency)
    sizes = report["rows"]
    lines.append(
        f"blocks {report['blocks']}; train {sizes['train']:,} transactions ({sizes['train_frauds']} frauds), "
        f"test {sizes['test']:,} ({sizes['test_frauds']} frauds)"
    )
    return lines


def main(argv: list[str] | None = None) -> dict:
    parser = section_parser(__doc__, SECTIONS, results="finance_risk.json")
    parser.add_argument("--test-start", default="2018-08-08", help="first day of the test block")
    parser.add_argument("--train-days", type=int, default=7, help="days of the training block")
    parser.add_argument("--preset", default="small", help="the fraud model's size (FraudModelConfig presets)")
    parser.add_argument("--history", type=int, default=16, help="the card's last transactions read")
    parser.add_argument("--epochs", type=int, default=6, help="at most this many (chosen on validation)")
    parser.add_argument("--keep-model", type=Path, help="save the trained model here (for verticals serve)")
    parser.add_argument("--concurrency", type=comma_separated(int), default=[1, 20], help="latency: clients")
    parser.add_argument("--requests", type=int, default=50, help="latency: requests per client")
    args = parse_sections(parser, argv)
    args.data = load(args)
    train, test = args.data["frames"]["test"]
    report: dict = {"environment": environment(["cpu"]), "blocks": args.data["split"].dates()}
    report["validation_blocks"] = args.data["validation"].dates()
    report["rows"] = {
        "train": len(train), "train_frauds": int(train["fraud"].sum()),
        "test": len(test), "test_frauds": int(test["fraud"].sum()),
    }  # fmt: skip
    run_sections(
        report,
        sections=SECTIONS,
        chosen=args.sections,
        benches={"baselines": bench_baselines, "ours": bench_ours, "latency": bench_latency},
        args=args,
    )
    print("\n".join(table(report)))
    write_report(report, args.out)
    return report


if __name__ == "__main__":
    main()
