"""DeepSeekMoE: router, routed experts (looped reference, grouped and dense dispatch), shared experts.

- `Router` scores each token against every routed expert (softmax or sigmoid), keeps the best
  `topk_group` groups of experts (DeepSeek-V3: a group scores the sum of its top two), and picks
  `num_experts_per_tok` experts. With `topk_method="noaux_tc"` an `e_score_correction_bias`
  shifts the choice but not the weights: the auxiliary-loss-free balancing of DeepSeek-V3
  (https://arxiv.org/abs/2412.19437, sec. 2.1.2).
- `Experts` holds every routed expert stacked, as transformers 5 does ([E, 2I, D] and [E, D, I]).
  `forward_looped` is the plain reference; `forward_grouped` sorts token-expert pairs by expert
  and runs one matmul per expert over contiguous rows (or torch's grouped matmul where it runs).
  `forward_dense` runs every expert on every token with no host sync, for `torch.export`/ONNX.
- Load balancing: `MoE` counts tokens per expert as it runs; `update_expert_bias` applies the
  sign update from those counts, `expert_load_stats` reports them, and `MoE.balance_loss` is the
  optional sequence-wise balance loss.

Legend: B batch, T tokens, D hidden size, E routed experts, K experts per token, G groups,
I expert intermediate size, N = T * K token-expert pairs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from .config import MoEConfig
from .linear import Linear, few_rows_pay, linear

Dispatch = Literal["grouped", "looped", "dense"]
FEW_PAIRS_MAX_CPU_BYTES = 1 << 20  # measured on a 2-core AVX-512 Xeon: see benchmarks/moe_layer.py


class MLP(nn.Module):
    """SwiGLU feed-forward: dense layers and shared experts."""

    def __init__(self, config: MoEConfig, intermediate_size: int) -> None:
        super().__init__()
        d, bias = config.hidden_size, config.mlp_bias
        self.gate_proj = Linear(d, intermediate_size, bias=bias)
        self.up_proj = Linear(d, intermediate_size, bias=bias)
        self.down_proj = Linear(intermediate_size, d, bias=bias)

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
        self.params_per_expert = 3 * I * D
        self.gate_up_proj = nn.Parameter(torch.empty(E, 2 * I, D))
        self.down_proj = nn.Parameter(torch.empty(E, D, I))
        self.bfloat16_from_pairs: int | None = None  # see use_bfloat16_experts
        # name -> ((the weight's storage, its version), its bfloat16 copy)
        self._bfloat16_copies: dict[str, tuple[tuple[int, int], torch.Tensor]] = {}

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

    def forward_dense(
        self, x_TD: torch.Tensor, weights_TK: torch.Tensor, expert_ids_TK: torch.Tensor
    ) -> torch.Tensor:
        """Every expert on every token, combined by a [T, E] weight matrix that is zero for the
        experts a token did not choose: the grouped result up to float rounding, with static
        shapes, no host sync and no data-dependent branch, so `torch.export` and ONNX can trace it.

        It costs E/K times the routed experts' FLOPs: for export, and for small bfloat16 inference
        steps on CPU, where it takes fewer matmul calls (use_dense_experts).
        """
        T, E = x_TD.shape[0], self.num_experts
        weights_TE = weights_TK.new_zeros(T, E).scatter(1, expert_ids_TK, weights_TK)
        # Two matmuls over all experts at once: [T, D] x [D, E*2I], then [T, E*I] x [E*I, D]
        # (ONNX Runtime runs these faster than the same products written as einsums).
        h_TE2I = F.linear(x_TD, self.gate_up_proj.flatten(0, 1)).view(T, E, -1)
        gate, up = h_TE2I.chunk(2, dim=-1)
        h_TEI = F.silu(gate) * up * weights_TE[..., None]
        return F.linear(h_TEI.flatten(1), self.down_proj.transpose(0, 1).flatten(1))

    def project(self, rows: SortedRows, x_ND: torch.Tensor, weight: str) -> torch.Tensor:
        """x's rows (sorted by expert) through `gate_up_proj` or `down_proj` of their expert."""
        w_EOI = getattr(self, weight)
        if x_ND.dtype == torch.bfloat16 and w_EOI.dtype == torch.float32 and self.bfloat16_from_pairs:
            return rows.matmul(x_ND, self._bfloat16_copy(weight, w_EOI))  # see _bfloat16_pays
        return rows.matmul(x_ND, w_EOI)

    def _bfloat16_pays(self, x_TD: torch.Tensor, pairs: int) -> bool:
        """Whether this step's experts run in bfloat16 (use_bfloat16_experts)."""
        threshold = self.bfloat16_from_pairs
        return (
            threshold is not None
            and pairs >= threshold
            and x_TD.device.type == "cpu"
            and x_TD.dtype == self.gate_up_proj.dtype == torch.float32
            and not torch.is_grad_enabled()
        )

    def _bfloat16_copy(self, name: str, w_EOI: torch.Tensor) -> torch.Tensor:
        """A bfloat16 copy of a weight, made again whenever the weight changes (in place or not)."""
        key = (w_EOI.data_ptr(), w_EOI._version)
        cached = self._bfloat16_copies.get(name)
        if cached is None or cached[0] != key:
            cached = (key, w_EOI.detach().bfloat16())
            self._bfloat16_copies[name] = cached
        return cached[1]

    def _expert(self, x: torch.Tensor, expert: int) -> torch.Tensor:
        gate, up = F.linear(x, self.gate_up_proj[expert]).chunk(2, dim=-1)
        return F.linear(F.silu(gate) * up, self.down_proj[expert])

    def forward_grouped(
        self,
        x_TD: torch.Tensor,
        weights_TK: torch.Tensor,
        expert_ids_TK: torch.Tensor,
        *,
        counts_E: torch.Tensor,
    ) -> torch.Tensor:
        """Sort the N token-expert pairs by expert; each expert then runs once on contiguous rows.

        `counts_E`: how many pairs each expert got.
        """
        T, K = expert_ids_TK.shape
        flat_ids_N = expert_ids_TK.reshape(-1)
        order_N = flat_ids_N.argsort(stable=True)
        token_N = order_N // K
        rows = SortedRows.build(flat_ids_N[order_N], counts_E)
        # In bfloat16, the tokens are cast once, before they are gathered K times.
        half = self._bfloat16_pays(x_TD, T * K)
        source_TD = x_TD.bfloat16() if half else x_TD
        h_N2I = self.project(rows, source_TD.index_select(0, token_N), "gate_up_proj")
        gate, up = h_N2I.chunk(2, dim=-1)
        # The routing weight scales the narrow [N, I] activation rather than the [N, D] output.
        h_NI = F.silu(gate) * up * weights_TK.reshape(-1)[order_N, None].to(h_N2I.dtype)
        y_ND = self.project(rows, h_NI, "down_proj")
        if half:  # summed in float32
            return x_TD.new_zeros(x_TD.shape).index_add_(0, token_N, y_ND.float())
        if x_TD.is_cuda:  # index_add_ would use atomics: keep the sum deterministic
            out_ND = torch.empty_like(y_ND)
            out_ND[order_N] = y_ND
            return out_ND.view(T, K, -1).sum(dim=1)
        return y_ND.new_zeros(x_TD.shape).index_add_(0, token_N, y_ND)  # y's dtype: bf16 under autocast


