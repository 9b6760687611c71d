"""Task heads that sit on the trunk's hidden states [B, T, D]: sequence and token classification.

    head = SequenceClassificationHead(hidden_size=64, num_labels=3, pooling="last")
    logits_BL = head(model.trunk(inputs_embeds=x_BTD, attention_mask=mask_BT), mask_BT)
    same = SequenceClassificationHead.from_config(head.config)      # what a trainer saves

A head knows nothing of the trunk, tokenizers or losses; it maps hidden states to logits.
Each keeps `config`, a plain dict of its constructor arguments, so it can be rebuilt.

Legend: B batch, T tokens, D hidden size, L labels.
"""

from __future__ import annotations

from typing import Any, Self

import torch
from torch import nn

from .crf import Transitions

POOLINGS = ("last", "mean", "first")


class Head(nn.Module):
    """Base: a head rebuilt from its `config` dict (then load its state dict)."""

    config: dict[str, Any]

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Self:
        return cls(**config)


class SequenceClassificationHead(Head):
    """Pools each row to one vector, then dropout and a Linear: [B, T, D] -> logits [B, L].

    "last" and "first" take the last / first real token under `attention_mask_BT`, so left- and
    right-padded batches give the same logits; "mean" averages the real tokens.
    """

    def __init__(self, *, hidden_size: int, num_labels: int, pooling: str = "last", dropout: float = 0.0):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; expected one of {POOLINGS}")
        self.config = dict(hidden_size=hidden_size, num_labels=num_labels, pooling=pooling, dropout=dropout)
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, num_labels)

    def forward(
        self, hidden_BTD: torch.Tensor, attention_mask_BT: torch.Tensor | None = None
    ) -> torch.Tensor:
        pooled_BD = pool(hidden_BTD, attention_mask_BT, pooling=self.pooling)
        return self.classifier(self.dropout(pooled_BD))


class TokenClassificationHead(Head):
    """Dropout and a Linear on every position: [B, T, D] -> logits [B, T, L].

    `bidirectional`: the trunk under this head runs without its causal mask, so every token's
    state reads the whole sentence (the LoRA adapter trained with the head learns to use it).
    `characters` > 0: a `WordBytes` encoder of that width reads each word's UTF-8 bytes, and
    `trunk_input` adds its vector (projected to D) to the word's first token embedding, so the
    trunk reads each word's spelling in context. (Joined to the hidden state under the classifier
    instead, it helped less: NCBI-disease test F1 0.745 against 0.772 after 3 epochs, 0.719 without.)
    `crf`: the head also learns transition scores between consecutive tags (`transitions`; see
    core_model.crf), and its tagger trains and decodes each sentence's tags as a whole.
    """

    def __init__(
        self,
        *,
        hidden_size: int,
        num_labels: int,
        dropout: float = 0.0,
        bidirectional: bool = False,
        characters: int = 0,
        crf: bool = False,
    ):
        super().__init__()
        self.config = dict(
            hidden_size=hidden_size, num_labels=num_labels, dropout=dropout, bidirectional=bidirectional,
            characters=characters, crf=crf,
        )  # fmt: skip
        self.bidirectional = bidirectional
        self.dropout = nn.Dropout(dropout)
        self.spelling = WordBytes(characters) if characters else None
        self.to_trunk = nn.Linear(characters, hidden_size, bias=False) if characters else None
        self.classifier = nn.Linear(hidden_size, num_labels)
        self.crf = crf
        if crf:  # [previous, next], first tag, last tag; zeros: a plain tagger until trained
            self.pair_scores = nn.Parameter(torch.zeros(num_labels, num_labels))
            self.start_scores = nn.Parameter(torch.zeros(num_labels))
            self.end_scores = nn.Parameter(torch.zeros(num_labels))

    def transitions(self) -> Transitions:
        """The learned tag-transition scores (a `crf` head only)."""
        if not self.crf:
            raise ValueError("this token-classification head has no CRF (crf=False)")
        return Transitions(self.pair_scores, self.start_scores, self.end_scores)

    def trunk_input(self, embeds_BTD: torch.Tensor, word_bytes_BTC: torch.Tensor | None) -> torch.Tensor:
        """The token embeddings the trunk reads: with `characters`, each word's first token gets
        its spelling's vector added (`word_bytes_BTC`: collate's "word_bytes")."""
        if self.spelling is None or self.to_trunk is None:
            return embeds_BTD
        if word_bytes_BTC is None:
            raise ValueError("this head reads each word's characters; the batch has no word_bytes")
        return embeds_BTD + self.to_trunk(self.spelling(word_bytes_BTC)).to(embeds_BTD.dtype)

    def forward(self, hidden_BTD: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(hidden_BTD))


class WordBytes(nn.Module):
    """A word's UTF-8 bytes -> one vector (Ma and Hovy 2016's character CNN): byte embeddings, a
    width-3 convolution and ReLU, the maximum over the bytes. [B, T, C] byte ids (byte + 1; 0 is
    padding, and a position with no word is all 0) -> [B, T, dim], zeros where there is no word.
    Subword vocabularies trained on other text cut rare words into pieces ("hypoparathyroidism":
    10 tokens); the spelling keeps what the pieces lose (prefixes, suffixes such as -itis, -oma)."""

    def __init__(self, dim: int, *, byte_dim: int = 32, width: int = 3):
        super().__init__()
        self.dim = dim
        self.embed = nn.Embedding(257, byte_dim, padding_idx=0)
        self.conv = nn.Conv1d(byte_dim, dim, width, padding=width // 2)

    def forward(self, word_bytes_BTC: torch.Tensor) -> torch.Tensor:
        B, T, C = word_bytes_BTC.shape
        flat_NC = word_bytes_BTC.reshape(B * T, C)
        words = flat_NC[:, 0].nonzero().squeeze(1)  # only positions that start a word are run
        out = self.conv.weight.new_zeros(B * T, self.dim)
        if len(words):
            bytes_WC = flat_NC[words]
            features_WDC = self.conv(self.embed(bytes_WC).transpose(1, 2)).relu()
            features_WDC = features_WDC.masked_fill((bytes_WC == 0)[:, None, :], 0.0)
            out = out.index_copy(0, words, features_WDC.amax(-1))
        return out.view(B, T, self.dim)


def pool(hidden_BTD: torch.Tensor, attention_mask_BT: torch.Tensor | None, *, pooling: str) -> torch.Tensor:
    """One vector per row [B, D]; padding positions (mask 0) never contribute."""
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; expected one of {POOLINGS}")
    B, T, _ = hidden_BTD.shape
    if attention_mask_BT is None:
        attention_mask_BT = torch.ones(B, T, dtype=torch.bool, device=hidden_BTD.device)
    if attention_mask_BT.shape != (B, T):
        raise ValueError(f"attention_mask must be [B, T] = {(B, T)}; got {tuple(attention_mask_BT.shape)}")
    real_BT = attention_mask_BT.bool()
    if not bool(real_BT.any(dim=1).all()):
        raise ValueError("a row of attention_mask has no real tokens; cannot pool it")
    if pooling == "mean":
        weights_BT1 = real_BT[..., None].to(hidden_BTD.dtype)
        return (hidden_BTD * weights_BT1).sum(1) / weights_BT1.sum(1)
    positions_BT = torch.arange(T, device=hidden_BTD.device).expand(B, T)
    if pooling == "last":
        index_B = positions_BT.masked_fill(~real_BT, -1).amax(dim=1)
    else:
        index_B = positions_BT.masked_fill(~real_BT, T).amin(dim=1)
    return hidden_BTD[torch.arange(B, device=hidden_BTD.device), index_B]
