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
    context_slots: torch.Tensor  # cache slot of every position 0 .. first_position + num_new - 1


@dataclass
class Prefill:
    rows: slice  # its new tokens' rows in the step
    first_position: int
    context_slots_S: torch.Tensor


@dataclass
class Decode:
    """The sequences with one new token, attended together in the absorbed form."""

    rows_D: torch.Tensor  # their new tokens' rows in the step
    slots_DS: torch.Tensor  # their context slots, padded
    visible_DS: torch.Tensor  # which padded positions each may see


@dataclass
class StepBatch:
    """Everything a step needs as tensors, built once per step rather than once per layer."""

    token_ids_N: torch.Tensor
    positions_N: torch.Tensor
    slots_N: torch.Tensor
    last_rows_B: torch.Tensor  # each sequence's last new token
    decode: Decode | None
    prefills: list[Prefill]


class ModelRunner:
    def __init__(self, model: MoEForCausalLM, cache: LatentCache, *, attention_chunk: int = 1024) -> None:
        self.model = model
        self.cache = cache
        self.attention_chunk = attention_chunk
        self.device = model.embed_tokens.weight.device

    def build_batch(self, sequences: list[tuple[list[int], SequenceSlice]]) -> StepBatch:
        """`sequences`: (the new token ids, their slice) per sequence."""
        tokens: list[int] = []
        positions: list[torch.Tensor] = []
        slots: list[torch.Tensor] = []
        last_rows: list[int] = []
        decoding: list[tuple[int, SequenceSlice]] = []
        prefills: list[Prefill] = []
        for new_ids, part in sequences:
            row = len(tokens)
            tokens += new_ids
            end = part.first_position + part.num_new
            positions.append(torch.arange(part.first_position, end))
            slots.append(part.context_slots[part.first_position :])
            last_rows.append(len(tokens) - 1)
            if part.num_new == 1:
                decoding.append((row, part))
            else:
                prefills.append(
                    Prefill(slice(row, len(tokens)), part.first_position, part.context_slots.to(self.device))
                )
        decode = None
        if decoding:
            rows = torch.tensor([row for row, _ in decoding], device=self.device)
            decode = Decode(rows, *self._padded_contexts([part for _, part in decoding]))
        return StepBatch(
            token_ids_N=torch.tensor(tokens, device=self.device),
            positions_N=torch.cat(positions).to(self.device),
            slots_N=torch.cat(slots).to(self.device),
            last_rows_B=torch.tensor(last_rows, device=self.device),
            decode=decode,
            prefills=prefills,
        )

    def _padded_contexts(self, parts: list[SequenceSlice]) -> tuple[torch.Tensor, torch.Tensor]:
        """Slots [D, S_max] of decoding sequences, padded, and which positions each may see."""
        lengths = torch.tensor([len(part.context_slots) for part in parts])
        slots_DS = torch.nn.utils.rnn.pad_sequence([part.context_slots for part in parts], batch_first=True)
        positions_S = torch.arange(slots_DS.shape[1])
        visible_DS = positions_S[None, :] < lengths[:, None]
        window = self.model.config.sliding_window
        if window is not None:
            visible_DS &= positions_S[None, :] > lengths[:, None] - 1 - window
        return slots_DS.to(self.device), visible_DS.to(self.device)

    @torch.inference_mode()
    def forward(self, batch: StepBatch) -> torch.Tensor:
        """Logits [B, V] of each sequence's last new token, in the order of `batch.sequences`."""
        trunk = self.model.model
        x_ND = trunk.embed_tokens(batch.token_ids_N)
        cos, sin = trunk.rotary_emb(batch.positions_N[None])
        for index, layer in enumerate(cast(list[DecoderLayer], trunk.layers)):
            h_ND = layer.input_layernorm(x_ND)
            x_ND = x_ND + self._attention(index, layer.self_attn, h_ND, cos, sin, batch)
            x_ND = x_ND + layer.mlp(layer.post_attention_layernorm(x_ND)[None])[0]
        return self.model.lm_head(trunk.norm(x_ND[batch.last_rows_B]))

    def _attention(
        self,
        index: int,
        attn: MultiHeadLatentAttention,
        h_ND: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        batch: StepBatch,
    ) -> torch.Tensor:
        q_nope, q_rope = (q[0] for q in attn.queries(h_ND[None], cos, sin))  # [N, H, *]
        c_kv, k_rope = attn.latent(h_ND[None], cos, sin)
        self.cache.write(index, batch.slots_N, torch.cat((c_kv[0], k_rope[0]), dim=-1))
        decode = batch.decode
        if decode is not None and not batch.prefills:  # all decoding: no rows to pick
            latent_DSW = self.cache.read(index, decode.slots_DS)
            out_NHV = absorbed_decode(attn, q_nope, q_rope, latent_DSW, decode.visible_DS)
            return attn.o_proj(out_NHV.flatten(1))
        out_NHV = q_nope.new_empty(h_ND.shape[0], attn.num_heads, attn.config.v_head_dim)
        if decode is not None:
            rows = decode.rows_D
            latent_DSW = self.cache.read(index, decode.slots_DS)
            out_NHV[rows] = absorbed_decode(attn, q_nope[rows], q_rope[rows], latent_DSW, decode.visible_DS)
        for prefill in batch.prefills:
            out_NHV[prefill.rows] = decompressed_prefill(
                attn,
                q_nope[prefill.rows],
                q_rope[prefill.rows],
                self.cache.read(index, prefill.context_slots_S),
                first_position=prefill.first_position,
                chunk_size=self.attention_chunk,
            )
        return attn.o_proj(out_NHV.flatten(1))
