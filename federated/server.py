"""The coordinator side: a Flower ServerApp that starts from a fresh adapter, runs the rounds
(FedAvg or FedProx, optionally with server-side differential privacy), records each round in SQL
and publishes each round's adapter to the adapter registry.

    app = coordinator_app(FederatedTask(labels=("B-Disease", "I-Disease", "O")),
                          ServerSettings(adapter="medical", rounds=10))
    # `flwr run` (deployment) or flwr.simulation.run_simulation(server_app=app, ...)

A run config (`flwr run --run-config 'rounds=5 strategy="fedprox"'`) overrides both the task's
and the server's settings by name. Each round the registry gets `<adapter>-round-<n>` and
`<adapter>` (the newest, which the suite serves); the round's record names its version. With
`secure_aggregation`, the rounds run under SecAgg+ instead (secure.py).
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping, FedAvg, FedProx, Strategy

from core_model.tagging import read_tagged
from core_model.train.adapters import adapter_state, evaluate_examples, load_adapter_state, save_task_model
from core_model.train.metrics import span_scores
from core_model.train.registry import AdapterRegistry

from .privacy import DEFAULT_DELTA, epsilon
from .records import RoundRecord, RoundStore
from .site import ARRAYS, METRICS, SITE, MetricValues, from_record, number, to_record
from .task import FederatedTask

log = logging.getLogger(__name__)

STRATEGIES = ("fedavg", "fedprox")


@dataclass(frozen=True)
class ServerSettings:
    adapter: str = "federated"  # the registry name each round publishes
    rounds: int = 10
    min_sites: int = 2  # sites that must be connected to start a round, and train in it
    fraction: float = 1.0  # of the connected sites sampled each round
    strategy: str = "fedavg"
    proximal_mu: float = 0.01  # FedProx
    server_lr: float = 1.0  # the server's step along the sites' mean update (1: the mean itself)
    dp_noise: float = 0.0  # > 0: server-side fixed clipping, Gaussian noise of this multiplier
    dp_clip: float = 1.0  # the clipping norm of each site's update
    secure_aggregation: bool = False  # SecAgg+ (secure.py): slower; no per-site evaluation, no DP
    round_timeout: float = 3600.0  # seconds to wait for the sites' replies (Flower's default)
    database: str = "sqlite:///runs/federated.db"
    registry: str = "runs/adapters"
    evaluation_data: str = ""  # an annotated file the coordinator scores each round ("": none)

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; expected one of {STRATEGIES}")
        if self.rounds < 1 or self.min_sites < 1:
            raise ValueError("rounds and min_sites must be >= 1")
        if self.server_lr <= 0:
            raise ValueError(f"server_lr must be > 0, got {self.server_lr}")
        if not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"fraction must be in (0, 1], got {self.fraction}")
        if self.secure_aggregation and self.dp_noise > 0:
            raise ValueError(
                "server-side DP clips each site's update, which secure aggregation hides: choose one"
            )


def split_run_config(
    run_config: Mapping[str, Any], task: FederatedTask, settings: ServerSettings
) -> tuple[FederatedTask, ServerSettings]:
    """`task` and `settings` with a run config's values applied (keys with '-' or '_')."""
    server_keys = {f.name for f in fields(ServerSettings)}
    server: dict[str, Any] = {}
    rest: dict[str, Any] = {}
    for key, value in run_config.items():
        name = key.replace("-", "_")
        (server if name in server_keys else rest)[name] = value
    return FederatedTask.from_config(rest, default=task), replace(settings, **server)


def round_lr(task: FederatedTask, round_number: int, rounds: int) -> float:
    """Cosine decay of the sites' learning rate over the rounds, from `task.lr` to a tenth of it."""
    progress = (round_number - 1) / max(rounds - 1, 1)
    return task.lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def server_step(sent: list[np.ndarray], mean: list[np.ndarray], lr: float) -> list[np.ndarray]:
    """sent + lr x (mean - sent): the server's step along the sites' mean update (FedOpt's server
    SGD without momentum). Above 1 it extrapolates: averaging sites that drifted apart shortens
    the step each took. Applied after aggregation (and after DP's noise, so DP's guarantee holds)."""
    return [(a + lr * (b - a)).astype(b.dtype) for a, b in zip(sent, mean, strict=True)]


