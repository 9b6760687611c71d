"""Training the fraud model: AdamW on binary cross-entropy, frauds weighted up (about 0.8% of
transactions are fraud), one epoch = one shuffled pass over the training rows. One loop serves a
fresh model (`fit`) and a trained one continued on newly labelled transactions (`fine_tune`,
which keeps the model's Scaler: the standardisation it was trained with). `train_on_protocol` is
the handbook protocol run that `verticals finance train` and the benchmark share.

    examples = Examples.of(frame, series, history)              # what the model reads, as tensors
    model, history = fit(FraudModelConfig.preset("small"), train, evaluate=valid_ap)
    tuned, _ = fine_tune(model, new_week)                       # a copy; 2 epochs at lr 3e-4
    scores = predict(model, examples)                           # probabilities [N]
    data = protocol_data(test_start="2018-08-08", train_days=7, history=16)
    model, report = train_on_protocol(data, config=FraudModelConfig.preset("tiny"))

Not the text adapter loop of `core_model.train` (which reads text); a plain loop over tensors
with a progress bar. Legend: N examples, B batch, T events, F event features, A aggregates.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score
from tqdm import tqdm

from core_model.datasets import dataset_dir

from .features import DELAY_DAYS, FEATURES, WINDOWS_DAYS, with_features
from .metrics import fraud_metrics
from .model import FraudModel, FraudModelConfig, Scaler
from .protocol import DelayedSplit
from .sequences import CardSeries, card_series
from .transactions import DATASET, FILE, read_transactions


@dataclass(frozen=True)
class Examples:
    """N transactions as the model reads them, and their labels."""

    events_NTF: torch.Tensor
    gaps_NT: torch.Tensor
    mask_NT: torch.Tensor
    aggregates_NA: torch.Tensor
    labels_N: torch.Tensor

    @classmethod
    def of(cls, frame: pd.DataFrame, series: CardSeries, history: int) -> Examples:
        """`frame`'s rows and their card series (the last `history` events of each)."""
        return cls(
            torch.from_numpy(series.events_NTF[:, -history:]).contiguous(),
            torch.from_numpy(series.gaps_NT[:, -history:]).contiguous(),
            torch.from_numpy(series.mask_NT[:, -history:]).contiguous(),
            torch.from_numpy(frame[FEATURES].to_numpy(np.float32)),
            torch.from_numpy(frame["fraud"].to_numpy(np.float32)),
        )

    def __len__(self) -> int:
        return len(self.labels_N)

    def batch(self, rows: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.events_NTF[rows], self.gaps_NT[rows], self.mask_NT[rows], self.aggregates_NA[rows]

    def take(self, rows: np.ndarray | torch.Tensor) -> Examples:
        """The examples at positions `rows`."""
        rows = torch.as_tensor(rows, dtype=torch.long)
        return Examples(*self.batch(rows), self.labels_N[rows])


@dataclass(frozen=True)
class TrainingConfig:
    epochs: int = 4
    batch_size: int = 512
    lr: float = 1e-3  # the one-cycle schedule's peak
    weight_decay: float = 0.01
    fraud_weight: float = 10.0  # a fraud's loss counts this many genuine transactions
    seed: int = 0


# continuing a trained model on a newly labelled week: a few epochs at a tenth of fit's learning rate
FINE_TUNING = TrainingConfig(epochs=2, lr=3e-4)


def predict(model: FraudModel, examples: Examples, *, batch_size: int = 2048) -> np.ndarray:
    """Fraud probabilities [N]."""
    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(examples), batch_size):
            rows = torch.arange(start, min(start + batch_size, len(examples)))
            out.append(torch.sigmoid(model(*examples.batch(rows))))
    return torch.cat(out).numpy()


def weighted_loss(logits_B: torch.Tensor, labels_B: torch.Tensor, *, fraud_weight: float) -> torch.Tensor:
    """Binary cross-entropy with each fraud counting `fraud_weight` genuine transactions."""
    weights_B = 1.0 + (fraud_weight - 1.0) * labels_B
    return F.binary_cross_entropy_with_logits(logits_B, labels_B, weight=weights_B)


def evaluation_loss(
    model: FraudModel, examples: Examples, *, fraud_weight: float = 10.0, batch_size: int = 2048
) -> float:
    """The training loss over `examples` in eval mode (no dropout): what fitting lowers."""
    model.eval()
    total = 0.0
    with torch.inference_mode():
        for start in range(0, len(examples), batch_size):
            rows = torch.arange(start, min(start + batch_size, len(examples)))
            loss = weighted_loss(
                model(*examples.batch(rows)), examples.labels_N[rows], fraud_weight=fraud_weight
            )
            total += loss.item() * len(rows)
    return total / len(examples)


def fit(
    config: FraudModelConfig,
    train: Examples,
    *,
    training: TrainingConfig = TrainingConfig(),
    evaluate: Callable[[FraudModel], float] | None = None,
    progress: bool = True,
) -> tuple[FraudModel, list[float]]:
    """A model trained `training.epochs` epochs on `train`, and `evaluate(model)` after each epoch
    (empty without `evaluate`). The model returned is the last epoch's."""
    torch.manual_seed(training.seed)
    model = FraudModel(config, scaler=Scaler.fit(train.aggregates_NA.numpy()))
    history = _train(
        model, train, training=training, evaluate=evaluate, progress=progress, desc="fraud model"
    )
    return model, history


