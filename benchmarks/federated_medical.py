"""Federated clinical NER on NCBI-disease: entity F1 (exact spans) on the test set for centralized
training, federated training over 3 sites (even and skewed splits), each site alone, and the
federation under server-side differential privacy; bytes per round (adapter vs full model) and
round time. The federated runs go through the suite's own ServerApp and ClientApp under Flower's
simulation engine (3 virtual SuperNodes), the same code the deployment runs.

    .venv/bin/python benchmarks/federated_medical.py                      # every section (~1.6 h on 2 cores)
    .venv/bin/python benchmarks/federated_medical.py --quick              # a smoke run of every section
    .venv/bin/python benchmarks/federated_medical.py --sections centralized,even --rounds 8

Every section trains the same adapter (FederatedTask's settings) for the same number of passes:
`--rounds` rounds of one local epoch, or as many epochs for centralized and single-site training
(which keep their best dev state, as the suite's training loop does). Writes
benchmarks/results/federated_medical.json and prints a table.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (  # noqa: E402
    aligned_rows,
    comma_separated,
    environment,
    parse_sections,
    run_sections,
    section_parser,
    write_report,
)

SECTIONS = ("centralized", "even", "skewed", "single_sites", "dp")
SITES = ["north", "south", "east"]


def corpus(args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    from core_model.datasets import dataset_dir
    from core_model.tagging import read_tagged

    directory = dataset_dir("ncbi_disease")
    splits = {"train": read_tagged(directory / "train.tsv"), "dev": read_tagged(directory / "devel.tsv")}
    splits["test"] = read_tagged(directory / "test.tsv")
    if args.quick:
        splits = {"train": splits["train"][:90], "dev": splits["dev"][:20], "test": splits["test"][:30]}
    return splits


def the_task(args: argparse.Namespace):
    from apps.medical.federation import MEDICAL_TASK

    task = replace(MEDICAL_TASK, local_epochs=1, lr=args.lr or MEDICAL_TASK.lr)
    if args.quick:
        task = replace(task, rank=2, max_length=64)
    return task


def test_f1(task, adapter_dir: Path, test: list[dict[str, Any]]) -> dict[str, float]:
    from core_model import load_tokenizer
    from core_model.train.adapters import evaluate_examples, load_task_model

    model = load_task_model(task.base, adapter_dir, tokenizer=load_tokenizer(task.base))
    scores = evaluate_examples(model, test, batch_size=32)
    return {k: round(float(scores[k]), 4) for k in ("f1", "precision", "recall")}


def train_alone(task, train, dev, test, *, epochs: int, out: Path) -> dict[str, Any]:
    """The training loop on one pool of records: best dev state over `epochs` epochs."""
    import torch

    from core_model import load_tokenizer
    from core_model.train.adapters import train_adapter

    torch.set_num_threads(2)  # one process alone on the machine (the simulation's workers use 1 each)
    started = time.perf_counter()
    config = task.adapter_config(epochs=epochs, patience=0, warmup_ratio=0.05)
    result = train_adapter(
        task.base, load_tokenizer(task.base), task=task.task, train=train, dev=dev, out_dir=out,
        labels=list(task.labels), config=config, progress=False,
    )  # fmt: skip
    return {
        "test": test_f1(task, out, test), "dev_f1": round(result.metrics["best"]["f1"], 4),
        "best_epoch": result.metrics["best"]["epoch"], "train_sentences": len(train),
        "seconds": round(time.perf_counter() - started, 1),
    }  # fmt: skip


def federate(task, shares: dict[str, dict], test, *, rounds: int, root: Path, **server) -> dict[str, Any]:
    """The suite's ServerApp and ClientApp under Flower's simulation engine, one virtual
    SuperNode per site; the final published adapter scored on the test set."""
    from flwr.simulation import run_simulation

    from federated.records import RoundStore
    from federated.server import ServerSettings, coordinator_app
    from federated.site import Site, site_app

    sites = [Site(name, share["train"], share["dev"]) for name, share in shares.items()]
    settings = ServerSettings(
        adapter="medical", rounds=rounds, min_sites=len(sites), database=f"sqlite:///{root / 'rounds.db'}",
        registry=str(root / "registry"), **server,
    )  # fmt: skip

    def load_site(node_config):
        return sites[int(node_config["partition-id"])]

    started = time.perf_counter()
    backend = {
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        "init_args": {"num_cpus": 2, "include_dashboard": False},
    }
    run_simulation(
        server_app=coordinator_app(task, settings), client_app=site_app(load_site), num_supernodes=len(sites),
        backend_config=backend,
    )  # fmt: skip
    wall = time.perf_counter() - started
    store = RoundStore(settings.database)
    records = store.rounds(store.runs()[0].id)
    store.close()
    return {
        "test": test_f1(task, root / "registry" / "medical", test),
        "sites_f1_by_round": [round(r.metrics["sites"].get("f1", 0.0), 4) for r in records],
        "bytes_down_per_round": records[-1].bytes_down, "bytes_up_per_round": records[-1].bytes_up,
        "round_s": [round(r.seconds, 1) for r in records], "seconds": round(wall, 1),
        "update_norms": update_norms(root / "registry", rounds),
        "train_sentences": sum(len(s["train"]) for s in shares.values()),
    }  # fmt: skip


def update_norms(registry: Path, rounds: int) -> list[float]:
    """L2 norm of the change of the published adapter + head from round to round (round 1: from
    zero LoRA B and the seeded head is not kept, so rounds 2..R)."""
    from safetensors.torch import load_file

    def tensors(n: int) -> dict:
        directory = registry / f"medical-round-{n}"
        return {
            **load_file(str(directory / "adapter_model.safetensors")),
            **load_file(str(directory / "head.safetensors")),
        }

    norms = []
    for n in range(2, rounds + 1):
        before, after = tensors(n - 1), tensors(n)
        norms.append(round(math.sqrt(sum(float(((after[k] - before[k]) ** 2).sum()) for k in after)), 4))
    return norms


def bench_centralized(args) -> dict:
    """The training loop on the records the 3 sites of the even split train on, pooled (each
    site keeps a tenth of its documents for its own evaluation), the dev set picking the epoch."""
    from apps.medical.sites import split_corpus

    shares = split_corpus(args.data["train"], SITES, mode="even")
    pooled = [s for share in shares.values() for s in share["train"]]
    with tempfile.TemporaryDirectory() as scratch:
        return train_alone(
            args.task, pooled, args.data["dev"], args.data["test"], epochs=args.rounds, out=Path(scratch)
        )


def bench_split(mode: str, args) -> dict:
    from apps.medical.sites import split_corpus

    shares = split_corpus(args.data["train"], SITES, mode=mode)
    with tempfile.TemporaryDirectory() as scratch:
        root, test = Path(scratch), args.data["test"]
        result = federate(args.task, shares, test, rounds=args.rounds, root=root, server_lr=args.server_lr)
        if mode == "even" and args.keep_adapter:
            shutil.rmtree(args.keep_adapter, ignore_errors=True)
            shutil.copytree(root / "registry" / "medical", args.keep_adapter)
    result["site_sentences"] = {n: len(s["train"]) for n, s in shares.items()}
    return result


def bench_single_sites(args) -> dict:
    from apps.medical.sites import split_corpus

    out = {}
    for mode in args.single_site_splits:
        for name, share in split_corpus(args.data["train"], SITES, mode=mode).items():
            with tempfile.TemporaryDirectory() as scratch:
                out[f"{mode}/{name}"] = train_alone(
                    args.task,
                    share["train"],
                    share["dev"],
                    args.data["test"],
                    epochs=args.rounds,
                    out=Path(scratch),
                )
    return out


def bench_dp(args) -> dict:
    from apps.medical.sites import split_corpus

    shares = split_corpus(args.data["train"], SITES, mode="even")
    out = {"clip": args.dp_clip}
    for noise in args.dp_noise:
        with tempfile.TemporaryDirectory() as scratch:
            out[f"noise {noise}"] = federate(
                args.task,
                shares,
                args.data["test"],
                rounds=args.rounds,
                root=Path(scratch),
                dp_noise=noise,
                dp_clip=args.dp_clip,
                server_lr=args.server_lr,
            )
    return out


def model_bytes(task) -> dict[str, int]:
    """Bytes of one message's tensors: the adapter and head as sent, and the whole model."""
    base = task.build()
    adapter = sum(
        v.numel() * v.element_size()
        for k, v in base.state_dict().items()
        if ".lora_" in k or k.startswith("head.")
    )
    full = sum(
        v.numel() * 4 for k, v in base.state_dict().items() if ".lora_" not in k
    )  # merged weights + head, float32
    return {"adapter_and_head": adapter, "full_model": full}