def payload_bytes(arrays: ArrayRecord) -> int:
    """Bytes of the tensors themselves (what a site sends or receives, before framing)."""
    return sum(a.nbytes for a in arrays.to_numpy_ndarrays())


def pool_evaluations(replies: list[RecordDict], weighted_by_key: str) -> MetricRecord:
    """Sites' evaluation replies pooled: counts summed (entity scores recomputed from them),
    means weighted by the sites' record counts."""
    metrics = [next(iter(r.metric_records.values())) for r in replies]
    counts = [int(number(m[weighted_by_key])) for m in metrics]
    total = sum(counts)
    pooled: MetricValues = {weighted_by_key: total}
    for key in metrics[0]:
        if key == weighted_by_key:
            continue
        if key.endswith("_entities"):
            pooled[key] = sum(int(number(m[key])) for m in metrics)
        else:
            pooled[key] = sum(number(m[key]) * n for m, n in zip(metrics, counts, strict=True)) / max(
                total, 1
            )
    if "gold_entities" in pooled:
        scores = span_scores(
            matched=int(number(pooled["matched_entities"])),
            predicted=int(number(pooled["predicted_entities"])),
            gold=int(number(pooled["gold_entities"])),
        )
        pooled.update({k: scores[k] for k in ("precision", "recall", "f1")})
    return MetricRecord(pooled)


class RecordedStrategy(Strategy):
    """Wraps a strategy: sets each round's learning rate, takes the server's step, and notes what
    a round sends and receives (sites, records, losses, payload bytes, failures, time) for the
    round record."""

    def __init__(self, inner: Strategy, task: FederatedTask, rounds: int, server_lr: float = 1.0) -> None:
        self.inner, self.task, self.rounds, self.server_lr = inner, task, rounds, server_lr
        self.current: dict[str, Any] = {}
        self.sent: ArrayRecord | None = None

    def summary(self) -> None:
        self.inner.summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        config = ConfigRecord({**config, "lr": round_lr(self.task, server_round, self.rounds)})
        messages = list(self.inner.configure_train(server_round, arrays, config, grid))
        self.current = {"started": time.monotonic(), "bytes_down": payload_bytes(arrays) * len(messages)}
        self.sent = arrays
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        good = [r for r in replies if not r.has_error()]
        names = [str(r.content.config_records[SITE]["name"]) for r in good]
        metrics = [r.content.metric_records[METRICS] for r in good]
        self.current.update(
            sites=names,
            failures=len(replies) - len(good),
            examples=sum(int(number(m["num-examples"])) for m in metrics),
            site_losses={n: number(m["train-loss"]) for n, m in zip(names, metrics, strict=True)},
            bytes_up=sum(payload_bytes(r.content.array_records[ARRAYS]) for r in good),
        )
        for reply in replies:
            if reply.has_error():
                log.warning(
                    "round %d: no update from node %d: %s",
                    server_round,
                    reply.metadata.src_node_id,
                    reply.error.reason,
                )
        mean, pooled = self.inner.aggregate_train(server_round, replies)
        if mean is None or self.sent is None or self.server_lr == 1.0:
            return mean, pooled
        keys = list(mean.keys())
        stepped = server_step(
            [self.sent[k].numpy() for k in keys], [mean[k].numpy() for k in keys], self.server_lr
        )
        return ArrayRecord({k: Array(a) for k, a in zip(keys, stepped, strict=True)}), pooled

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        messages = list(self.inner.configure_evaluate(server_round, arrays, config, grid))
        self.current["bytes_down"] = self.current.get("bytes_down", 0) + payload_bytes(arrays) * len(messages)
        return messages

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        pooled = self.inner.aggregate_evaluate(server_round, list(replies))
        self.current["site_metrics"] = dict(pooled) if pooled is not None else {}
        return pooled


def build_strategy(task: FederatedTask, settings: ServerSettings) -> RecordedStrategy:
    """FedAvg or FedProx over `settings.min_sites`+ sites, optionally under server-side DP."""
    common: dict[str, Any] = dict(
        fraction_train=settings.fraction, fraction_evaluate=settings.fraction,
        min_train_nodes=settings.min_sites, min_evaluate_nodes=settings.min_sites,
        min_available_nodes=settings.min_sites, evaluate_metrics_aggr_fn=pool_evaluations,
    )  # fmt: skip
    inner: Strategy = (
        FedProx(proximal_mu=settings.proximal_mu, **common)
        if settings.strategy == "fedprox"
        else FedAvg(**common)
    )
    if settings.dp_noise > 0:
        inner = DifferentialPrivacyServerSideFixedClipping(
            inner,
            noise_multiplier=settings.dp_noise,
            clipping_norm=settings.dp_clip,
            num_sampled_clients=settings.min_sites,
        )
    return RecordedStrategy(inner, task, settings.rounds, settings.server_lr)


