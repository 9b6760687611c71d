"""Secure aggregation (SecAgg+): the coordinator learns only the sum of the sites' updates, never
one site's. Flower ships SecAgg+ for its legacy strategy API only (`SecAggPlusWorkflow` with a
`flwr.server.strategy.FedAvg` and the client's `secaggplus_mod`), so a secure run goes through
that API; the sites' training, the round records and the publication are the same as in
server.py. It is slower: each round has four stages (set-up, key shares, masked vectors,
unmasking), each a message to every site (a fresh ClientApp process each in a deployment).

    ServerSettings(secure_aggregation=True)     # coordinator_app then runs run_secure_federation
    site_app(load_site)                         # handles both kinds of round: nothing to change

Tensors travel as a list in the order of `tensor_names(task)`, which both sides compute.
Federated evaluation is off in a secure run (an evaluation reply is not masked); the coordinator
scores its own held-out set when it has one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from flwr.app import Context, Message
from flwr.client.mod import secaggplus_mod
from flwr.clientapp.typing import ClientAppCallable
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
from flwr.compat.common import recorddict_compat as compat
from flwr.server import Grid, LegacyContext, ServerConfig
from flwr.server.strategy import FedAvg as LegacyFedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

from core_model.train.adapters import adapter_state

from .server import round_lr, server_step
from .site import ARRAYS, METRICS, SITE, Site, local_train, number, task_from_message, to_record
from .task import FederatedTask

LEGACY_TRAIN = "fitins.parameters"  # a secure round's train message holds its tensors here


def tensor_names(task: FederatedTask) -> list[str]:
    """The adapter and head tensors' names, in the order a secure round's lists use."""
    return sorted(adapter_state(task.build()))


def is_secure_round(msg: Message) -> bool:
    return LEGACY_TRAIN in msg.content.array_records or RECORD_KEY_CONFIGS in msg.content.config_records


def secure_aggregation_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """SecAgg+'s client side for the messages of a secure round; every other message passes."""
    if is_secure_round(msg):
        return secaggplus_mod(msg, context, call_next)
    return call_next(msg, context)


def secure_local_train(site: Site, msg: Message) -> Message:
    """A secure round's training at a site: the same local training, answered in the legacy
    shape that secaggplus_mod masks (its metrics: the site's name, loss and record count)."""
    fitins = compat.recorddict_to_fitins(msg.content, keep_input=True)
    config = dict(fitins.config)
    names = tensor_names(task_from_message(config))
    arrays = dict(
        zip(
            names,
            (torch.from_numpy(a.copy()) for a in parameters_to_ndarrays(fitins.parameters)),
            strict=True,
        )
    )
    reply = local_train(site, to_record(arrays), config)
    trained = reply.array_records[ARRAYS].to_torch_state_dict()
    metrics = reply.metric_records[METRICS]
    fitres = FitRes(
        status=Status(code=Code.OK, message="ok"),
        parameters=ndarrays_to_parameters([trained[n].numpy() for n in names]),
        num_examples=int(number(metrics["num-examples"])),
        metrics={
            "train-loss": number(metrics["train-loss"]),
            "site": str(reply.config_records[SITE]["name"]),
        },
    )
    return Message(compat.fitres_to_recorddict(fitres, keep_input=True), reply_to=msg)


class RecordedLegacyFedAvg(LegacyFedAvg):
    """Flower's legacy FedAvg noting what each round trained on, for the round record, and taking
    the server's step (server.server_step) from the unmasked mean."""

    def __init__(self, *, payload: int, server_lr: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.payload, self.server_lr = payload, server_lr
        self.current: dict[str, Any] = {}
        self.sent: list[np.ndarray] = []

    def configure_fit(self, server_round, parameters, client_manager):
        instructions = super().configure_fit(server_round, parameters, client_manager)
        self.current = {"started": time.monotonic(), "bytes_down": self.payload * len(instructions)}
        self.sent = parameters_to_ndarrays(parameters)
        return instructions

    def aggregate_fit(self, server_round, results, failures):
        sites = [str(res.metrics["site"]) for _, res in results]
        self.current.update(
            sites=sites, failures=len(failures), examples=sum(res.num_examples for _, res in results),
            site_losses={str(res.metrics["site"]): float(res.metrics["train-loss"]) for _, res in results},
            bytes_up=self.payload * len(results),
        )  # fmt: skip
        mean, metrics = super().aggregate_fit(server_round, results, failures)
        if mean is None or self.server_lr == 1.0:
            return mean, metrics
        stepped = server_step(self.sent, parameters_to_ndarrays(mean), self.server_lr)
        return ndarrays_to_parameters(stepped), metrics


def run_secure_federation(
    grid: Grid, context: Context, task: FederatedTask, settings: Any, after_round: Callable[..., Any]
) -> None:
    """The rounds under SecAgg+; `after_round(round, tensors, strategy.current)` scores, publishes
    and records each round, as in server.run_federation."""
    names = tensor_names(task)
    initial = adapter_state(task.build())
    payload = sum(v.numel() * v.element_size() for v in initial.values())
    plain = {
        k: ",".join(v) if isinstance(v, list) else v for k, v in task.to_config().items()
    }  # legacy configs hold scalars

    def fit_config(server_round: int) -> dict[str, Any]:
        config = {**plain, "lr": round_lr(task, server_round, settings.rounds), "server-round": server_round}
        if settings.strategy == "fedprox":
            config["proximal-mu"] = settings.proximal_mu
        return config

    def evaluate(server_round: int, ndarrays, config) -> tuple[float, dict] | None:
        if server_round == 0:
            return None
        tensors = {n: torch.from_numpy(np.array(a)) for n, a in zip(names, ndarrays, strict=True)}
        after_round(server_round, tensors, strategy.current)
        return 0.0, {}

    strategy = RecordedLegacyFedAvg(
        payload=payload, server_lr=settings.server_lr, fraction_fit=settings.fraction, fraction_evaluate=0.0,
        min_fit_clients=settings.min_sites, min_available_clients=settings.min_sites,
        on_fit_config_fn=fit_config, evaluate_fn=evaluate,
        initial_parameters=ndarrays_to_parameters([initial[n].numpy() for n in names]),
    )  # fmt: skip
    legacy = LegacyContext(
        context=context,
        config=ServerConfig(num_rounds=settings.rounds, round_timeout=settings.round_timeout),
        strategy=strategy,
    )
    threshold = max(2, settings.min_sites - 1)  # shares needed to unmask: survives one site lost mid-round
    workflow = SecAggPlusWorkflow(
        num_shares=settings.min_sites, reconstruction_threshold=threshold, timeout=settings.round_timeout
    )
    DefaultWorkflow(fit_workflow=workflow)(grid, legacy)
