"""Training the fraud model: AdamW on binary cross-entropy, frauds weighted up (about 0.8% of
transactions are fraud), one epoch = one shuffled pass over the training rows.

    examples = Examples.of(frame, rows, series)                 # what the model reads, as tensors
    model, history = fit(FraudModelConfig.preset("small"), train, epochs=4, evaluate=valid)
    scores = predict(model, examples)                           # probabilities [N]

Not the text adapter loop of `core_model.train` (which reads text); a plain loop over tensors
with a progress bar.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .features import FEATURES
from .model import FraudModel, FraudModelConfig, Scaler
from .sequences import CardSeries


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


@dataclass(frozen=True)
class TrainingConfig:
    epochs: int = 4
    batch_size: int = 512
    lr: float = 1e-3
    weight_decay: float = 0.01
    fraud_weight: float = 10.0  # a fraud's loss counts this many genuine transactions
    seed: int = 0


def predict(model: FraudModel, examples: Examples, *, batch_size: int = 2048) -> np.ndarray:
    """Fraud probabilities [N]."""
    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(examples), batch_size):
            rows = torch.arange(start, min(start + batch_size, len(examples)))
            out.append(torch.sigmoid(model(*examples.batch(rows))))
    return torch.cat(out).numpy()


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
    optimizer = torch.optim.AdamW(model.parameters(), lr=training.lr, weight_decay=training.weight_decay)
    steps = training.epochs * -(-len(train) // training.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=training.lr, total_steps=steps)
    generator = torch.Generator().manual_seed(training.seed)
    history = []
    bar = tqdm(total=steps, desc="fraud model", unit="step", disable=not progress)
    for _ in range(training.epochs):
        model.train()
        for rows in torch.randperm(len(train), generator=generator).split(training.batch_size):
            logits_B = model(*train.batch(rows))
            labels_B = train.labels_N[rows]
            weights_B = 1.0 + (training.fraud_weight - 1.0) * labels_B
            loss = F.binary_cross_entropy_with_logits(logits_B, labels_B, weight=weights_B)
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
    return model, history
