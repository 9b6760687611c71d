"""The DeepSeek-V2/V3 decoder: layers, trunk and causal-LM head.

Module and parameter names are those of transformers' `DeepseekV3ForCausalLM`, so a checkpoint
maps onto this model key for key and a PEFT adapter's target names mean the same module here
and there. The model is plain and single-device: compile, quantisation, LoRA, caches and
parallelism are applied from outside (`core_model/engine`, `core_model/train`).

    model = load_model("tiny")
    logits_BTV = model(input_ids_BT, attention_mask=mask_BT)
    hidden_BTD = model.trunk(inputs_embeds=patches_BTD)      # images, transactions, ...

Legend: B batch, T tokens, D hidden size, V vocabulary.
"""

from __future__ import annotations

import torch
from torch import nn

from .attention import MultiHeadLatentAttention, RMSNorm, RotaryEmbedding, attention_mask
from .config import MoEConfig
from .linear import Linear
from .moe import MLP, MoE


class DecoderLayer(nn.Module):
    def __init__(self, config: MoEConfig, layer_idx: int) -> None:
        super().__init__()
        self.self_attn = MultiHeadLatentAttention(config)
        self.mlp: nn.Module = (
            MoE(config) if config.is_moe_layer(layer_idx) else MLP(config, config.intermediate_size)
        )
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(
        self,
        x_BTD: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None,
        real_rows_N: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`real_rows_N`: which of the B*T positions are real tokens, when some are padding: the
        feed-forward, which works token by token, then runs on those alone."""
        x_BTD = x_BTD + self.self_attn(self.input_layernorm(x_BTD), cos, sin, mask)
        h_BTD = self.post_attention_layernorm(x_BTD)
        if real_rows_N is None or self._needs_whole_sequences():
            return x_BTD + self.mlp(h_BTD)
        h_ND = h_BTD.flatten(0, 1)
        out_ND = self.mlp(h_ND.index_select(0, real_rows_N)[None])[0]
        return x_BTD + torch.zeros_like(h_ND).index_add(0, real_rows_N, out_ND).view_as(x_BTD)

    def _needs_whole_sequences(self) -> bool:
        """The MoE's sequence-wise balance loss reads the batch as [B, T] while training."""
        mlp = self.mlp
        return isinstance(mlp, MoE) and mlp.training and mlp.config.aux_loss_alpha > 0


class Trunk(nn.Module):
    """Token embeddings, decoder layers and the final norm (transformers' `DeepseekV3Model`)."""

    def __init__(self, config: MoEConfig) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(config)

    def init_weights(self, generator: torch.Generator | None = None) -> None:
        """As MoEForCausalLM.init_weights, for a trunk built alone (events or patches as input)."""
        init_weights(self, std=self.config.initializer_range, generator=generator)

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        causal: bool = True,
    ) -> torch.Tensor:
        """`attention_mask`: a padding mask [B, T] (1: a real token), or a full boolean mask
        [B, 1, T, T] (True: may attend) that replaces causality and padding, for callers that
        shape attention themselves; they pass `position_ids` too."""
        B, T, _ = inputs_embeds.shape
        device = inputs_embeds.device
        mask: torch.Tensor | None
        real_rows_N = None  # padding is often half a batch of short texts: feed-forwards skip it
        if attention_mask is not None and attention_mask.dim() == 4:
            if position_ids is None:
                raise ValueError("a [B, 1, T, T] attention mask needs position_ids")
            mask = attention_mask.bool()
        else:
            padding_BT = attention_mask
            if padding_BT is not None and bool(padding_BT.all()):
                padding_BT = None  # no padding: attention takes its causal fast path
            mask = attention_mask_for(padding_BT, self.config, length=T, causal=causal, device=device)
            if padding_BT is not None:
                real_rows_N = padding_BT.reshape(-1).nonzero().squeeze(1)
        if position_ids is None:
            position_ids = default_position_ids(attention_mask, batch=B, length=T, device=device)
        cos, sin = self.rotary_emb(position_ids)
        x_BTD = inputs_embeds
        for layer in self.layers:
            x_BTD = layer(x_BTD, cos, sin, mask, real_rows_N)
        return self.norm(x_BTD)


def default_position_ids(
    attention_mask_BT: torch.Tensor | None, *, batch: int, length: int, device: torch.device
) -> torch.Tensor:
    """0, 1, 2, ... from each sequence's first real token, so left padding changes nothing."""
    if attention_mask_BT is None:
        return torch.arange(length, device=device).expand(batch, length)
    return (attention_mask_BT.long().cumsum(-1) - 1).clamp(min=0)


def attention_mask_for(
    attention_mask_BT: torch.Tensor | None,
    config: MoEConfig,
    *,
    length: int,
    causal: bool,
    device: torch.device,
) -> torch.Tensor | None:
    """The attention mask for a padding mask [B, T] (None: no padding)."""
    return attention_mask(
        attention_mask_BT,
        num_queries=length,
        sliding_window=config.sliding_window,
        causal=causal,
        device=device,
    )


class MoEForCausalLM(nn.Module):
    """Trunk plus LM head. `forward` gives logits [B, T, V]; `trunk` gives hidden states [B, T, D]."""

    def __init__(self, config: MoEConfig) -> None:
        super().__init__()
        self.config = config
        self.model = Trunk(config)
        self.lm_head = Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    @property
    def embed_tokens(self) -> nn.Embedding:
        return self.model.embed_tokens

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        hidden_BTD = self.trunk(
            inputs_embeds=self.model.embed_tokens(input_ids),
            attention_mask=attention_mask,
            position_ids=position_ids,
        )
        return self.lm_head(hidden_BTD)

    def trunk(
        self,
        *,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        causal: bool = True,
    ) -> torch.Tensor:
        """Hidden states after the final norm, for any input embedded to [B, T, D].

        `causal=False` makes the trunk a bidirectional encoder (image patches, whole series).
        """
        return self.model(
            inputs_embeds, attention_mask=attention_mask, position_ids=position_ids, causal=causal
        )

    def balance_loss(self) -> torch.Tensor | None:
        """Sum of the MoE layers' sequence-wise balance losses from the last training forward."""
        losses = [m.balance_loss for m in self.modules() if isinstance(m, MoE) and m.balance_loss is not None]
        return torch.stack(losses).sum() if losses else None

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())  # tied weights counted once

    def reset_buffers(self) -> None:
        """Recompute non-persistent buffers (after building on the meta device)."""
        reset_buffers(self)

    def init_weights(self, generator: torch.Generator | None = None) -> None:
        """Normal(0, initializer_range) for matrices, ones for norms, zeros for biases."""
        init_weights(self, std=self.config.initializer_range, generator=generator)


def reset_buffers(model: nn.Module) -> None:
    """Recompute the non-persistent buffers of every submodule that has a `reset_buffers`."""
    for module in model.modules():
        reset = getattr(module, "reset_buffers", None)
        if module is not model and callable(reset):
            reset()


@torch.no_grad()
def init_weights(model: nn.Module, *, std: float, generator: torch.Generator | None = None) -> None:
    """Normal(0, std) for matrices (the MoE's expert tensors are allocated, not initialised, until
    this runs), ones for norms, zeros for biases; then the buffers."""
    for name, param in model.named_parameters():
        if name.endswith("layernorm.weight") or name.endswith("norm.weight"):
            param.fill_(1.0)
        elif name.endswith(".bias"):
            param.zero_()
        else:
            param.normal_(0.0, std, generator=generator)
    reset_buffers(model)
