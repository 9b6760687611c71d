"""`verticals qc ...`: the industrial-QC commands (the `verticals` command adds them).

    verticals qc train                                    # NEU-DET's train split, into runs/qc/model
    verticals qc train --data /data/line3 --epochs 20 --out runs/qc/line3   # any VOC or class-folder set
    verticals qc train --preset tiny --epochs 1 --limit 64 --out /tmp/qc    # a smoke run (seconds)
    verticals qc evaluate --model runs/qc/model --split test                # accuracy, recall, mAP50
    verticals qc export --model runs/qc/model                               # model.onnx beside it
    verticals qc ui --api http://127.0.0.1:8000 --port 8505                 # the defect dashboard
    verticals qc replay --api http://127.0.0.1:8000 --rate 2 --count 100    # a simulated line

`train` fits a fresh model with `training.fit` (validated on the val split each epoch) and saves it
with its test figures in the card; `evaluate` prints a saved model's figures on a split; `export`
writes the ONNX file that `verticals serve --qc-backend onnx` serves; `ui` starts the operators'
dashboard (`ui.py`); `replay` posts test images to the API as a production line would (`replay.py`).
A folder without a split.csv is split 80/10/10 by class (`dataset.split_records`). Arguments are
parsed here and handed to the modules that do the work.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .desk import DEFAULT_UI_PORT, ui_process
from .replay import add_options as add_replay_options
from .replay import run as run_line

DEFAULT_OUT = Path("runs/qc/model")


def add_commands(commands: argparse._SubParsersAction) -> None:
    from .training import TrainingConfig

    qc = commands.add_parser("qc", help="industrial QC: train, evaluate and export the inspection model")
    kinds = qc.add_subparsers(dest="qc_command", required=True)
    train = kinds.add_parser("train", help="train the inspection model from scratch and save it")
    _add_data(train)
    train.add_argument("--preset", default="small", help="the model's size: tiny or small (%(default)s)")
    train.add_argument("--epochs", type=int, default=TrainingConfig.epochs, help="(%(default)s)")
    train.add_argument("--batch-size", type=int, default=TrainingConfig.batch_size, help="(%(default)s)")
    train.add_argument("--lr", type=float, default=TrainingConfig.lr, help="peak learning rate (%(default)s)")
    train.add_argument(
        "--augment", default=TrainingConfig.augment, help="none, default, strong or directional (%(default)s)"
    )
    train.add_argument("--seed", type=int, default=TrainingConfig.seed)
    train.add_argument("--limit", type=int, help="at most this many images per split (a smoke run)")
    train.add_argument(
        "--precision", choices=("float32", "int8"), default="float32",
        help="the saved weights: int8 takes a quarter of the bytes (the shipped model's) (%(default)s)",
    )  # fmt: skip
    train.add_argument(
        "--out", type=Path, default=DEFAULT_OUT,
        help="(default: %(default)s; the shipped model is not overwritten unless named)",
    )  # fmt: skip
    train.add_argument("--no-progress", action="store_true")

    evaluate = kinds.add_parser("evaluate", help="a saved model's accuracy, recall and mAP50 on a split")
    evaluate.add_argument("--model", type=Path, required=True, help="a folder written by `qc train`")
    _add_data(evaluate)
    evaluate.add_argument("--split", default="test", choices=("train", "val", "test"))

    export = kinds.add_parser("export", help="write model.onnx beside a saved model")
    export.add_argument("--model", type=Path, required=True, help="a folder written by `qc train`")

    ui = kinds.add_parser("ui", help="the operators' defect dashboard (Streamlit)")
    ui.add_argument("--api", default="http://127.0.0.1:8000", help="the suite's URL (%(default)s)")
    ui.add_argument("--api-key", default=os.environ.get("VERTICALS_API_KEY"))
    ui.add_argument("--host", default="127.0.0.1", help="address to bind (%(default)s)")
    ui.add_argument("--port", type=int, default=DEFAULT_UI_PORT, help="(%(default)s)")
    ui.add_argument("--refresh", type=float, default=5, help="seconds between redraws (%(default)s)")

    replay = kinds.add_parser("replay", help="post test images to the inspection API as a line")
    add_replay_options(replay)


def _add_data(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", type=Path,
        help="a Pascal-VOC or class-folder data set (default: NEU-DET in the datasets folder)",
    )  # fmt: skip


def run_train(args: argparse.Namespace) -> None:
    from .model import QCModelConfig, save_qc_model
    from .training import TrainingConfig, evaluate, read_splits, train_inspection_model

    data = read_splits(args.data)
    if args.limit:
        data = data.limited(args.limit)
    config = TrainingConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, augment=args.augment, seed=args.seed
    )
    print(
        f"qc: {len(data.train)} training images, {len(data.valid)} val, {len(data.test)} test; "
        f"classes {data.classes}"
    )
    model, history = train_inspection_model(
        QCModelConfig.preset(args.preset), config, data=data, progress=not args.no_progress
    )
    for row in history:
        print(
            "qc: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items())
        )
    test = evaluate(model, data.test, classes=data.classes, box_threshold=config.box_threshold)
    metrics = {"test_accuracy": test.accuracy, "test_map50": test.map50, "epochs": config.epochs}
    save_qc_model(model, args.out, class_names=data.classes, metrics=metrics, precision=args.precision)
    print(f"qc: test accuracy {test.accuracy:.4f}, mAP50 {test.map50:.3f}; saved {args.out}")


def run_evaluate(args: argparse.Namespace) -> None:
    from .model import load_qc_model
    from .training import evaluate, read_splits

    model, card = load_qc_model(args.model)
    data = read_splits(args.data)
    records = {"train": data.train, "val": data.valid, "test": data.test}[args.split]
    report = evaluate(model, records, classes=card["class_names"])
    print(json.dumps(report.as_dict(), indent=2))


def run_export(args: argparse.Namespace) -> None:
    from .export import export_saved_model

    print(f"qc: wrote {export_saved_model(args.model)}")


def run_ui(args: argparse.Namespace) -> None:
    page = ui_process(
        api=args.api, api_key=args.api_key, port=args.port, host=args.host, refresh=args.refresh
    )
    sys.exit(page.wait())


def run_replay(args: argparse.Namespace) -> None:
    sys.exit(run_line(args))


def run(args: argparse.Namespace) -> None:
    handlers = {
        "train": run_train, "evaluate": run_evaluate, "export": run_export, "ui": run_ui, "replay": run_replay
    }  # fmt: skip
    handlers[args.qc_command](args)