@dataclass
class SortedRows:
    """Token-expert pairs sorted by expert: how to multiply each expert's rows by its weight."""

    counts: list[int]  # rows per expert
    counts_E: torch.Tensor
    expert_N: torch.Tensor  # expert of each sorted row
    slot_N: torch.Tensor  # position of each row within its expert's rows

    @classmethod
    def build(cls, sorted_ids_N: torch.Tensor, counts_E: torch.Tensor) -> SortedRows:
        starts_E = counts_E.cumsum(0) - counts_E
        slot_N = torch.arange(sorted_ids_N.numel(), device=sorted_ids_N.device) - starts_E[sorted_ids_N]
        return cls(counts_E.tolist(), counts_E, sorted_ids_N, slot_N)  # tolist: one host sync

    def matmul(self, x_ND: torch.Tensor, w_EOI: torch.Tensor) -> torch.Tensor:
        """x_ND (rows sorted by expert) times each row's expert weight, transposed: [N, O]."""
        if x_ND.is_cuda and x_ND.dtype == torch.bfloat16 and hasattr(F, "grouped_mm"):
            offsets_E = self.counts_E.cumsum(0).to(torch.int32)
            return F.grouped_mm(x_ND, w_EOI.transpose(1, 2), offs=offsets_E)
        capacity = max(self.counts)
        if x_ND.dtype in (torch.bfloat16, torch.float16) and capacity * len(self.counts) <= 2 * x_ND.shape[0]:
            # CPU half precision: a matmul call costs ~30 us whatever its size, so one padded
            # batched matmul over all experts beats one call per expert.
            padded_ECI = x_ND.new_zeros(len(self.counts), capacity, x_ND.shape[1])
            padded_ECI[self.expert_N, self.slot_N] = x_ND
            return torch.bmm(padded_ECI, w_EOI.transpose(1, 2))[self.expert_N, self.slot_N]
        if torch.is_grad_enabled() and (x_ND.requires_grad or w_EOI.requires_grad):
            # unbind, not w_EOI[e]: indexing's backward fills a zero gradient of the whole stack
            # for every expert (E full-size fills); unbind's stacks the E slices once.
            w_list = w_EOI.unbind(0)
            pieces = [x.mm(w_list[e].t()) for e, x in enumerate(x_ND.split(self.counts)) if self.counts[e]]
            return torch.cat(pieces)
        out_NO = x_ND.new_empty(x_ND.shape[0], w_EOI.shape[1])
        start = 0
        for expert, count in enumerate(self.counts):
            if count:  # mm into a slice of the output: no concatenation copy
                rows = slice(start, start + count)
                if few_rows_pay(count, x_ND):  # core_model.linear's layout for a few rows
                    out_NO[rows] = linear(x_ND[rows], w_EOI[expert])
                else:
                    torch.mm(x_ND[rows], w_EOI[expert].t(), out=out_NO[rows])
                start += count
        return out_NO