def run_federation(grid: Grid, context: Context, task: FederatedTask, settings: ServerSettings) -> int:
    """The whole run: rounds, records, publications. Returns the run's id in the database."""
    store = RoundStore(settings.database)
    registry = AdapterRegistry(settings.registry)
    model = task.build()
    evaluation = read_tagged(settings.evaluation_data) if settings.evaluation_data else []
    kind = (
        settings.strategy
        + ("+dp" if settings.dp_noise > 0 else "")
        + ("+secagg" if settings.secure_aggregation else "")
    )
    recorded = {"task": task.to_config(), "server": asdict(settings)}
    rounds = settings.rounds
    run_id = store.start_run(adapter=settings.adapter, strategy=kind, settings=recorded, rounds=rounds)

    def after_round(server_round: int, tensors: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
        """Score the aggregated state, publish it, record the round; returns its metrics."""
        load_adapter_state(model, tensors)
        metrics: dict[str, Any] = {"sites": current.get("site_metrics", {})}
        if evaluation:
            metrics["server"] = evaluate_examples(model, evaluation, batch_size=task.batch_size)
        if settings.dp_noise > 0:  # what the adapters published so far reveal about any one site
            spent = epsilon(noise_multiplier=settings.dp_noise, rounds=server_round)
            metrics["privacy"] = {"epsilon": spent, "delta": DEFAULT_DELTA}
        version = publish(model, registry, settings.adapter, server_round, metrics, task)
        store.add_round(
            run_id,
            RoundRecord(
                round=server_round, sites=current.get("sites", []), examples=current.get("examples", 0),
                bytes_down=current.get("bytes_down", 0), bytes_up=current.get("bytes_up", 0),
                seconds=time.monotonic() - current.get("started", time.monotonic()),
                failures=current.get("failures", 0), site_losses=current.get("site_losses", {}),
                metrics=metrics, adapter_version=version,
            ),
        )  # fmt: skip
        log.info("round %d recorded; %s version %s", server_round, settings.adapter, version[:12])
        return metrics

    try:
        if settings.secure_aggregation:
            from .secure import run_secure_federation

            run_secure_federation(grid, context, task, settings, after_round)
        else:
            strategy = build_strategy(task, settings)

            def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
                if server_round == 0:
                    return None
                metrics = after_round(server_round, from_record(arrays), strategy.current)
                return MetricRecord({k: float(v) for k, v in metrics.get("server", {}).items()})

            strategy.start(
                grid=grid, initial_arrays=to_record(adapter_state(model)), num_rounds=settings.rounds,
                timeout=settings.round_timeout, train_config=ConfigRecord(task.to_config()),
                evaluate_config=ConfigRecord(task.to_config()), evaluate_fn=evaluate_fn,
            )  # fmt: skip
        store.finish_run(run_id)
    finally:
        store.close()
    return run_id


def publish(
    model, registry: AdapterRegistry, name: str, server_round: int, metrics: dict, task: FederatedTask
) -> str:
    """Write the round's adapter to the registry as `<name>-round-<n>` and as `<name>`."""
    with tempfile.TemporaryDirectory() as scratch:
        best = metrics.get("server") or metrics.get("sites") or {}
        save_task_model(
            model, Path(scratch), {"task": task.task, "round": server_round, "best": best},
            config=task.adapter_config(), base_source=task.base,
        )  # fmt: skip
        registry.add(f"{name}-round-{server_round}", scratch, overwrite=True)
        return registry.add(name, scratch, overwrite=True).version


def coordinator_app(task: FederatedTask, settings: ServerSettings) -> ServerApp:
    """A ServerApp running `run_federation` with the run config's overrides applied."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        run_task, run_settings = split_run_config(context.run_config, task, settings)
        run_federation(grid, context, run_task, run_settings)

    return app
