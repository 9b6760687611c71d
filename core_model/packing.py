"""A padded batch of short sequences run through the trunk as a few dense rows, then laid back out.

A batch of texts padded to its longest spends the attention projections' work on padding: eight
customer messages of 10 to 35 tokens are half padding. Packed, the sequences lie end to end in
rows, each token attending only within its own sequence (a block-diagonal mask) at its own
positions, so every hidden state is the one the padded batch would give, up to float rounding.

    packing = Packing.of(attention_mask_BT)
    if packing.pays:
        hidden_RWD = trunk(
            inputs_embeds=embed(packing.pack(input_ids_BT)),
            attention_mask=packing.mask(causal=True),
            position_ids=packing.position_ids_RW,
        )
        hidden_BTD = packing.unpack(hidden_RWD)     # padding positions come back as zeros

Legend: B batch, T padded length, R packed rows, W packed width, D hidden size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

PACK_WIDTH = 256  # a packed row's tokens: attention over a row costs W^2, so rows stay short


@dataclass(frozen=True)
class Packing:
    """Where each real token of a [B, T] batch lies in the packed [R, W] rows."""

    padded_shape: tuple[int, int]  # (B, T)
    source_RW: torch.Tensor  # flat index into B*T of each packed slot; -1: a slot left empty
    segment_RW: torch.Tensor  # the batch row each packed slot came from; -1: empty
    position_ids_RW: torch.Tensor  # each token's position within its own sequence

    @classmethod
    def of(cls, attention_mask_BT: torch.Tensor, *, width: int = PACK_WIDTH) -> Packing:
        """First-fit-decreasing packing of the rows' real tokens (mask 1, anywhere in the row) into
        rows of at most max(`width`, the longest sequence) tokens."""
        if attention_mask_BT.dim() != 2:
            raise ValueError(f"a padding mask is [B, T]; got shape {tuple(attention_mask_BT.shape)}")
        B, T = attention_mask_BT.shape
        real_BT = attention_mask_BT.bool().cpu()
        lengths = real_BT.sum(1).tolist()
        capacity = max([width, *lengths])
        rows: list[list[int]] = []  # the batch rows packed into each row, in packing order
        fill: list[int] = []
        for b in sorted(range(B), key=lambda b: -lengths[b]):
            if lengths[b] == 0:
                continue
            r = next((r for r, used in enumerate(fill) if used + lengths[b] <= capacity), len(rows))
            if r == len(rows):
                rows.append([])
                fill.append(0)
            rows[r].append(b)
            fill[r] += lengths[b]
        W = max(fill, default=0)
        source_RW = torch.full((len(rows), W), -1, dtype=torch.long)
        segment_RW = torch.full((len(rows), W), -1, dtype=torch.long)
        position_ids_RW = torch.zeros(len(rows), W, dtype=torch.long)
        for r, members in enumerate(rows):
            start = 0
            for b in members:
                n = lengths[b]
                source_RW[r, start : start + n] = b * T + real_BT[b].nonzero().squeeze(1)
                segment_RW[r, start : start + n] = b
                position_ids_RW[r, start : start + n] = torch.arange(n)
                start += n
        device = attention_mask_BT.device
        return cls((B, T), source_RW.to(device), segment_RW.to(device), position_ids_RW.to(device))

    @property
    def pays(self) -> bool:
        """True when the packed rows hold fewer positions than the padded batch."""
        return self.source_RW.numel() < self.padded_shape[0] * self.padded_shape[1]

    def pack(self, x_BT: torch.Tensor) -> torch.Tensor:
        """[B, T, ...] -> [R, W, ...]; empty slots get row 0's first value (masked out anyway)."""
        flat = x_BT.flatten(0, 1)
        return flat[self.source_RW.clamp(min=0)]

    def mask(self, *, causal: bool) -> torch.Tensor:
        """[R, 1, W, W] boolean (True: may attend): within a sequence, earlier or same positions
        when `causal`. Every slot sees itself, so an empty slot's row stays finite."""
        same_RWW = (self.segment_RW[:, :, None] == self.segment_RW[:, None, :]) & (
            self.segment_RW[:, :, None] >= 0
        )
        if causal:
            same_RWW &= self.position_ids_RW[:, :, None] >= self.position_ids_RW[:, None, :]
        W = self.segment_RW.shape[1]
        same_RWW |= torch.eye(W, dtype=torch.bool, device=same_RWW.device)
        return same_RWW[:, None]

    def unpack(self, x_RW: torch.Tensor) -> torch.Tensor:
        """[R, W, ...] -> [B, T, ...]; positions that were padding are zeros."""
        B, T = self.padded_shape
        filled = self.source_RW >= 0
        out = x_RW.new_zeros(B * T, *x_RW.shape[2:])
        out[self.source_RW[filled]] = x_RW[filled]
        return out.view(B, T, *x_RW.shape[2:])
