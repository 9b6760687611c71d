"""The fraud model: a transaction read with its card's history through the suite's MoE trunk.

    model = FraudModel(FraudModelConfig.preset("small"), scaler=Scaler.fit(X_train))
    logits_B = model(events_BTF, gaps_BT, mask_BT, aggregates_BA)
    save_fraud_model(model, "runs/finance/model", metrics={"ap": 0.65})
    model, card = load_fraud_model("runs/finance/model")          # card: config.json as a dict

The card's last T transactions enter through `SeriesEmbedder` (values and time gaps); the
transaction's aggregate features (the handbook's customer windows and terminal risk, standardised)
enter as one more token after them. The trunk runs causally, so that last token attends over
the card's history (temporal attention, as the handbook's LSTM-with-attention does with the
current transaction as the query), and `SequenceClassificationHead` reads it: one fraud logit.

A fresh trunk (no text pre-training helps here); training lives in `training.py`.
Legend: B batch, T events, F event features, A aggregate features, D hidden size.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from core_model.config import MoEConfig
from core_model.embedders import SeriesEmbedder
from core_model.heads import SequenceClassificationHead
from core_model.model import Trunk

from .features import DELAY_DAYS, FEATURES
from .sequences import EVENT_FEATURES


@dataclass(frozen=True)
class FraudModelConfig:
    hidden_size: int = 64
    layers: int = 2
    heads: int = 4
    experts: int = 8  # routed experts of each MoE layer (the first layer is dense)
    experts_per_event: int = 2
    history: int = 16  # T: the card's last transactions, this one included
    dropout: float = 0.1

    @classmethod
    def preset(cls, name: str) -> FraudModelConfig:
        if name not in PRESETS:
            raise ValueError(f"unknown fraud model preset {name!r}; presets: {', '.join(PRESETS)}")
        return PRESETS[name]

    def trunk_config(self) -> MoEConfig:
        return MoEConfig.embedding_trunk(
            hidden_size=self.hidden_size, layers=self.layers, heads=self.heads, experts=self.experts,
            experts_per_token=self.experts_per_event, positions=self.history + 1,
        )  # fmt: skip


PRESETS = {
    "tiny": FraudModelConfig(hidden_size=32, layers=2, heads=2, experts=4, history=4),  # the fast tests
    "small": FraudModelConfig(),
}


class Scaler(nn.Module):
    """Standardisation of the aggregate features, fitted on training rows and saved with the model."""

    mean_A: torch.Tensor
    scale_A: torch.Tensor

    def __init__(self, mean_A: np.ndarray, scale_A: np.ndarray):
        super().__init__()
        self.register_buffer("mean_A", torch.as_tensor(mean_A, dtype=torch.float32))
        self.register_buffer("scale_A", torch.as_tensor(scale_A, dtype=torch.float32))

    @classmethod
    def fit(cls, X_NA: np.ndarray) -> Scaler:
        return cls(X_NA.mean(axis=0), np.where(X_NA.std(axis=0) > 0, X_NA.std(axis=0), 1.0))

    def forward(self, x_BA: torch.Tensor) -> torch.Tensor:
        return (x_BA - self.mean_A) / self.scale_A


class FraudModel(nn.Module):
    def __init__(self, config: FraudModelConfig, *, scaler: Scaler):
        super().__init__()
        self.config = config
        self.scaler = scaler
        D = config.hidden_size
        self.embedder = SeriesEmbedder(hidden_size=D, num_features=len(EVENT_FEATURES))
        self.aggregate = nn.Sequential(nn.Linear(len(FEATURES), D), nn.LayerNorm(D))
        self.trunk = Trunk(config.trunk_config())  # its 1-token embedding table is never read
        self.trunk.init_weights()
        self.head = SequenceClassificationHead(
            hidden_size=D, num_labels=1, pooling="last", dropout=config.dropout
        )

    def to_config(self) -> dict[str, Any]:
        return asdict(self.config)

    def forward(
        self,
        events_BTF: torch.Tensor,
        gaps_BT: torch.Tensor,
        mask_BT: torch.Tensor,
        aggregates_BA: torch.Tensor,
    ) -> torch.Tensor:
        """Fraud logits [B]."""
        x_BTD = self.embedder(events_BTF, gaps_BT)
        context_B1D = self.aggregate(self.scaler(aggregates_BA))[:, None, :]
        x_BSD = torch.cat([x_BTD, context_B1D], dim=1)  # S = T + 1
        mask_BS = torch.cat([mask_BT, torch.ones_like(mask_BT[:, :1])], dim=1)
        hidden_BSD = self.trunk(x_BSD, attention_mask=mask_BS)
        return self.head(hidden_BSD, mask_BS)[:, 0]

    def variants(
        self,
        events_BTF: torch.Tensor,
        gaps_BT: torch.Tensor,
        mask_BT: torch.Tensor,
        aggregates_BPA: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fraud logits [B, P] of P variants of each transaction's aggregate features read with
        the same card history, in one pass, and the attention [B, T] of variant 0 over the history.

        The sequence is the T history tokens, then P aggregate tokens that each see the history
        and themselves only, all at the position `forward` gives its one aggregate token: variant
        p's logit is `forward`'s with aggregates_BPA[:, p] (a test checks it), for P more tokens
        instead of P more sequences. The attention is the last layer's, averaged over heads: how
        much the transaction's token read each earlier event (0 on padding).
        """
        B, T, _ = events_BTF.shape
        P = aggregates_BPA.shape[1]
        x_BSD = torch.cat(
            [self.embedder(events_BTF, gaps_BT), self.aggregate(self.scaler(aggregates_BPA))], dim=1
        )
        history_BT = mask_BT.bool()
        allowed_SS = torch.zeros(T + P, T + P, dtype=torch.bool, device=x_BSD.device)
        allowed_SS[:T, :T] = torch.ones(T, T, dtype=torch.bool).tril()  # the history, causally
        allowed_SS[T:, :T] = True  # every variant reads the whole history ...
        allowed_SS[T:, T:] = torch.eye(P, dtype=torch.bool)  # ... and itself, not the other variants
        real_BS = torch.cat([history_BT, torch.ones_like(history_BT[:, :1]).expand(B, P)], dim=1)
        mask_B1SS = (allowed_SS & real_BS[:, None, :])[:, None] | torch.eye(T + P, dtype=torch.bool)
        positions_BT = (history_BT.long().cumsum(-1) - 1).clamp(min=0)
        positions_BS = torch.cat([positions_BT, history_BT.sum(-1, keepdim=True).expand(B, P)], dim=1)
        captured: list[tuple] = []
        last_attention = self.trunk.layers[-1].self_attn
        hook = last_attention.register_forward_pre_hook(lambda _, args: captured.append(args))
        try:
            hidden_BSD = self.trunk(x_BSD, attention_mask=mask_B1SS, position_ids=positions_BS)
        finally:
            hook.remove()
        logits_BP = self.head.classifier(hidden_BSD[:, T:])[..., 0]  # each variant's own token
        # Variant 0 reads the history and itself: the first T + 1 positions are all it needs.
        x_BSD, cos, sin, mask_B1SS = captured[0]
        first = slice(None, T + 1)
        weights_B1S = last_attention.weights(
            x_BSD[:, first], cos[:, first], sin[:, first], mask_B1SS[..., first, first]
        )
        weights_BT = weights_B1S[:, :, T, :T].mean(dim=1)
        return logits_BP, weights_BT