def table(report: dict) -> list[str]:
    rows = [["run", "train sentences", "test F1", "precision", "recall", "seconds"]]

    def add(name: str, result: dict) -> None:
        t = result["test"]
        rows.append(
            [
                name,
                str(result["train_sentences"]),
                f"{t['f1']:.4f}",
                f"{t['precision']:.4f}",
                f"{t['recall']:.4f}",
                f"{result['seconds']:.0f}",
            ]
        )

    if "centralized" in report:
        add("centralized", report["centralized"])
    for mode in ("even", "skewed"):
        if mode in report:
            add(f"federated, 3 sites, {mode}", report[mode])
    for name, result in report.get("single_sites", {}).items():
        if isinstance(result, dict):
            add(f"single site {name}", result)
    from federated.privacy import epsilon

    for name, result in report.get("dp", {}).items():
        if isinstance(result, dict):
            spent = epsilon(noise_multiplier=float(name.split()[-1]), rounds=report["rounds"])
            add(f"federated even, DP {name} (epsilon {spent:,.0f}), clip {report['dp']['clip']}", result)
    lines = aligned_rows(rows)
    if "centralized" in report and "even" in report:
        central = report["centralized"]["test"]["f1"]
        lines.append(
            f"federated (even) / centralized: {report['even']['test']['f1'] / max(central, 1e-9):.3f}"
        )
    sizes = report["bytes"]
    adapter, full = sizes["adapter_and_head"], sizes["full_model"]
    lines.append(
        f"bytes per message: adapter + head {adapter:,} vs full model {full:,} ({full / adapter:.0f}x)"
    )
    if "even" in report:
        even = report["even"]
        down, up = even["bytes_down_per_round"], even["bytes_up_per_round"]
        lines.append(f"per round (3 sites, train + evaluate): {down:,} B down, {up:,} B up")
        lines.append(f"round seconds: {even['round_s']}")
    return lines


