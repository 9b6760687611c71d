"""Multi-head Latent Attention (MLA) of DeepSeek-V2/V3, with decoupled RoPE and YaRN.

Keys and values are compressed into one latent `c_kv` of `kv_lora_rank` values per token plus
one shared rotary key of `qk_rope_head_dim` values (https://arxiv.org/abs/2405.04434, sec. 2.1).
This module holds the decompressed form: the latent is expanded through `kv_b_proj` into
per-head keys and values, then scaled dot-product attention runs over them. It is the reference
for training and prefill; the engine's absorbed-weight decode over a latent cache lives in
`core_model/engine`. It knows nothing of caches, batching or adapters.

Legend: B batch, T query tokens, S key tokens, D hidden size, H heads, C kv_lora_rank,
R qk_rope_head_dim, N qk_nope_head_dim, V v_head_dim, Q q_lora_rank.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import MoEConfig, yarn_mscale
from .linear import Linear


class RMSNorm(nn.Module):
    """Root-mean-square norm, computed in float32 whatever the input dtype."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32 and self.weight.dtype == torch.float32:
            return F.rms_norm(x, (x.shape[-1],), self.weight, eps=self.eps)  # one fused op
        # Half precision: normalise in float32, cast back, then scale (the reference's order).
        normed = F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps)
        return self.weight * normed.to(x.dtype)


