"""DeepSeekMoE: router, routed experts (looped reference and grouped dispatch), shared experts.

- `Router` scores each token against every routed expert (softmax or sigmoid), keeps the best
  `topk_group` groups of experts (DeepSeek-V3: a group scores the sum of its top two), and picks
  `num_experts_per_tok` experts. With `topk_method="noaux_tc"` an `e_score_correction_bias`
  shifts the choice but not the weights: the auxiliary-loss-free balancing of DeepSeek-V3
  (https://arxiv.org/abs/2412.19437, sec. 2.1.2).
- `Experts` holds every routed expert stacked, as transformers 5 does ([E, 2I, D] and [E, D, I]).
  `forward_looped` is the plain reference; `forward_grouped` sorts token-expert pairs by expert
  and runs one matmul per expert over contiguous rows (or torch's grouped matmul where it runs).
- Load balancing: `MoE` counts tokens per expert as it runs; `update_expert_bias` applies the
  sign update from those counts, `expert_load_stats` reports them, and `MoE.balance_loss` is the
  optional sequence-wise balance loss.

Legend: B batch, T tokens, D hidden size, E routed experts, K experts per token, G groups,
I expert intermediate size, N = T * K token-expert pairs.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .config import MoEConfig

Dispatch = Literal["grouped", "looped"]


class MLP(nn.Module):
    """SwiGLU feed-forward: dense layers and shared experts."""

    def __init__(self, config: MoEConfig, intermediate_size: int) -> None:
        super().__init__()
        d, bias = config.hidden_size, config.mlp_bias
        self.gate_proj = nn.Linear(d, intermediate_size, bias=bias)
        self.up_proj = nn.Linear(d, intermediate_size, bias=bias)
        self.down_proj = nn.Linear(intermediate_size, d, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Router(nn.Module):
    """Top-k expert choice per token. Works in float32; its weights stay float32 under any dtype."""

    e_score_correction_bias: torch.Tensor  # [E], only with topk_method "noaux_tc"

    def __init__(self, config: MoEConfig) -> None:
        super().__init__()
        assert config.n_routed_experts is not None
        self.config = config
        self.num_experts = config.n_routed_experts
        self.weight = nn.Parameter(torch.empty(self.num_experts, config.hidden_size, dtype=torch.float32))
        if config.topk_method == "noaux_tc":
            bias = torch.zeros(self.num_experts, dtype=torch.float32)
            self.register_buffer("e_score_correction_bias", bias)

    @property
    def uses_bias(self) -> bool:
        return self.config.topk_method == "noaux_tc"

    def scores(self, x_TD: torch.Tensor) -> torch.Tensor:
        """Affinity of each token for each expert, [T, E] in float32."""
        logits_TE = F.linear(x_TD.float(), self.weight.float())
        if self.config.scoring_func == "sigmoid":
            return logits_TE.sigmoid()
        return logits_TE.softmax(dim=-1)

    def select(self, scores_TE: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns weights_TK (float32) and expert_ids_TK."""
        c = self.config
        choice_TE = scores_TE + self.e_score_correction_bias if self.uses_bias else scores_TE
        if c.n_group > 1 and c.topk_method != "greedy":
            T = choice_TE.shape[0]
            choice_TGe = choice_TE.view(T, c.n_group, -1)
            if c.topk_method == "noaux_tc":
                group_scores_TG = choice_TGe.topk(2, dim=-1).values.sum(-1)
            else:
                group_scores_TG = choice_TGe.amax(dim=-1)
            keep_TG = torch.zeros_like(group_scores_TG, dtype=torch.bool)
            keep_TG.scatter_(1, group_scores_TG.topk(c.topk_group, dim=-1, sorted=False).indices, True)
            choice_TE = choice_TGe.masked_fill(~keep_TG[..., None], float("-inf")).view(T, -1)
        expert_ids_TK = choice_TE.topk(c.num_experts_per_tok, dim=-1, sorted=False).indices
        weights_TK = scores_TE.gather(1, expert_ids_TK)
        if c.norm_topk_prob and c.num_experts_per_tok > 1:
            weights_TK = weights_TK / (weights_TK.sum(dim=-1, keepdim=True) + 1e-20)
        return weights_TK * c.routed_scaling_factor, expert_ids_TK

    def forward(self, x_TD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.select(self.scores(x_TD))


class Experts(nn.Module):
    """All routed experts of one layer, stacked: gate and up fused, as in transformers 5."""

    def __init__(self, config: MoEConfig) -> None:
        super().__init__()
        assert config.n_routed_experts is not None
        E, D, I = config.n_routed_experts, config.hidden_size, config.moe_intermediate_size
        self.num_experts = E
        self.gate_up_proj = nn.Parameter(torch.empty(E, 2 * I, D))
        self.down_proj = nn.Parameter(torch.empty(E, D, I))

    def forward_looped(
        self, x_TD: torch.Tensor, weights_TK: torch.Tensor, expert_ids_TK: torch.Tensor
    ) -> torch.Tensor:
        """Reference: for each expert, the tokens that chose it, one at a time."""
        out_TD = torch.zeros_like(x_TD)
        for expert in range(self.num_experts):
            token_idx, slot = torch.where(expert_ids_TK == expert)
            if token_idx.numel() == 0:
                continue
            y = self._expert(x_TD[token_idx], expert) * weights_TK[token_idx, slot, None]
            out_TD.index_add_(0, token_idx, y.to(x_TD.dtype))
        return out_TD

    def _expert(self, x: torch.Tensor, expert: int) -> torch.Tensor:
        gate, up = F.linear(x, self.gate_up_proj[expert]).chunk(2, dim=-1)
        return F.linear(F.silu(gate) * up, self.down_proj[expert])

    def forward_grouped(
        self, x_TD: torch.Tensor, weights_TK: torch.Tensor, expert_ids_TK: torch.Tensor
    ) -> torch.Tensor:
        """Sort the N token-expert pairs by expert, run each expert once on its contiguous rows."""
        T, K = expert_ids_TK.shape
        flat_ids_N = expert_ids_TK.reshape(-1)
        order_N = flat_ids_N.argsort(stable=True)
        counts_E = torch.bincount(flat_ids_N, minlength=self.num_experts)
        x_ND = x_TD[order_N // K]
        h_N2I = grouped_matmul(x_ND, self.gate_up_proj, counts_E)
        gate, up = h_N2I.chunk(2, dim=-1)
        y_ND = grouped_matmul(F.silu(gate) * up, self.down_proj, counts_E)
        y_ND = y_ND * weights_TK.reshape(-1)[order_N, None].to(y_ND.dtype)
        out_ND = torch.empty_like(y_ND)
        out_ND[order_N] = y_ND  # back to (token, slot) order: a plain sum, no atomics
        return out_ND.view(T, K, -1).sum(dim=1)


def grouped_matmul(x_ND: torch.Tensor, w_EOI: torch.Tensor, counts_E: torch.Tensor) -> torch.Tensor:
    """Rows of x sorted by expert (counts_E rows each) times that expert's weight, transposed."""
    if _fused_grouped_mm_ok(x_ND, w_EOI):
        offsets_E = counts_E.cumsum(0).to(torch.int32)
        return F.grouped_mm(x_ND, w_EOI.transpose(1, 2), offs=offsets_E)
    counts = counts_E.tolist()  # one host sync per call
    if torch.is_grad_enabled() and (x_ND.requires_grad or w_EOI.requires_grad):
        pieces = [x.mm(w_EOI[e].t()) for e, x in enumerate(x_ND.split(counts)) if counts[e]]
        return torch.cat(pieces) if pieces else x_ND.new_zeros(0, w_EOI.shape[1])
    out_NO = x_ND.new_empty(x_ND.shape[0], w_EOI.shape[1])
    start = 0
    for expert, count in enumerate(counts):
        if count:  # mm into a slice of the output: no concatenation copy
            torch.mm(x_ND[start : start + count], w_EOI[expert].t(), out=out_NO[start : start + count])
            start += count
    return out_NO


def _fused_grouped_mm_ok(x: torch.Tensor, w: torch.Tensor) -> bool:
    # torch's grouped GEMM: CUDA (sm80+) in bfloat16; elsewhere the per-expert loop is as fast.
    return (
        x.is_cuda
        and x.dtype == torch.bfloat16
        and w.dtype == torch.bfloat16
        and hasattr(F, "grouped_mm")
        and torch.cuda.get_device_capability(x.device) >= (8, 0)
        and not torch.is_grad_enabled()
    )


class MoE(nn.Module):
    """Routed experts plus shared experts. Counts tokens per expert for load balancing."""

    tokens_per_expert: torch.Tensor  # [E], tokens routed since the last reset

    def __init__(self, config: MoEConfig) -> None:
        super().__init__()
        assert config.n_routed_experts is not None
        self.config = config
        self.gate = Router(config)
        self.experts = Experts(config)
        self.shared_experts = (
            MLP(config, config.moe_intermediate_size * config.n_shared_experts)
            if config.n_shared_experts
            else None
        )
        self.dispatch: Dispatch = "grouped"
        self.register_buffer(
            "tokens_per_expert", torch.zeros(config.n_routed_experts, dtype=torch.float32), persistent=False
        )
        self.balance_loss: torch.Tensor | None = None

    def reset_buffers(self) -> None:
        self.tokens_per_expert = torch.zeros_like(self.tokens_per_expert)

    def forward(self, x_BTD: torch.Tensor) -> torch.Tensor:
        B, T, D = x_BTD.shape
        x_TD = x_BTD.reshape(B * T, D)
        scores_TE = self.gate.scores(x_TD)
        weights_TK, expert_ids_TK = self.gate.select(scores_TE)
        with torch.no_grad():
            self.tokens_per_expert += torch.bincount(
                expert_ids_TK.reshape(-1), minlength=self.experts.num_experts
            ).float()
        if self.training and self.config.aux_loss_alpha > 0:
            self.balance_loss = self._sequence_balance_loss(
                scores_TE.view(B, T, -1), expert_ids_TK.view(B, T, -1)
            )
        run = self.experts.forward_grouped if self.dispatch == "grouped" else self.experts.forward_looped
        out_TD = run(x_TD, weights_TK.to(x_TD.dtype), expert_ids_TK)
        if self.shared_experts is not None:
            out_TD = out_TD + self.shared_experts(x_TD)
        return out_TD.view(B, T, D)

    def _sequence_balance_loss(self, scores_BTE: torch.Tensor, expert_ids_BTK: torch.Tensor) -> torch.Tensor:
        """Sequence-wise balance loss of DeepSeek-V3 (eq. 17-20): alpha * sum_e f_e * P_e per sequence."""
        B, T, E = scores_BTE.shape
        K = expert_ids_BTK.shape[-1]
        chosen_BE = torch.zeros(B, E, device=scores_BTE.device).scatter_add_(
            1, expert_ids_BTK.reshape(B, -1), torch.ones(B, T * K, device=scores_BTE.device)
        )
        f_BE = chosen_BE * E / (K * T)
        normalised_BTE = scores_BTE / scores_BTE.sum(-1, keepdim=True)
        p_BE = normalised_BTE.mean(dim=1)
        return self.config.aux_loss_alpha * (f_BE * p_BE).sum(-1).mean()


def moe_layers(model: nn.Module) -> list[tuple[str, MoE]]:
    return [(name, module) for name, module in model.named_modules() if isinstance(module, MoE)]


@torch.no_grad()
def update_expert_bias(model: nn.Module, *, rate: float = 1e-3) -> None:
    """Auxiliary-loss-free balancing: raise the bias of under-loaded experts, lower over-loaded ones.

    b_e += rate * sign(mean_load - load_e), from the tokens counted since the last update; the
    counts are then reset. Call it after each optimiser step (DeepSeek-V3 uses rate 1e-3).
    """
    for name, layer in moe_layers(model):
        if not layer.gate.uses_bias:
            raise ValueError(f"{name}: topk_method {layer.config.topk_method!r} has no correction bias")
        load_E = layer.tokens_per_expert
        layer.gate.e_score_correction_bias += rate * torch.sign(load_E.mean() - load_E)
        load_E.zero_()


@torch.no_grad()
def expert_load_stats(model: nn.Module, *, reset: bool = False) -> list[dict[str, str | float]]:
    """Per MoE layer: tokens routed, max/mean load and coefficient of variation of the load."""
    stats: list[dict[str, str | float]] = []
    for name, layer in moe_layers(model):
        load_E = layer.tokens_per_expert
        mean = load_E.mean().item()
        stats.append(
            {
                "layer": name,
                "tokens": load_E.sum().item(),
                "max_over_mean": load_E.max().item() / mean if mean else 0.0,
                "cv": load_E.std(unbiased=False).item() / mean if mean else 0.0,
            }
        )
        if reset:
            load_E.zero_()
    return stats