def main(argv: list[str] | None = None) -> dict:
    parser = section_parser(__doc__, SECTIONS, results="federated_medical.json")
    parser.add_argument("--quick", action="store_true", help="small slices, tiny adapter, 2 rounds")
    parser.add_argument("--rounds", type=int, default=8, help="federated rounds = epochs of the others")
    parser.add_argument("--lr", type=float, help="learning rate of every section (default: the task's)")
    parser.add_argument(
        "--server-lr", type=float,
        help="the server's step along the sites' mean update (default: the medical federation's)",
    )  # fmt: skip
    parser.add_argument(
        "--dp-noise", type=comma_separated(float), default=[0.01, 0.1], help="noise multipliers"
    )
    parser.add_argument("--dp-clip", type=float, default=1.0, help="clipping norm of each site's update")
    parser.add_argument(
        "--single-site-splits", type=comma_separated(str), default=["skewed", "even"],
        help="the splits whose sites are also trained alone",
    )  # fmt: skip
    parser.add_argument("--keep-adapter", type=Path, help="copy the even federation's final adapter here")
    args = parse_sections(parser, argv)
    if args.quick:
        args.rounds, args.dp_noise = 2, [0.5]
    # The simulation's two workers share the 2 cores: one thread each, whatever the shell exported
    # (OMP_NUM_THREADS=2 made each site's round 5x slower); pooled training sets its own 2 threads.
    os.environ["OMP_NUM_THREADS"] = "1"
    args.data, args.task = corpus(args), the_task(args)
    if args.server_lr is None:
        from apps.medical.federation import SERVER_SETTINGS

        args.server_lr = SERVER_SETTINGS.server_lr
    benches = {
        "centralized": bench_centralized, "even": lambda a: bench_split("even", a),
        "skewed": lambda a: bench_split("skewed", a), "single_sites": bench_single_sites, "dp": bench_dp,
    }  # fmt: skip
    report: dict = {"environment": environment(["cpu"]), "quick": args.quick, "rounds": args.rounds}
    report["server_lr"] = args.server_lr
    report["task"] = args.task.to_config()
    report["bytes"] = model_bytes(args.task)
    run_sections(report, sections=SECTIONS, chosen=args.sections, benches=benches, args=args, out=args.out)
    print("\n".join(table(report)))
    write_report(report, args.out)
    return report


if __name__ == "__main__":
    main()
