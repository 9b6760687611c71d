"""MLA over the latent cache: absorbed-weight decode and decompressed, chunked prefill.

Both read the cached latents of one layer (normed `c_kv` and rotated `k_rope`) and give the
per-head attention outputs before `o_proj`; both equal `MultiHeadLatentAttention.forward`.

- Decode (one new token per sequence): `kv_b_proj` is split into W_UK and W_UV and absorbed into
  the query and the output, so attention runs over the C-wide latent directly as multi-query
  attention and the cached history is never expanded (DeepSeek-V2 paper, appendix C).
- Prefill (many new tokens): the context is expanded into per-head keys and values, a chunk of
  cached positions at a time, and the chunks are merged with a running log-sum-exp, so memory
  stays bounded however long the cached context is.

Legend: B sequences, T new tokens, S context tokens, H heads, C kv_lora_rank, R rope dim,
N qk_nope_head_dim, V v_head_dim.
"""

from __future__ import annotations

import torch

from ..attention import MultiHeadLatentAttention, sdpa


def absorbed_weights(attn: MultiHeadLatentAttention) -> tuple[torch.Tensor, torch.Tensor]:
    """kv_b_proj split per head: W_UK [H, N, C] (keys) and W_UV [H, V, C] (values)."""
    c = attn.config
    w_HXC = attn.kv_b_proj.weight.view(attn.num_heads, c.qk_nope_head_dim + c.v_head_dim, c.kv_lora_rank)
    return w_HXC[:, : c.qk_nope_head_dim], w_HXC[:, c.qk_nope_head_dim :]


def absorbed_decode(
    attn: MultiHeadLatentAttention,
    q_nope_BHN: torch.Tensor,
    q_rope_BHR: torch.Tensor,
    latent_BSW: torch.Tensor,
    visible_BS: torch.Tensor,
) -> torch.Tensor:
    """One query token per sequence over its cached latents; `visible_BS` masks padding/window."""
    c = attn.config
    w_uk_HNC, w_uv_HVC = absorbed_weights(attn)
    # The absorbed query meets the cached [c_kv, k_rope] in one product: it is multi-query
    # attention with one shared (C + R)-wide key per token, whose first C values are the value.
    q_latent_HBC = torch.bmm(q_nope_BHN.transpose(0, 1), w_uk_HNC)
    q_BHW = torch.cat((q_latent_HBC.transpose(0, 1), q_rope_BHR), dim=-1)
    scores_BHS = torch.bmm(q_BHW, latent_BSW.transpose(1, 2)).float() * c.softmax_scale
    scores_BHS = scores_BHS.masked_fill(~visible_BS[:, None, :], float("-inf"))
    probs_BHS = scores_BHS.softmax(dim=-1).to(latent_BSW.dtype)
    context_BHC = torch.bmm(probs_BHS, latent_BSW[..., : c.kv_lora_rank])
    out_HBV = torch.bmm(context_BHC.transpose(0, 1), w_uv_HVC.transpose(1, 2))
    return out_HBV.transpose(0, 1)


def decompressed_prefill(
    attn: MultiHeadLatentAttention,
    q_nope_THN: torch.Tensor,
    q_rope_THR: torch.Tensor,
    latent_SW: torch.Tensor,
    *,
    first_position: int,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """New tokens at positions first_position.. over all S = first_position + T cached latents.

    A context that fits in one chunk goes through torch's fused attention; a longer one is
    expanded chunk by chunk and merged with a running log-sum-exp.
    """
    c = attn.config
    T, S = q_nope_THN.shape[0], latent_SW.shape[0]
    q_HTE = torch.cat((q_nope_THN, q_rope_THR), dim=-1).transpose(0, 1)
    q_pos_T = torch.arange(first_position, first_position + T, device=latent_SW.device)
    if S <= chunk_size:
        return _fused(attn, q_HTE, latent_SW, q_pos_T).transpose(0, 1)
    running_max_HT = torch.full((attn.num_heads, T), float("-inf"), device=latent_SW.device)
    running_sum_HT = torch.zeros(attn.num_heads, T, device=latent_SW.device)
    out_HTV = torch.zeros(attn.num_heads, T, c.v_head_dim, device=latent_SW.device)
    for start in range(0, S, chunk_size):
        k_HsE, v_HsV = _expand(attn, latent_SW[start : start + chunk_size])
        k_pos_s = torch.arange(start, start + k_HsE.shape[1], device=latent_SW.device)
        visible_Ts = k_pos_s[None, :] <= q_pos_T[:, None]
        if c.sliding_window is not None:
            visible_Ts &= k_pos_s[None, :] > q_pos_T[:, None] - c.sliding_window
        if not visible_Ts.any():
            continue
        scores_HTs = (q_HTE @ k_HsE.transpose(1, 2)).float() * c.softmax_scale
        scores_HTs = scores_HTs.masked_fill(~visible_Ts, float("-inf"))
        chunk_max_HT = scores_HTs.amax(dim=-1)
        new_max_HT = torch.maximum(running_max_HT, chunk_max_HT)
        safe_max_HT = new_max_HT.masked_fill(new_max_HT == float("-inf"), 0.0)
        rescale_HT = torch.exp(running_max_HT - safe_max_HT)
        probs_HTs = torch.exp(scores_HTs - safe_max_HT[..., None])
        running_sum_HT = running_sum_HT * rescale_HT + probs_HTs.sum(dim=-1)
        out_HTV = out_HTV * rescale_HT[..., None] + probs_HTs @ v_HsV.float()
        running_max_HT = new_max_HT
    out_HTV = out_HTV / running_sum_HT[..., None]
    return out_HTV.transpose(0, 1).to(q_nope_THN.dtype)


def _fused(
    attn: MultiHeadLatentAttention, q_HTE: torch.Tensor, latent_SW: torch.Tensor, q_pos_T: torch.Tensor
) -> torch.Tensor:
    """Scaled dot-product attention over the whole expanded context: [H, T, V]."""
    c = attn.config
    k_HSE, v_HSV = _expand(attn, latent_SW)
    T, S = q_HTE.shape[1], latent_SW.shape[0]
    causal_from_zero = T == S and c.sliding_window is None  # no cached context: plain causal
    visible_TS = None
    if not causal_from_zero:
        k_pos_S = torch.arange(S, device=latent_SW.device)
        visible_TS = k_pos_S[None, :] <= q_pos_T[:, None]
        if c.sliding_window is not None:
            visible_TS &= k_pos_S[None, :] > q_pos_T[:, None] - c.sliding_window
    out = sdpa(
        q_HTE[None],
        k_HSE[None],
        v_HSV[None],
        attn_mask=visible_TS,
        is_causal=causal_from_zero,
        scale=c.softmax_scale,
    )
    return out[0]


def _expand(attn: MultiHeadLatentAttention, latent_SW: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Latents -> per-head keys [H, S, N + R] and values [H, S, V] (the decompressed form)."""
    c = attn.config
    c_kv_SC, k_rope_SR = latent_SW.split([c.kv_lora_rank, c.qk_rope_head_dim], dim=-1)
    kv_SHX = attn.kv_b_proj(c_kv_SC).view(-1, attn.num_heads, c.qk_nope_head_dim + c.v_head_dim)
    k_nope_SHN, v_SHV = kv_SHX.split([c.qk_nope_head_dim, c.v_head_dim], dim=-1)
    k_SHE = torch.cat((k_nope_SHN, k_rope_SR[:, None, :].expand(-1, attn.num_heads, -1)), dim=-1)
    return k_SHE.transpose(0, 1), v_SHV.transpose(0, 1)