WEIGHTS, CARD = "model.safetensors", "config.json"


def save_fraud_model(model: FraudModel, directory: str | Path, *, metrics: dict[str, Any]) -> Path:
    """`directory`/model.safetensors (weights and the feature scaler) and config.json (the model's
    shape, the feature lists it reads, the label delay, and `metrics`)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(directory / WEIGHTS))
    card = {
        "model": model.to_config(), "features": FEATURES, "event_features": list(EVENT_FEATURES),
        "delay_days": DELAY_DAYS, "metrics": metrics,
    }  # fmt: skip
    (directory / CARD).write_text(json.dumps(card, indent=2) + "\n")
    return directory


def load_fraud_model(directory: str | Path) -> tuple[FraudModel, dict[str, Any]]:
    """The model saved in `directory` (eval mode) and its card, or a ValueError naming what does
    not match this code's features."""
    directory = Path(directory)
    if not (directory / WEIGHTS).is_file() or not (directory / CARD).is_file():
        raise ValueError(f"{directory}: not a fraud model (needs {WEIGHTS} and {CARD})")
    card = json.loads((directory / CARD).read_text())
    if card.get("features") != FEATURES or card.get("event_features") != list(EVENT_FEATURES):
        raise ValueError(f"{directory / CARD}: the model reads other features than this code computes")
    known = {f.name for f in fields(FraudModelConfig)}
    config = FraudModelConfig(**{k: v for k, v in card["model"].items() if k in known})
    tensors = load_file(str(directory / WEIGHTS))
    scaler = Scaler(tensors["scaler.mean_A"].numpy(), tensors["scaler.scale_A"].numpy())
    model = FraudModel(config, scaler=scaler)
    model.load_state_dict(tensors)
    return model.eval(), card
