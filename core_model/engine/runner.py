"""One forward step of the model over a mixed batch, reading and writing the latent cache.

The batch is a flat list of new tokens from several sequences: one token for each decoding
sequence, a chunk for each prefilling one. Projections, norms and the MoE run once over all of
them (that is what batching buys); attention runs per kind: decoding sequences together in the
absorbed form, prefilling ones each in the decompressed form. It returns the logits of each
sequence's last new token.

It is not the scheduler: which tokens, which slots, is decided in `scheduler.py`.

Legend: N new tokens in the step, B sequences, S context length, D hidden, W latent width.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch

from ..attention import MultiHeadLatentAttention
from ..model import DecoderLayer, MoEForCausalLM
from .cache import LatentCache
from .mla import absorbed_decode, decompressed_prefill


@dataclass
class SequenceSlice:
    """One sequence's part of a step: its new tokens and where its latents live."""

    first_position: int  # position of the first new token (= tokens already cached)
    num_new: int
    context_slots: list[int]  # cache slot of every position 0 .. first_position + num_new - 1


@dataclass
class StepBatch:
    token_ids_N: torch.Tensor
    positions_N: torch.Tensor
    slots_N: torch.Tensor
    sequences: list[SequenceSlice]


class ModelRunner:
    def __init__(self, model: MoEForCausalLM, cache: LatentCache, *, attention_chunk: int = 1024) -> None:
        self.model = model
        self.cache = cache
        self.attention_chunk = attention_chunk
        self.device = model.lm_head.weight.device

    def build_batch(self, sequences: list[tuple[list[int], SequenceSlice]]) -> StepBatch:
        """`sequences`: (the new token ids, their slice) per sequence."""
        tokens: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        for new_ids, part in sequences:
            tokens += new_ids
            positions += range(part.first_position, part.first_position + part.num_new)
            slots += part.context_slots[part.first_position :]
        as_long = lambda values: torch.tensor(values, dtype=torch.long, device=self.device)  # noqa: E731
        return StepBatch(as_long(tokens), as_long(positions), as_long(slots), [part for _, part in sequences])

    @torch.inference_mode()
    def forward(self, batch: StepBatch) -> torch.Tensor:
        """Logits [B, V] of each sequence's last new token, in the order of `batch.sequences`."""
        trunk = self.model.model
        x_ND = trunk.embed_tokens(batch.token_ids_N)
        cos, sin = trunk.rotary_emb(batch.positions_N[None])
        for index, layer in enumerate(cast(list[DecoderLayer], trunk.layers)):
            h_ND = layer.input_layernorm(x_ND)
            x_ND = x_ND + self._attention(index, layer, h_ND, cos, sin, batch)
            x_ND = x_ND + layer.mlp(layer.post_attention_layernorm(x_ND)[None])[0]
        ends = torch.tensor([0] + [s.num_new for s in batch.sequences], device=self.device).cumsum(0)[1:] - 1
        return self.model.lm_head(trunk.norm(x_ND[ends]))

    def _attention(
        self,
        index: int,
        layer: DecoderLayer,
        h_ND: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        batch: StepBatch,
    ) -> torch.Tensor:
        attn: MultiHeadLatentAttention = layer.self_attn
        q_nope, q_rope = (q[0] for q in attn.queries(h_ND[None], cos, sin))  # [N, H, *]
        c_kv, k_rope = attn.latent(h_ND[None], cos, sin)
        self.cache.write(index, batch.slots_N, torch.cat((c_kv[0], k_rope[0]), dim=-1))
        out_NHV = q_nope.new_empty(h_ND.shape[0], attn.num_heads, attn.config.v_head_dim)
        starts = [0]
        for part in batch.sequences:
            starts.append(starts[-1] + part.num_new)
        decoding = [i for i, part in enumerate(batch.sequences) if part.num_new == 1]
        if decoding:
            rows = torch.tensor([starts[i] for i in decoding], device=self.device)
            latent_BSW, visible_BS = self._gather_contexts(index, [batch.sequences[i] for i in decoding])
            out_NHV[rows] = absorbed_decode(attn, q_nope[rows], q_rope[rows], latent_BSW, visible_BS)
        for i, part in enumerate(batch.sequences):
            if part.num_new == 1:
                continue
            rows_slice = slice(starts[i], starts[i + 1])
            slots = torch.tensor(part.context_slots, device=self.device)
            out_NHV[rows_slice] = decompressed_prefill(
                attn,
                q_nope[rows_slice],
                q_rope[rows_slice],
                self.cache.read(index, slots),
                first_position=part.first_position,
                chunk_size=self.attention_chunk,
            )
        return attn.o_proj(out_NHV.flatten(1))

    def _gather_contexts(self, index: int, parts: list[SequenceSlice]) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded latents [B, S_max, W] of decoding sequences, and which positions each may see."""
        lengths = [len(part.context_slots) for part in parts]
        longest = max(lengths)
        slots_BS = torch.zeros(len(parts), longest, dtype=torch.long)
        for row, part in enumerate(parts):
            slots_BS[row, : lengths[row]] = torch.tensor(part.context_slots)
        positions_S = torch.arange(longest)
        length_B1 = torch.tensor(lengths)[:, None]
        visible_BS = positions_S[None, :] < length_B1
        window = self.model.config.sliding_window
        if window is not None:
            visible_BS &= positions_S[None, :] > length_B1 - 1 - window
        return self.cache.read(index, slots_BS.to(self.device)), visible_BS.to(self.device)