def fine_tune(
    model: FraudModel,
    train: Examples,
    *,
    training: TrainingConfig = FINE_TUNING,
    evaluate: Callable[[FraudModel], float] | None = None,
    progress: bool = True,
) -> tuple[FraudModel, list[float]]:
    """A copy of `model` trained `training.epochs` more epochs on `train` (its Scaler kept, so
    features are standardised as in its first training), and `evaluate` after each epoch. `model`
    itself is left as it was."""
    torch.manual_seed(training.seed)
    tuned = copy.deepcopy(model)
    history = _train(
        tuned, train, training=training, evaluate=evaluate, progress=progress, desc="fine-tuning"
    )
    return tuned, history


def _train(
    model: FraudModel,
    train: Examples,
    *,
    training: TrainingConfig,
    evaluate: Callable[[FraudModel], float] | None,
    progress: bool,
    desc: str,
) -> list[float]:
    """The loop `fit` and `fine_tune` share: trains `model` in place (one-cycle AdamW, gradients
    clipped at norm 1) and returns `evaluate(model)` after each epoch."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=training.lr, weight_decay=training.weight_decay)
    steps = training.epochs * -(-len(train) // training.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=training.lr, total_steps=steps)
    generator = torch.Generator().manual_seed(training.seed)
    history = []
    bar = tqdm(total=steps, desc=desc, unit="step", disable=not progress)
    for _ in range(training.epochs):
        model.train()
        for rows in torch.randperm(len(train), generator=generator).split(training.batch_size):
            loss = weighted_loss(
                model(*train.batch(rows)), train.labels_N[rows], fraud_weight=training.fraud_weight
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.4f}")
        if evaluate is not None:
            history.append(evaluate(model))
    bar.close()
    return history


@dataclass(frozen=True)
class ProtocolData:
    """The handbook protocol's blocks read from the data set: `split` tests the model, and
    `validation`, the same protocol delay + test days earlier, chooses its epochs."""

    split: DelayedSplit
    validation: DelayedSplit
    frame: pd.DataFrame  # every transaction read, in time order, with FEATURES
    series: CardSeries  # the card series of every row of `frame`
    frames: dict[str, tuple[pd.DataFrame, pd.DataFrame]]  # "validation", "test" -> (train, test) rows
    examples: dict[str, tuple[Examples, Examples]]  # the same rows as the model reads them

    def examples_of(self, rows: pd.DataFrame) -> Examples:
        """`rows` (of `frame`) as the model reads them."""
        return _examples_of(self.frame, self.series, rows)


def _examples_of(frame: pd.DataFrame, series: CardSeries, rows: pd.DataFrame) -> Examples:
    positions = frame.index.get_indexer(rows.index)
    return Examples.of(rows, series.take(positions), series.events_NTF.shape[1])


def protocol_data(
    *, test_start: str, train_days: int = 7, history: int = 16, stop_day: int | None = None
) -> ProtocolData:
    """The blocks of the protocol whose test week starts on `test_start` (YYYY-MM-DD), after a
    `train_days` training block and the label delay. The transactions are read from 37 days
    before the validation block (the widest feature window) to day `stop_day` (exclusive; default
    the end of the test block), and every one gets its features and card series."""
    split = DelayedSplit.starting(test_start, train_days=train_days)
    split = split.shifted(-(train_days + split.delay_days))  # the test block starts at test_start
    validation = split.shifted(-(split.delay_days + split.test_days))
    history_days = max(WINDOWS_DAYS) + DELAY_DAYS  # the widest feature window reaches this far back
    first = max(0, validation.train_start - history_days)
    frame = read_transactions(dataset_dir(DATASET) / FILE, days=(first, stop_day or split.test_stop))
    frame = with_features(frame)
    series = card_series(frame, length=history)
    frames = {"validation": validation.apply(frame), "test": split.apply(frame)}
    examples = {name: (_examples_of(frame, series, train), _examples_of(frame, series, test))
                for name, (train, test) in frames.items()}  # fmt: skip
    return ProtocolData(split, validation, frame, series, frames, examples)


def train_on_protocol(
    data: ProtocolData,
    *,
    config: FraudModelConfig,
    training: TrainingConfig = TrainingConfig(epochs=6),
    progress: bool = True,
) -> tuple[FraudModel, dict[str, Any]]:
    """The model trained on the test protocol's training block for the number of epochs (at most
    `training.epochs`) with the best validation AP, and its report: the test metrics, the blocks,
    the epochs chosen."""
    (valid_train, valid_test), (train, test) = data.examples["validation"], data.examples["test"]

    def validation_ap(model: FraudModel) -> float:
        return float(average_precision_score(valid_test.labels_N.numpy(), predict(model, valid_test)))

    _, history = fit(config, valid_train, training=training, evaluate=validation_ap, progress=progress)
    epochs = int(np.argmax(history)) + 1
    model, _ = fit(config, train, training=replace(training, epochs=epochs), progress=progress)
    metrics = fraud_metrics(data.frames["test"][1], predict(model, test), k=100)
    return model, {
        **metrics, "blocks": data.split.dates(), "validation_blocks": data.validation.dates(),
        "chosen": {"epochs": epochs, "validation_ap_by_epoch": [round(v, 4) for v in history]},
    }  # fmt: skip
