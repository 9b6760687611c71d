"""The ServerApp and ClientApp under Flower's simulation engine (ray, 3 virtual SuperNodes): rounds
recorded in SQL, each round's adapter published to the registry, FedProx with server-side DP,
SecAgg+, and an audit of every message the sites send."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from flwr.simulation import run_simulation
from safetensors.torch import load_file

from core_model.train.adapters import save_task_model
from core_model.train.registry import AdapterRegistry
from federated.privacy import epsilon
from federated.records import RoundStore
from federated.server import ServerSettings, coordinator_app
from federated.site import MESSAGE_KEYS, site_app

from .conftest import SITES

BACKEND = {
    "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
    "init_args": {"num_cpus": 2, "include_dashboard": False},
}


def audit_to(path: Path):
    """A client mod that writes down the shape of every reply a site sends (keys, never values)."""

    def audit(msg, context, call_next):
        reply = call_next(msg, context)
        content = reply.content
        row = {
            "type": reply.metadata.message_type,
            "arrays": {k: {n: list(a.shape) for n, a in r.items()} for k, r in content.array_records.items()},
            "metrics": {k: sorted(r.keys()) for k, r in content.metric_records.items()},
            "configs": {k: dict(r) for k, r in content.config_records.items()},
        }
        with path.open("a") as out:
            out.write(json.dumps(row) + "\n")
        return reply

    return audit


def simulate(task, sites, settings: ServerSettings, *, mods=()) -> None:
    def load_site(node_config):
        return sites[int(node_config["partition-id"])]

    run_simulation(
        server_app=coordinator_app(task, settings), client_app=site_app(load_site, mods=mods),
        num_supernodes=len(sites), backend_config=BACKEND,
    )  # fmt: skip


@pytest.fixture(scope="module")
def fedavg_run(task, sites, tmp_path_factory):
    root = tmp_path_factory.mktemp("fedavg")
    settings = ServerSettings(
        adapter="ner", rounds=2, min_sites=3, database=f"sqlite:///{root / 'rounds.db'}",
        registry=str(root / "registry"), evaluation_data=str(root / "held_out.tsv"),
    )  # fmt: skip
    held_out = "\n\n".join(
        "\n".join(f"{w}\t{t}" for w, t in zip(s["tokens"], s["tags"], strict=True))
        for s in sites[0].evaluation
    )
    Path(settings.evaluation_data).write_text(held_out + "\n")
    simulate(task, sites, settings, mods=[audit_to(root / "audit.jsonl")])
    return settings, root


def test_every_round_is_recorded_with_sites_counts_bytes_and_scores(fedavg_run, task, sites):
    settings, _ = fedavg_run
    store = RoundStore(settings.database)
    run = store.runs()[0]
    rounds = store.rounds(run.id)
    assert run.finished_at is not None and run.strategy == "fedavg" and run.rounds_planned == 2
    assert [r.round for r in rounds] == [1, 2]
    adapter_bytes = sum(
        v.numel() * 4 for k, v in task.build().state_dict().items() if ".lora_" in k or k.startswith("head.")
    )
    for record in rounds:
        assert sorted(record.sites) == sorted(SITES) and record.failures == 0
        assert record.examples == sum(len(s.train) for s in sites)
        assert record.bytes_up == 3 * adapter_bytes
        assert record.bytes_down == 6 * adapter_bytes  # train and evaluate messages to each site
        assert record.site_losses.keys() == set(SITES)
        assert record.metrics["sites"]["num-examples"] == sum(len(s.evaluation) for s in sites)
        assert 0.0 <= record.metrics["server"]["f1"] <= 1.0 and record.seconds > 0
    assert rounds[1].site_losses["north"] < rounds[0].site_losses["north"]
    store.close()


def test_each_round_publishes_its_adapter_to_the_registry(fedavg_run):
    settings, _ = fedavg_run
    store = RoundStore(settings.database)
    rounds = store.rounds(store.runs()[0].id)
    registry = AdapterRegistry(settings.registry)
    assert registry.names() == ["ner", "ner-round-1", "ner-round-2"]
    assert registry.version("ner-round-1") == rounds[0].adapter_version
    assert registry.version("ner") == registry.version("ner-round-2") == rounds[1].adapter_version
    assert registry.info("ner").task == "token-classification"
    store.close()


def test_sites_send_nothing_but_adapter_and_head_tensors_counts_and_metrics(fedavg_run, task):
    _, root = fedavg_run
    rows = [json.loads(line) for line in (root / "audit.jsonl").read_text().splitlines()]
    assert sorted(row["type"] for row in rows) == ["evaluate"] * 6 + ["train"] * 6
    adapter = {
        k: list(v.shape)
        for k, v in task.build().state_dict().items()
        if ".lora_" in k or k.startswith("head.")
    }
    for row in rows:
        allowed = MESSAGE_KEYS[row["type"]]
        assert set(row["arrays"]) <= {"arrays"} and bool(row["arrays"]) == (row["type"] == "train")
        for tensors in row["arrays"].values():
            assert tensors == adapter  # the adapter and head, exactly: no base weight, no data
        assert set(row["metrics"]) == {"metrics"} and set(row["metrics"]["metrics"]) <= set(
            allowed["metrics"]
        )
        assert row["configs"] == {"site": {"name": row["configs"]["site"]["name"]}}
        assert row["configs"]["site"]["name"] in SITES


def test_fedprox_under_server_side_differential_privacy(task, sites, tmp_path):
    settings = ServerSettings(
        adapter="ner", rounds=1, min_sites=3, strategy="fedprox", proximal_mu=0.1, dp_noise=0.5, dp_clip=0.5,
        database=f"sqlite:///{tmp_path / 'rounds.db'}", registry=str(tmp_path / "registry"),
    )  # fmt: skip
    simulate(task, sites, settings)
    store = RoundStore(settings.database)
    run = store.runs()[0]
    assert run.strategy == "fedprox+dp" and run.settings["server"]["dp_noise"] == 0.5
    (record,) = store.rounds(run.id)
    assert sorted(record.sites) == sorted(SITES)
    assert record.metrics["privacy"] == {"epsilon": epsilon(noise_multiplier=0.5, rounds=1), "delta": 1e-5}
    assert AdapterRegistry(settings.registry).version("ner") == record.adapter_version
    store.close()


def test_secure_aggregation_gives_the_plain_federation_average(task, sites, tmp_path):
    """SecAgg+ (quantised masks) over one round lands where plain FedAvg does, within the
    quantisation step, both with the server stepping twice as far as the sites' mean (server_lr
    2); per-site records still name who took part."""
    results = {}
    for secure in (False, True):
        root = tmp_path / ("secure" if secure else "plain")
        settings = ServerSettings(
            adapter="ner", rounds=1, min_sites=3, secure_aggregation=secure, server_lr=2.0,
            database=f"sqlite:///{root / 'rounds.db'}", registry=str(root / "registry"),
        )  # fmt: skip
        simulate(task, sites, settings)
        store = RoundStore(settings.database)
        run = store.runs()[0]
        (record,) = store.rounds(run.id)
        store.close()
        assert sorted(record.sites) == sorted(SITES) and run.strategy == (
            "fedavg+secagg" if secure else "fedavg"
        )
        results[secure] = load_file(str(root / "registry" / "ner" / "head.safetensors"))
    for name, plain in results[False].items():
        assert torch.allclose(results[True][name], plain, atol=1e-3), name  # masks are quantised


def published_tensors(directory: Path) -> dict[str, torch.Tensor]:
    return {
        **load_file(str(directory / "adapter_model.safetensors")),
        **load_file(str(directory / "head.safetensors")),
    }


def test_a_server_learning_rate_of_2_doubles_the_step_to_the_sites_mean(fedavg_run, task, sites, tmp_path):
    """Round 1 lands twice as far from the start as plain FedAvg's round 1:
    start + 2 x (mean of the sites' states - start)."""
    settings = ServerSettings(
        adapter="ner", rounds=1, min_sites=3, server_lr=2.0,
        database=f"sqlite:///{tmp_path / 'rounds.db'}", registry=str(tmp_path / "registry"),
    )  # fmt: skip
    simulate(task, sites, settings)
    store = RoundStore(settings.database)
    assert store.runs()[0].settings["server"]["server_lr"] == 2.0
    store.close()
    save_task_model(task.build(), tmp_path / "start", {}, config=task.adapter_config(), base_source=task.base)
    start = published_tensors(tmp_path / "start")
    mean = published_tensors(Path(fedavg_run[0].registry) / "ner-round-1")
    stepped = published_tensors(tmp_path / "registry" / "ner")
    assert stepped.keys() == mean.keys() == start.keys()
    for name, value in stepped.items():
        assert torch.allclose(value, 2 * mean[name] - start[name], atol=1e-5), name
    assert any(not torch.allclose(mean[name], start[name]) for name in start)
