"""Tiny random checkpoints written by transformers' own DeepSeek classes: the parity reference."""

from __future__ import annotations

from pathlib import Path

import torch

TINY_SHAPE = dict(
    vocab_size=97,
    hidden_size=48,
    intermediate_size=96,
    moe_intermediate_size=24,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=4,
    kv_lora_rank=24,
    qk_nope_head_dim=12,
    qk_rope_head_dim=8,
    v_head_dim=10,
    n_routed_experts=8,
    num_experts_per_tok=3,
    first_k_dense_replace=1,
    max_position_embeddings=256,
    initializer_range=0.1,
    pad_token_id=0,
)
YARN = {
    "type": "yarn",
    "factor": 4.0,
    "original_max_position_embeddings": 64,
    "beta_fast": 32,
    "beta_slow": 1,
    "mscale": 1.0,
    "mscale_all_dim": 0.8,
}


def deepseek_v3(**overrides):
    """Sigmoid scores, noaux_tc groups with a non-zero correction bias, low-rank queries, YaRN."""
    from transformers import DeepseekV3Config, DeepseekV3ForCausalLM

    torch.manual_seed(0)
    settings = {
        **TINY_SHAPE,
        "q_lora_rank": 16,
        "n_shared_experts": 1,
        "n_group": 4,
        "topk_group": 2,
        "routed_scaling_factor": 2.5,
        "rope_scaling": YARN,
        **overrides,
    }
    model = DeepseekV3ForCausalLM(DeepseekV3Config(**settings)).eval()
    with torch.no_grad():
        for layer in model.model.layers[1:]:
            layer.mlp.gate.e_score_correction_bias.uniform_(-0.05, 0.05)
    return model


def deepseek_v2(**overrides):
    """Softmax scores, group-limited greedy, the direct query projection (q_lora_rank null)."""
    from transformers import DeepseekV2Config, DeepseekV2ForCausalLM

    torch.manual_seed(1)
    settings = {
        **TINY_SHAPE,
        "q_lora_rank": None,
        "n_shared_experts": 2,
        "n_group": 2,
        "topk_group": 1,
        "topk_method": "group_limited_greedy",
        "routed_scaling_factor": 1.5,
        **overrides,
    }
    return DeepseekV2ForCausalLM(DeepseekV2Config(**settings)).eval()


def save(model, directory: Path, *, stacked: bool = False, max_shard_size: str | None = None) -> Path:
    """`stacked`: transformers 5's in-memory expert layout instead of the published per-expert one."""
    kwargs = {"save_original_format": not stacked}
    if max_shard_size:
        kwargs["max_shard_size"] = max_shard_size
    model.save_pretrained(directory, **kwargs)
    return directory


def padded_batch(vocab_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two sequences, the second left-padded by 3; returns ids, mask and positions."""
    generator = torch.Generator().manual_seed(7)
    input_ids = torch.randint(1, vocab_size, (2, 11), generator=generator)
    mask = torch.ones_like(input_ids)
    mask[1, :3] = 0
    input_ids[1, :3] = 0
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return input_ids, mask, positions


def reference_logits(model, input_ids, mask, positions) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=input_ids, attention_mask=mask, position_ids=positions).logits