def use_bfloat16_experts(model: nn.Module, *, from_pairs: int | None) -> None:
    """The routed experts of `model` multiply a step of at least `from_pairs` token-expert pairs
    through bfloat16 copies of their float32 weights (made on first use: half the experts' size
    again), with float32 activations in and out; on CPU, without gradients. On a CPU that multiplies
    bfloat16 natively a prefill chunk's experts then run about twice as fast (the padded bmm of
    SortedRows.matmul: one call for all experts), while decode steps, a few pairs per expert,
    keep the float32 weights. None turns it off and frees the copies."""
    for module in model.modules():
        if isinstance(module, Experts) and module.gate_up_proj.is_floating_point():  # not int8
            module.bfloat16_from_pairs = from_pairs
            if from_pairs is None:
                module._bfloat16_copies.clear()


def use_dense_experts(model: nn.Module, *, up_to_tokens: int | None) -> None:
    """Every MoE layer of `model` runs a step of at most `up_to_tokens` tokens through every routed
    expert (Experts.forward_dense: two matmuls for all experts) instead of grouping the tokens by
    expert; on CPU, without gradients. None turns it off.

    For bfloat16 encoders serving a few messages at a time: E/K times the FLOPs, but two matmul
    calls where the grouped dispatch makes up to two per expert, and a bfloat16 matmul call costs
    tens of microseconds whatever its size. The customer-service slot and intent models (bfloat16,
    one thread, a CPU with AMX) read 1 to 8 messages 4-26% faster this way, level at 16 messages
    (~300 tokens) and slower past it; in float32 the dense form is slower from 4 messages on.
    """
    for module in model.modules():
        if isinstance(module, MoE):
            module.dense_up_to_tokens = up_to_tokens


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
        self.dense_up_to_tokens: int | None = None  # see use_dense_experts
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
        flat_ids_N = expert_ids_TK.reshape(-1)
        # scatter_add_, not bincount: E counts whatever the ids, so torch.export sees no
        # data-dependent size. It keeps the add_ as a buffer mutation; an ONNX graph holds no
        # state, so the exported model drops it. Integer counts: nothing for autograd to track.
        counts_E = flat_ids_N.new_zeros(self.experts.num_experts).scatter_add_(
            0, flat_ids_N, torch.ones_like(flat_ids_N)
        )
        self.tokens_per_expert.add_(counts_E)
        if self.training and self.config.aux_loss_alpha > 0:
            self.balance_loss = self._sequence_balance_loss(
                scores_TE.view(B, T, -1), expert_ids_TK.view(B, T, -1)
            )
        weights_TK = weights_TK.to(x_TD.dtype)
        if self.dispatch == "dense" or self._dense_pays(x_TD):
            out_TD = self.experts.forward_dense(x_TD, weights_TK, expert_ids_TK)
        elif self.dispatch == "looped":
            out_TD = self.experts.forward_looped(x_TD, weights_TK, expert_ids_TK)
        elif self._few_pairs_pays(x_TD, expert_ids_TK):
            return self._few_pairs(x_TD, weights_TK, expert_ids_TK).view(B, T, D)
        else:
            out_TD = self.experts.forward_grouped(x_TD, weights_TK, expert_ids_TK, counts_E=counts_E)
        if self.shared_experts is not None:
            out_TD = out_TD + self.shared_experts(x_TD)
        return out_TD.view(B, T, D)

    def _dense_pays(self, x_TD: torch.Tensor) -> bool:
        """A small inference step on CPU with use_dense_experts on."""
        limit = self.dense_up_to_tokens
        return (
            limit is not None
            and x_TD.shape[0] <= limit
            and x_TD.device.type == "cpu"
            and not torch.is_grad_enabled()
        )

    def _few_pairs_pays(self, x_TD: torch.Tensor, expert_ids_TK: torch.Tensor) -> bool:
        """Decode-sized batches, where launching a matmul costs more than copying its weights.

        On CUDA that holds for any expert size. On CPU it holds in half precision (a small
        oneDNN bfloat16 matmul costs ~25 us, float32 ~5 us) while the copied weights stay small.
        """
        if not (x_TD.is_cuda or x_TD.dtype != torch.float32):
            return False
        if not self.experts.gate_up_proj.is_floating_point():  # quantised experts: no gather path
            return False
        if expert_ids_TK.numel() >= self.experts.num_experts or not self._plain_shared_experts():
            return False
        copied = expert_ids_TK.numel() * self.experts.params_per_expert * x_TD.element_size()
        return x_TD.is_cuda or copied <= FEW_PAIRS_MAX_CPU_BYTES

    def _plain_shared_experts(self) -> bool:
        """True when the shared experts' weights can be read directly (no adapter wraps them)."""
        shared = self.shared_experts
        if shared is None:
            return True
        linears = (shared.gate_proj, shared.up_proj, shared.down_proj)
        return all(type(m) is Linear and m.bias is None for m in linears)

    def _few_pairs(
        self, x_TD: torch.Tensor, weights_TK: torch.Tensor, expert_ids_TK: torch.Tensor
    ) -> torch.Tensor:
        """Gather just the chosen experts' weights, with the shared experts as extra experts of
        weight 1, and run the whole layer as two batched matmuls (gpt-fast's batch-1 trick).

        Rows: the T*K routed pairs, then T*S shared pairs. Each weight is copied once, straight
        into one buffer per projection.
        """
        T, K = expert_ids_TK.shape
        N, S = T * K, (self.config.n_shared_experts or 0) if self.shared_experts is not None else 0
        experts = self.experts
        gate_up = experts.gate_up_proj.new_empty(N + T * S, *experts.gate_up_proj.shape[1:])
        down = experts.down_proj.new_empty(N + T * S, *experts.down_proj.shape[1:])
        flat_ids_N = expert_ids_TK.reshape(-1)
        torch.index_select(experts.gate_up_proj, 0, flat_ids_N, out=gate_up[:N])
        torch.index_select(experts.down_proj, 0, flat_ids_N, out=down[:N])
        rows_x = [x_TD.repeat_interleave(K, dim=0)]
        if S:
            self._copy_shared_as_experts(
                gate_up[N:].view(T, S, *gate_up.shape[1:]), down[N:].view(T, S, *down.shape[1:])
            )
            rows_x.append(x_TD.repeat_interleave(S, dim=0))
        h = torch.bmm(torch.cat(rows_x).unsqueeze(1), gate_up.transpose(1, 2))
        gate, up = h.chunk(2, dim=-1)
        h = F.silu(gate) * up
        h[:N] *= weights_TK.reshape(-1, 1, 1)
        y = torch.bmm(h, down.transpose(1, 2)).squeeze(1)
        out_TD = y[:N].view(T, K, -1).sum(dim=1)
        return out_TD + y[N:].view(T, S, -1).sum(dim=1) if S else out_TD

    def _copy_shared_as_experts(self, gate_up_TS2ID: torch.Tensor, down_TSDI: torch.Tensor) -> None:
        """The shared SwiGLU of width S * I is S experts of width I (it is separable over units)."""
        assert self.shared_experts is not None
        T, S, two_I, D = gate_up_TS2ID.shape
        I = two_I // 2
        gate_up_TS2ID[:, :, :I] = self.shared_experts.gate_proj.weight.view(S, I, D)
        gate_up_TS2ID[:, :, I:] = self.shared_experts.up_proj.weight.view(S, I, D)
        down_TSDI.copy_(
            self.shared_experts.down_proj.weight.view(D, S, I).transpose(0, 1).expand(T, -1, -1, -1)
        )

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


@contextmanager
def moe_dispatch(model: nn.Module, dispatch: Dispatch) -> Iterator[None]:
    """Every MoE layer of `model` runs with `dispatch` inside the block, and gets its own back after:

    with moe_dispatch(model, "dense"):
        torch.onnx.export(model, ...)
    """
    if dispatch not in get_args(Dispatch):
        raise ValueError(f"dispatch must be one of {get_args(Dispatch)}, got {dispatch!r}")
    layers = [layer for _, layer in moe_layers(model)]
    saved = [layer.dispatch for layer in layers]
    for layer in layers:
        layer.dispatch = dispatch
    try:
        yield
    finally:
        for layer, previous in zip(layers, saved, strict=True):
            layer.dispatch = previous


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