class RotaryEmbedding(nn.Module):
    """cos/sin tables for the rotary part of queries and keys, with optional YaRN scaling."""

    inv_freq: torch.Tensor

    def __init__(self, config: MoEConfig) -> None:
        super().__init__()
        self.config = config
        inv_freq, self.attention_factor = rope_frequencies(config)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def reset_buffers(self) -> None:
        self.inv_freq = rope_frequencies(self.config)[0].to(self.inv_freq.device)

    def forward(self, position_ids_BT: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and signed sin, each [B, T, 1, R] in float32, laid out for `apply_rope`.

        Built once per forward and shared by every layer: cos = (cos, cos), sin = (-sin, sin).
        """
        angles = position_ids_BT[..., None].float() * self.inv_freq.float()
        cos, sin = angles.cos() * self.attention_factor, angles.sin() * self.attention_factor
        return torch.cat((cos, cos), dim=-1)[..., None, :], torch.cat((-sin, sin), dim=-1)[..., None, :]


def rope_frequencies(config: MoEConfig) -> tuple[torch.Tensor, float]:
    """Inverse frequencies [R/2] and the cos/sin magnitude (1.0 without YaRN)."""
    dim, base = config.qk_rope_head_dim, config.rope_theta
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    rope = config.rope_scaling
    if rope is None or rope.get("type") != "yarn":
        return inv_freq, 1.0
    # YaRN: interpolate the low frequencies, keep the high ones, ramp in between.
    factor = rope.get("factor") or config.max_position_embeddings / rope["original_max_position_embeddings"]
    original_max = rope.get("original_max_position_embeddings", config.max_position_embeddings)
    beta_fast, beta_slow = rope.get("beta_fast") or 32, rope.get("beta_slow") or 1

    def correction_dim(rotations: float) -> float:
        return dim * math.log(original_max / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low = max(math.floor(correction_dim(beta_fast)), 0)
    high: float = min(math.ceil(correction_dim(beta_slow)), dim - 1)
    if low == high:
        high += 0.001  # avoid a zero-width ramp
    ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    inv_freq = (inv_freq / factor) * ramp + inv_freq * (1 - ramp)
    attention_factor = rope.get("attention_factor")
    if attention_factor is None:
        mscale, mscale_all_dim = rope.get("mscale"), rope.get("mscale_all_dim")
        if mscale and mscale_all_dim:
            attention_factor = yarn_mscale(factor, mscale) / yarn_mscale(factor, mscale_all_dim)
        else:
            attention_factor = yarn_mscale(factor)
    return inv_freq, float(attention_factor)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, *, interleave: bool) -> torch.Tensor:
    """Rotates the last dim of x [..., T, heads, R] by the tables of `RotaryEmbedding`.

    With `interleave` the checkpoint stores rotary dims as pairs (x0, x1), (x2, x3), ...;
    the result is laid out as (all first halves, all second halves) in both cases. Queries and
    keys get the same layout, so their dot products are those of the checkpoint.
    """
    halves, swapped = _rope_orders(x.shape[-1], interleave=interleave, device=x.device)
    x_halves = x[..., halves] if interleave else x  # (x1, x2)
    x_swapped = x[..., swapped]  # (x2, x1)
    if x.dtype != torch.float32:  # rotate in float32 whatever the model's dtype
        return (x_halves.float() * cos + x_swapped.float() * sin).to(x.dtype)
    return x_halves * cos + x_swapped * sin  # (x1 cos - x2 sin, x2 cos + x1 sin)


def _rope_orders(dim: int, *, interleave: bool, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Index orders that give (x1, x2) and (x2, x1) from a rotary vector in the checkpoint's layout.

    Cached, except while torch.export or torch.compile traces: a tensor made there is a fake one,
    and cached it would break every later eager call (an ONNX export, then serving in PyTorch)."""
    if torch.compiler.is_compiling() or torch.compiler.is_exporting():
        return _make_rope_orders(dim, interleave=interleave, device=device)
    return _cached_rope_orders(dim, interleave=interleave, device=device)


def _make_rope_orders(
    dim: int, *, interleave: bool, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.inference_mode(False):  # cached: must also serve code that records gradients
        if interleave:
            first, second = torch.arange(0, dim, 2), torch.arange(1, dim, 2)
        else:
            first, second = torch.arange(dim // 2), torch.arange(dim // 2, dim)
        return torch.cat((first, second)).to(device), torch.cat((second, first)).to(device)


_cached_rope_orders = functools.cache(_make_rope_orders)


class MultiHeadLatentAttention(nn.Module):
    """MLA in the decompressed form. Parameter names are those of the Hugging Face checkpoints."""

    def __init__(self, config: MoEConfig) -> None:
        super().__init__()
        self.config = config
        d, h = config.hidden_size, config.num_attention_heads
        self.num_heads = h
        if config.q_lora_rank is None:
            self.q_proj = Linear(d, h * config.qk_head_dim, bias=False)
        else:
            self.q_a_proj = Linear(d, config.q_lora_rank, bias=config.attention_bias)
            self.q_a_layernorm = RMSNorm(config.q_lora_rank)
            self.q_b_proj = Linear(config.q_lora_rank, h * config.qk_head_dim, bias=False)
        self.kv_a_proj_with_mqa = Linear(
            d, config.kv_lora_rank + config.qk_rope_head_dim, bias=config.attention_bias
        )
        self.kv_a_layernorm = RMSNorm(config.kv_lora_rank)
        self.kv_b_proj = Linear(
            config.kv_lora_rank, h * (config.qk_nope_head_dim + config.v_head_dim), bias=False
        )
        self.o_proj = Linear(h * config.v_head_dim, d, bias=config.attention_bias)

    def queries(self, x_BTD: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Per-head queries: q_nope [B, T, H, N] and the rotated q_rope [B, T, H, R]."""
        c = self.config
        if c.q_lora_rank is None:
            q = self.q_proj(x_BTD)
        else:
            q = self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x_BTD)))
        q_BTHE = q.view(*x_BTD.shape[:2], self.num_heads, c.qk_head_dim)
        q_nope, q_rope = q_BTHE.split([c.qk_nope_head_dim, c.qk_rope_head_dim], dim=-1)
        return q_nope, apply_rope(q_rope, cos, sin, interleave=c.rope_interleave)

    def latent(self, x_BTD: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """What a latent KV cache stores: normed c_kv [B, T, C] and rotated k_rope [B, T, R]."""
        c = self.config
        c_kv, k_rope = self.kv_a_proj_with_mqa(x_BTD).split([c.kv_lora_rank, c.qk_rope_head_dim], dim=-1)
        k_rope = apply_rope(k_rope.unsqueeze(-2), cos, sin, interleave=c.rope_interleave).squeeze(-2)
        return self.kv_a_layernorm(c_kv), k_rope

    def forward(
        self,
        x_BTD: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask_B1TS: torch.Tensor | None,
    ) -> torch.Tensor:
        """`mask_B1TS`: True where a query may attend to a key; None means plain causal."""
        B, T, _ = x_BTD.shape
        q_BHTE, k_BHSE, v_BHSV = self.heads(x_BTD, cos, sin)
        out_BHTV = sdpa(
            q_BHTE, k_BHSE, v_BHSV, attn_mask=mask_B1TS, is_causal=mask_B1TS is None,
            scale=self.config.softmax_scale,
        )  # fmt: skip
        return self.o_proj(out_BHTV.transpose(1, 2).reshape(B, T, self.num_heads * self.config.v_head_dim))

    def heads(self, x_BTD: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Per-head queries [B, H, T, E], keys [B, H, S, E] and values [B, H, S, V] (S = T)."""
        c = self.config
        B, T, _ = x_BTD.shape
        q_nope, q_rope = self.queries(x_BTD, cos, sin)
        c_kv_BTC, k_rope_BTR = self.latent(x_BTD, cos, sin)
        kv = self.kv_b_proj(c_kv_BTC).view(B, T, self.num_heads, c.qk_nope_head_dim + c.v_head_dim)
        k_nope, v_BSHV = kv.split([c.qk_nope_head_dim, c.v_head_dim], dim=-1)
        k_BSHE = torch.cat((k_nope, k_rope_BTR.unsqueeze(2).expand(-1, -1, self.num_heads, -1)), dim=-1)
        q_BTHE = torch.cat((q_nope, q_rope), dim=-1)
        return q_BTHE.transpose(1, 2), k_BSHE.transpose(1, 2), v_BSHV.transpose(1, 2)

    def weights(
        self, x_BTD: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask_B1TS: torch.Tensor | None
    ) -> torch.Tensor:
        """The attention probabilities [B, H, T, S] that `forward` weighs the values with (for
        inspection: which earlier tokens a query read most), from the same queries and keys."""
        q_BHTE, k_BHSE, _ = self.heads(x_BTD, cos, sin)
        scores_BHTS = (q_BHTE @ k_BHSE.transpose(-1, -2)) * self.config.softmax_scale
        if mask_B1TS is None:
            T = x_BTD.shape[1]
            mask_B1TS = torch.ones(T, T, dtype=torch.bool, device=x_BTD.device).tril()[None, None]
        return scores_BHTS.masked_fill(~mask_B1TS, float("-inf")).softmax(dim=-1)


def sdpa(
    q_BHTE: torch.Tensor,
    k_BHSE: torch.Tensor,
    v_BHSV: torch.Tensor,
    *,
    attn_mask: torch.Tensor | None,
    is_causal: bool,
    scale: float,
) -> torch.Tensor:
    """torch's scaled-dot-product attention, with values zero-padded to the query/key head size.

    MLA's value heads are narrower than its query/key heads (v_head_dim < qk_head_dim); torch's
    fused kernels need equal sizes and otherwise fall back to the unfused path (2.5x slower
    forward and backward on CPU). The padded columns come out zero and are sliced off.
    """
    V, E = v_BHSV.shape[-1], q_BHTE.shape[-1]
    if V < E:
        v_BHSV = F.pad(v_BHSV, (0, E - V))
    out = F.scaled_dot_product_attention(
        q_BHTE, k_BHSE, v_BHSV, attn_mask=attn_mask, is_causal=is_causal, scale=scale
    )
    return out[..., :V]


def attention_mask(
    padding_mask_BS: torch.Tensor | None,
    *,
    num_queries: int,
    sliding_window: int | None,
    causal: bool = True,
    device: torch.device,
) -> torch.Tensor | None:
    """Boolean [B, 1, T, S] mask (True: may attend), or None when plain causal attention suffices.

    Queries are the last T of S positions. A query always sees itself, so rows for padding
    tokens stay finite (their outputs are meaningless and ignored). `causal=False` lets every
    token see every other (encoders over image patches); padding and the window still apply.
    """
    if causal and padding_mask_BS is None and sliding_window is None:
        return None
    S = num_queries if padding_mask_BS is None else padding_mask_BS.shape[1]
    q_pos = torch.arange(S - num_queries, S, device=device)[:, None]
    k_pos = torch.arange(S, device=device)[None, :]
    allowed_TS = k_pos <= q_pos if causal else torch.ones(num_queries, S, dtype=torch.bool, device=device)
    if sliding_window is not None:
        allowed_TS &= (k_pos - q_pos).abs() < sliding_window
    mask = allowed_TS[None, None]
    if padding_mask_BS is not None:
        mask = mask & padding_mask_BS.bool()[:, None, None, :]
    return mask | (k_pos == q_pos)[None, None]
