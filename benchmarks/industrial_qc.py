"""Defect classification and localisation on NEU-DET, ours (image patches through the MoE trunk)
against a small CNN trained in the same run on the same split: test accuracy, recall per class and
box mAP at IoU 0.5 (with the boxes as served, and with Soft-NMS); throughput on this CPU with
PyTorch and ONNX Runtime; inspection latency over loopback HTTP.

    .venv/bin/python benchmarks/industrial_qc.py                           # every section
    .venv/bin/python benchmarks/industrial_qc.py --sections accuracy --epochs 40 --keep-model runs/qc/model
    .venv/bin/python benchmarks/industrial_qc.py --sections throughput,latency --model runs/qc/model
    .venv/bin/python benchmarks/industrial_qc.py --sections accuracy --preset tiny --epochs 1 --limit 64

Sections: accuracy (both models trained from scratch on the train split with the same loop,
augmentation and epochs, evaluated on the test split; `--keep-model` saves ours), throughput (images
per second at batch 1 and 32, PyTorch and ONNX Runtime, after warm-up), latency (POST /qc/inspect of
test images over loopback HTTP, `verticals serve` in its own process). The throughput and latency
sections measure `--model` (default: the model the accuracy section just trained, else the
shipped one). Each run rewrites the sections it ran in benchmarks/results/industrial_qc.json and
keeps the others (each section says when it was measured), then prints the table.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path

import torch

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
)

SECTIONS = ("accuracy", "throughput", "latency")
# Published NEU figures, for the table's last rows (issue 9 names them as the goals' source).
GOALS = {"accuracy": 0.995, "map50": 0.78, "images_per_s": 50.0}


def bench_accuracy(args) -> dict:
    from apps.industrial_qc.baseline import CNNBaseline
    from apps.industrial_qc.model import QCModel, save_qc_model
    from apps.industrial_qc.training import evaluate, fit

    data, model_config = args.data, args.model_config
    config = replace(args.training, epochs=args.epochs)
    result: dict = {"training": asdict(config), "images": {"train": len(data.train), "test": len(data.test)}}
    for name, build in (("ours", QCModel), ("cnn", CNNBaseline)):
        torch.manual_seed(config.seed)
        model = build(model_config)
        started = time.perf_counter()
        history = fit(model, data.train, classes=data.classes, config=config, valid=data.valid, label=name)
        seconds = time.perf_counter() - started
        test = evaluate(model, data.test, classes=data.classes, box_threshold=config.box_threshold)
        result[name] = {
            "parameters": sum(p.numel() for p in model.parameters()),
            "train_s": round(seconds, 1),
            "history": history,
            "test": test.as_dict(),
        }
        print(
            f"{name}: accuracy {test.accuracy:.4f}, mAP50 {test.map50:.3f} "
            f"(Soft-NMS {test.map50_soft_nms:.3f}; {seconds:.0f} s)",
            flush=True,
        )
        if isinstance(model, QCModel) and args.keep_model:
            metrics = {"test_accuracy": test.accuracy, "test_map50": test.map50, "epochs": config.epochs}
            save_qc_model(model, args.keep_model, class_names=data.classes, metrics=metrics)
            args.model = args.keep_model
    return result


def bench_throughput(args) -> dict:
    from apps.industrial_qc.export import load_backend

    result: dict = {"model": str(args.model)}
    for backend in ("torch", "onnx"):
        model, card = load_backend(args.model, backend=backend)
        size = card["model"]["image_size"]
        for batch in args.batches:
            images = torch.rand(batch, 3, size, size)
            for _ in range(3):
                model(images)
            rounds, started = 0, time.perf_counter()
            while rounds < 5 or time.perf_counter() - started < args.seconds:
                with torch.inference_mode():
                    model(images)
                rounds += 1
            per_s = rounds * batch / (time.perf_counter() - started)
            result[f"{backend}_batch{batch}_images_per_s"] = round(per_s, 1)
    return result


def bench_latency(args) -> dict:
    from apps.industrial_qc.dataset import read_neu_det

    images = [record.path.read_bytes() for record in read_neu_det(split="test")[: args.requests]]

    def send(http, _state, client: int, i: int) -> None:
        image = images[(client * args.requests + i) % len(images)]
        fields = {"file": ("part.jpg", image, "image/jpeg"), "line_id": f"L{client}", "station_id": "S1"}
        post(http, "/qc/inspect", fields=fields)

    result: dict = {"model": str(args.model), "runs": []}
    with tempfile.TemporaryDirectory() as scratch:
        options = [
            "--qc-model", str(args.model), "--qc-database", f"sqlite:///{scratch}/qc.db",
            "--qc-images", f"{scratch}/images", "--no-finance", "--no-customer-service",
            "--no-code-assist", "--no-medical",
        ]  # fmt: skip
        with suite_server(options, log=Path(scratch) / "server.log") as url:
            for clients in args.concurrency:
                result["runs"].append(
                    concurrent_latency(url, clients=clients, requests=args.requests, send=send)
                )
    return result


def table(report: dict) -> list[str]:
    lines: list[str] = []
    if accuracy := report.get("accuracy"):
        classes = list(accuracy["ours"]["test"]["recall"])
        recalls = [f"recall {c}" for c in classes]
        rows = [["model", "params", "accuracy", "mAP50", "Soft-NMS", *recalls, "train s"]]
        for name in ("ours", "cnn"):
            test = accuracy[name]["test"]
            rows.append([
                name, f"{accuracy[name]['parameters'] / 1e6:.2f} M",
                f"{test['accuracy']:.4f}", f"{test['map50']:.3f}", f"{test['map50_soft_nms']:.3f}",
                *[f"{test['recall'][c]:.3f}" for c in classes], f"{accuracy[name]['train_s']:.0f}",
            ])  # fmt: skip
        rows.append(["goal", "", f"{GOALS['accuracy']}", f"{GOALS['map50']}", "", *["" for _ in classes], ""])
        lines += [
            f"test split ({accuracy['images']['test']} images), {accuracy['training']['epochs']} epochs:"
        ]
        lines += aligned_rows(rows) + [""]
        rows = [["AP50", *accuracy["ours"]["test"]["ap50"]]]
        for name in ("ours", "cnn"):
            rows.append([name, *[f"{ap:.3f}" for ap in accuracy[name]["test"]["ap50"].values()]])
        lines += aligned_rows(rows) + [""]
    if throughput := report.get("throughput"):
        rows = [
            [
                "images/s",
                *[
                    f"batch {b}"
                    for b in sorted(
                        {int(k.split("batch")[1].split("_")[0]) for k in throughput if "batch" in k}
                    )
                ],
            ]
        ]
        for backend in ("torch", "onnx"):
            rows.append(
                [backend, *[f"{v:.1f}" for k, v in throughput.items() if k.startswith(f"{backend}_batch")]]
            )
        lines += aligned_rows(rows) + [f"goal: {GOALS['images_per_s']:.0f} images/s", ""]
    if latency := report.get("latency"):
        rows = [["clients", "requests", "P50 ms", "P99 ms", "requests/s"]]
        for run in latency["runs"]:
            rows.append(
                [
                    str(run["clients"]),
                    str(run["requests"]),
                    f"{run['p50_ms']}",
                    f"{run['p99_ms']}",
                    f"{run['requests_per_s']}",
                ]
            )
        lines += ["POST /qc/inspect over loopback HTTP:", *aligned_rows(rows)]
    return lines


def main(argv: list[str] | None = None) -> dict:
    from apps.industrial_qc.model import QCModelConfig
    from apps.industrial_qc.settings import SHIPPED_MODEL
    from apps.industrial_qc.training import TrainingConfig, read_splits

    parser = section_parser(__doc__, SECTIONS, results="industrial_qc.json")
    parser.add_argument("--preset", default="small", help="the model's size (QCModelConfig presets)")
    parser.add_argument(
        "--epochs", type=int, default=TrainingConfig.epochs, help="accuracy: epochs of both models"
    )
    parser.add_argument(
        "--limit", type=int, help="accuracy: at most this many images per split (a smoke run)"
    )
    parser.add_argument("--keep-model", type=Path, help="accuracy: save our trained model here")
    parser.add_argument("--model", type=Path, default=SHIPPED_MODEL, help="throughput, latency: the model")
    parser.add_argument(
        "--batches", type=comma_separated(int), default=[1, 32], help="throughput: batch sizes"
    )
    parser.add_argument(
        "--seconds", type=float, default=5.0, help="throughput: time each measurement this long"
    )
    parser.add_argument("--concurrency", type=comma_separated(int), default=[1, 4], help="latency: clients")
    parser.add_argument("--requests", type=int, default=40, help="latency: requests per client")
    args = parse_sections(parser, argv)
    args.training = TrainingConfig()
    if "accuracy" in args.sections:
        args.data = read_splits()
        if args.limit:
            args.data = args.data.limited(args.limit)
        args.model_config = replace(QCModelConfig.preset(args.preset), num_classes=len(args.data.classes))
    report: dict = json.loads(args.out.read_text()) if args.out.is_file() else {}
    report["environment"] = environment(["cpu"])
    chosen_at = datetime.now(UTC).isoformat(timespec="seconds")
    run_sections(
        report,
        sections=SECTIONS,
        chosen=args.sections,
        benches={"accuracy": bench_accuracy, "throughput": bench_throughput, "latency": bench_latency},
        args=args,
        out=args.out,
    )
    for name in args.sections:
        report[name]["measured_at"] = chosen_at
    print("\n".join(table(report)))
    write_report(report, args.out)
    return report


if __name__ == "__main__":
    main()
