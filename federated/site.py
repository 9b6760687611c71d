"""The site side: a Flower ClientApp that trains the federation's adapter and head on records
that never leave the site, and answers only with adapter and head tensors, counts and metrics.

    def load_site(node_config) -> Site:                    # the site's own records, read locally
        return Site(name=node_config["site"], train=read_tagged(...), evaluation=read_tagged(...))
    app = site_app(load_site)                              # a flwr.clientapp.ClientApp

Train message in: "arrays" (the current adapter + head tensors) and "config" (the
FederatedTask's settings, this round's learning rate, "server-round", FedProx's "proximal-mu").
Reply: "arrays" (the trained tensors, same names), "metrics" ({"num-examples", "train-loss",
"train-seconds"}), "site" ({"name"}). Evaluate reply: "metrics" with the entity counts (or
accuracy) of the site's evaluation records, so the server can pool them exactly, and "site".
`MESSAGE_KEYS` lists every key a reply may hold; a test checks the messages against it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import Mod

from core_model.train.adapters import adapter_state, evaluate_examples, fine_tune, load_adapter_state

from .task import FederatedTask

ARRAYS, CONFIG, METRICS, SITE = "arrays", "config", "metrics", "site"
# What a site's evaluation reply holds per task: counts, and means weighted by num-examples.
EVALUATION_KEYS = {
    "token-classification": (
        "num-examples",
        "loss",
        "matched_entities",
        "predicted_entities",
        "gold_entities",
    ),
    "sequence-classification": ("num-examples", "loss", "accuracy"),
}
# Every key a site's reply may hold (a test checks each message a site sends against it).
MESSAGE_KEYS = {
    "train": {ARRAYS: "tensors", METRICS: ("num-examples", "train-loss", "train-seconds"), SITE: ("name",)},
    "evaluate": {METRICS: tuple({k for keys in EVALUATION_KEYS.values() for k in keys}), SITE: ("name",)},
}
_TASK_KEYS = {f.name.replace("_", "-") for f in fields(FederatedTask)}
MetricValues = dict[str, int | float | list[int] | list[float]]  # what a Flower MetricRecord holds


def number(value: object) -> float:
    """A metric or config value that must be a number (Flower's records are typed as unions)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected a number, got {value!r}")
    return value


@dataclass
class Site:
    """A site's own records: `train` for local training, `evaluation` for federated evaluation
    (may be empty). Examples in the training loop's format ({"tokens", "tags"} / {"text", "label"})."""

    name: str
    train: list[dict[str, Any]]
    evaluation: list[dict[str, Any]]


SiteLoader = Callable[[Mapping[str, Any]], Site]  # the node's config (--node-config) -> its records


def task_from_message(config: Mapping[str, Any]) -> FederatedTask:
    """The FederatedTask the server sent (the config's other keys are the round's own)."""
    return FederatedTask.from_config({k: v for k, v in config.items() if k in _TASK_KEYS})


def to_record(tensors: dict[str, torch.Tensor]) -> ArrayRecord:
    return ArrayRecord({k: v.detach().cpu().contiguous() for k, v in tensors.items()})


def from_record(record: ArrayRecord) -> dict[str, torch.Tensor]:
    return dict(record.to_torch_state_dict())


def local_train(site: Site, arrays: ArrayRecord, config: Mapping[str, Any]) -> RecordDict:
    """One round at a site: the received state, `local_epochs` over the site's records (FedProx's
    proximal term when the config has "proximal-mu" > 0), the trained tensors back."""
    if not site.train:
        raise ValueError(f"site {site.name!r} has no training records")
    task = task_from_message(config)
    model = task.build()
    load_adapter_state(model, from_record(arrays))
    round_number = int(config.get("server-round", 1))
    started = time.monotonic()
    stats = fine_tune(
        model,
        site.train,
        config=task.adapter_config(seed=task.seed + round_number),
        proximal_mu=float(config.get("proximal-mu", 0.0)),
    )
    metrics: MetricValues = {
        "num-examples": stats["examples"],
        "train-loss": stats["loss"],
        "train-seconds": time.monotonic() - started,
    }
    return RecordDict(
        {
            ARRAYS: to_record(adapter_state(model)),
            METRICS: MetricRecord(metrics),
            SITE: ConfigRecord({"name": site.name}),
        }
    )


def local_evaluate(site: Site, arrays: ArrayRecord, config: Mapping[str, Any]) -> RecordDict:
    """The received state scored on the site's evaluation records, as counts and sums that add
    up across sites (every key present, zeros when the site keeps no evaluation records)."""
    task = task_from_message(config)
    keys = EVALUATION_KEYS[task.task]
    metrics: MetricValues = dict.fromkeys(keys, 0)
    metrics["num-examples"] = len(site.evaluation)
    if site.evaluation:
        model = task.build()
        load_adapter_state(model, from_record(arrays))
        scores = evaluate_examples(model, site.evaluation, batch_size=task.batch_size)
        metrics.update({k: scores[k] for k in keys if k in scores})
    return RecordDict({METRICS: MetricRecord(metrics), SITE: ConfigRecord({"name": site.name})})


def site_app(load_site: SiteLoader, *, mods: Sequence[Mod] = ()) -> ClientApp:
    """A ClientApp over the records `load_site(node_config)` reads at the site, for plain and
    secure rounds (secure.py); `mods`: more Flower client mods around every message (e.g. an
    audit of what leaves the site)."""
    from .secure import is_secure_round, secure_aggregation_mod, secure_local_train

    app = ClientApp(mods=[*mods, secure_aggregation_mod])

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        if is_secure_round(msg):
            return secure_local_train(load_site(context.node_config), msg)
        arrays, config = msg.content.array_records[ARRAYS], msg.content.config_records[CONFIG]
        content = local_train(load_site(context.node_config), arrays, config)
        return Message(content, reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        arrays, config = msg.content.array_records[ARRAYS], msg.content.config_records[CONFIG]
        content = local_evaluate(load_site(context.node_config), arrays, config)
        return Message(content, reply_to=msg)

    return app
