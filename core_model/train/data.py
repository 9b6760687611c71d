"""Packed token sequences for pre-training: documents joined by eos, cut into equal windows.

    tokens = pack_documents(texts, tokenizer)              # 1-D int32, eos after each document
    data = PackedSequences(tokens, seq_len=256)
    batch_BT1 = data.batch(step=10, batch_size=16, seed=0)  # [16, 257]: inputs and shifted targets

The order is a pure function of (step, seed): sample p = step * batch_size + j is window
perm_e[p mod n] of epoch e = p // n, with perm_e a seeded permutation. A resumed run therefore
sees exactly the batches an uninterrupted one would, with no sampler state to save, and
processes that split a global batch (`rows`) split the same one.

Legend: B sequences, T tokens per sequence (seq_len), N tokens in the corpus.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from ..tokenizer import Tokenizer


def pack_documents(texts: Iterable[str], tokenizer: Tokenizer, *, batch_size: int = 256) -> torch.Tensor:
    """Every text's tokens followed by eos, concatenated: a 1-D int32 tensor [N]."""
    if tokenizer.eos_id is None:
        raise ValueError("the tokenizer has no eos token to separate documents")
    eos = tokenizer.eos_id
    pieces: list[torch.Tensor] = []
    chunk: list[str] = []

    def flush() -> None:
        for encoding in tokenizer.backend.encode_batch(chunk, add_special_tokens=False):
            pieces.append(torch.tensor([*encoding.ids, eos], dtype=torch.int32))
        chunk.clear()

    for text in texts:
        chunk.append(text)
        if len(chunk) == batch_size:
            flush()
    if chunk:
        flush()
    if not pieces:
        raise ValueError("no documents to pack")
    return torch.cat(pieces)


class PackedSequences:
    """Non-overlapping windows of seq_len + 1 tokens (inputs and next-token targets)."""

    def __init__(self, tokens_N: torch.Tensor, *, seq_len: int) -> None:
        if tokens_N.dim() != 1:
            raise ValueError(f"tokens must be 1-D; got shape {tuple(tokens_N.shape)}")
        self.tokens_N = tokens_N
        self.seq_len = seq_len
        self.num_sequences = (len(tokens_N) - 1) // seq_len
        if self.num_sequences < 1:
            raise ValueError(f"{len(tokens_N)} tokens make no sequence of {seq_len + 1} tokens")
        self._permutations: dict[tuple[int, int], torch.Tensor] = {}

    def __len__(self) -> int:
        return self.num_sequences

    @property
    def num_tokens(self) -> int:
        return self.num_sequences * self.seq_len

    def sequences(self, indices: torch.Tensor | list[int]) -> torch.Tensor:
        """Windows [B, T + 1] as int64, ready for the embedding."""
        starts = torch.as_tensor(indices, dtype=torch.long) * self.seq_len
        offsets = torch.arange(self.seq_len + 1)
        return self.tokens_N[starts[:, None] + offsets].long()

    def batch_indices(self, *, step: int, batch_size: int, seed: int) -> torch.Tensor:
        """The windows of global batch `step` (epochs reshuffled with seed + epoch)."""
        positions = torch.arange(step * batch_size, (step + 1) * batch_size)
        epochs, within = positions // self.num_sequences, positions % self.num_sequences
        return torch.stack(
            [self._permutation(int(e), seed)[int(i)] for e, i in zip(epochs, within, strict=True)]
        )

    def batch(self, *, step: int, batch_size: int, seed: int, rows: slice = slice(None)) -> torch.Tensor:
        """Global batch `step`, or the `rows` of it one process trains on: [B, T + 1]."""
        return self.sequences(self.batch_indices(step=step, batch_size=batch_size, seed=seed)[rows])

    def epoch_of(self, *, step: int, batch_size: int) -> float:
        return step * batch_size / self.num_sequences

    def _permutation(self, epoch: int, seed: int) -> torch.Tensor:
        key = (epoch, seed)
        if key not in self._permutations:
            generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
            self._permutations[key] = torch.randperm(self.num_sequences, generator=generator)
            while len(self._permutations) > 2:  # a batch spans at most two epochs
                self._permutations.pop(next(iter(self._permutations)))
        return self._permutations[key]
