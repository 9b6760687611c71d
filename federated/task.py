"""What every node of a federation must agree on: the base, the task, the label set and the
adapter's shape, and how a round trains. The server sends it in every message, so a site never
needs its own copy of the settings.

    task = FederatedTask(labels=("B-Disease", "I-Disease", "O"), rank=16)
    model = task.build()                 # a fresh base with LoRA (B = 0) and a seeded head
    config = task.to_config()            # plain values: a Flower ConfigRecord carries them
    FederatedTask.from_config(config) == task

`from_config` also reads a Flower run config (`flwr run --run-config 'rank=16 lr=0.003'`): keys
are the field names with '-' or '_', unknown keys are refused by name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from core_model.tokenizer import load_tokenizer
from core_model.train.adapters import AdapterTrainingConfig, TaskModel, build_task_model
from core_model.train.lora import DEFAULT_TARGETS

TASKS = ("token-classification", "sequence-classification")


@dataclass(frozen=True)
class FederatedTask:
    base: str = "embedded"  # a name or path load_model accepts, the same on every node
    task: str = "token-classification"
    labels: tuple[str, ...] = ()  # id order of the head's outputs
    rank: int = 32
    alpha: float = 64.0
    targets: tuple[str, ...] = DEFAULT_TARGETS
    bidirectional: bool = True  # token classification: the trunk reads the whole sentence
    characters: int = 64  # token classification: the head's spelling encoder width (0: none)
    crf: bool = True  # token classification: the head learns tag transitions (a linear-chain CRF)
    max_length: int = 192
    batch_size: int = 16
    lr: float = 2e-3  # a site's AdamW learning rate in round 1; later rounds decay it (cosine)
    local_epochs: int = 1  # passes over a site's records per round
    seed: int = 0

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"unknown federated task {self.task!r}; expected one of {TASKS}")
        if len(self.labels) < 2:
            raise ValueError(f"a federated {self.task} task needs at least 2 labels, got {list(self.labels)}")
        for name in ("rank", "max_length", "batch_size", "local_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"FederatedTask.{name} must be >= 1, got {getattr(self, name)}")

    def adapter_config(self, **overrides: Any) -> AdapterTrainingConfig:
        """The training loop's settings for one local training (epochs = local_epochs)."""
        settings = dict(
            rank=self.rank, alpha=self.alpha, targets=self.targets, bidirectional=self.bidirectional,
            characters=self.characters if self.task == "token-classification" else 0,
            crf=self.crf and self.task == "token-classification",
            max_length=self.max_length, batch_size=self.batch_size, lr=self.lr,
            epochs=self.local_epochs, seed=self.seed, patience=0, warmup_ratio=0.0,
        )  # fmt: skip
        return AdapterTrainingConfig(**{**settings, **overrides})

    def build(self) -> TaskModel:
        """A fresh TaskModel: the base loaded in float32, LoRA (B = 0) and a head seeded by
        `seed`, so every node builds the same starting point."""
        import torch

        torch.manual_seed(self.seed)
        return build_task_model(
            self.base, load_tokenizer(self.base), task=self.task, labels=list(self.labels),
            config=self.adapter_config(),
        )  # fmt: skip

    def to_config(self) -> dict[str, Any]:
        """Plain values (str, int, float, bool, lists of str) under '-' keys, as Flower's records
        and run configs hold them."""
        out: dict[str, Any] = {}
        for key, value in asdict(self).items():
            out[key.replace("_", "-")] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_config(cls, config: Mapping[str, Any], *, default: FederatedTask | None = None) -> FederatedTask:
        """A task from `config` (see the module docstring); missing fields keep `default`'s
        values (or the class defaults). Label and target lists may be comma-separated strings."""
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in config.items():
            name = key.replace("-", "_")
            if name not in known:
                raise ValueError(f"unknown federated task setting {key!r}; known: {sorted(known)}")
            if name in ("labels", "targets"):
                value = (
                    tuple(v.strip() for v in value.split(",") if v.strip())
                    if isinstance(value, str)
                    else tuple(value)
                )
            values[name] = value
        return replace(default, **values) if default is not None else cls(**values)
