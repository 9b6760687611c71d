"""LoRA for training: wrap a model's linears in `LoRALinear`, train only the low-rank factors.

    names = inject_lora(model, targets=DEFAULT_TARGETS, rank=8, alpha=16, dropout=0.05)
    ... train: only lora_A / lora_B require grad ...
    weights = lora_weights(model)          # {module name: (A [r, I], B [O, r])} for save_adapter
    merge_lora(model)                      # W += (alpha / r) * B @ A; plain nn.Linear again

A wrapped linear computes `base(x) + scale * B(A(dropout(x)))` (Hu et al. 2021,
https://arxiv.org/abs/2106.09685), initialised as PEFT does: A kaiming-uniform, B zero, so an
injected model starts exactly equal to its base. Module names do not change: the wrapper sits
where the linear was, so `lora_weights` names are the PEFT target names.

This is the trainer's LoRA (one adapter, autograd). Serving many adapters in one batch is the
engine's `MultiLoRALinear` (core_model/engine/lora.py); the file format is its `save_adapter`.

Legend: I in features, O out features, r rank.
"""

from __future__ import annotations

import math

import torch
from torch import nn

# MLA projections plus the SwiGLU linears of shared experts and dense layers. Routed experts are
# stacked 3-D parameters, not linears, so no name here reaches them.
# NOTE: `kv_b_proj` is left out on purpose: the engine's absorbed MLA decode reads its weight
# directly (it never calls the module), so a LoRA there would be ignored when served.
DEFAULT_TARGETS: tuple[str, ...] = (
    "q_proj",  # present when q_lora_rank is None (DeepSeek-V2-Lite)
    "q_a_proj",  # present when q_lora_rank is set (DeepSeek-V3) ...
    "q_b_proj",  # ... together with this one
    "kv_a_proj_with_mqa",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
)
# A model has either the direct query projection or the low-rank pair, never both: a target of
# one form that matches nothing is fine when the other form is present.
_QUERY_FORMS = {"q_proj": ("q_a_proj", "q_b_proj"), "q_a_proj": ("q_proj",), "q_b_proj": ("q_proj",)}
_REFUSED = {
    "kv_b_proj": "the engine's absorbed MLA decode reads kv_b_proj.weight directly and would ignore it",
    "lm_head": "the engine runs lm_head on last tokens only and does not apply LoRA there",
}


class LoRALinear(nn.Module):
    """A frozen `nn.Linear` plus a trainable low-rank update: y = base(x) + scale * B(A(dropout(x)))."""

    def __init__(self, base: nn.Linear, *, rank: int, alpha: float, dropout: float = 0.0) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {dropout}")
        self.base = base
        self.base.requires_grad_(False)
        self.rank, self.alpha = rank, alpha
        self.scale = alpha / rank
        factory = dict(device=base.weight.device, dtype=base.weight.dtype)
        self.lora_A = nn.Linear(base.in_features, rank, bias=False, **factory)  # weight [r, I]
        self.lora_B = nn.Linear(rank, base.out_features, bias=False, **factory)  # weight [O, r]
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.reset_lora()

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    @torch.no_grad()
    def reset_lora(self) -> None:
        """PEFT's default: A kaiming-uniform (a = sqrt(5), as nn.Linear), B zero, so the delta is 0."""
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.lora_B(self.lora_A(self.dropout(x))) * self.scale

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        """The base linear with W + scale * B @ A folded in (the base module itself, updated)."""
        delta_OI = (self.lora_B.weight.float() @ self.lora_A.weight.float()) * self.scale
        self.base.weight += delta_OI.to(self.base.weight.dtype)
        return self.base


def matches(module_name: str, target: str) -> bool:
    """PEFT's rule for a target given as a name: the module name equals it or ends with '.' + it."""
    return module_name == target or module_name.endswith("." + target)


def inject_lora(
    model: nn.Module, *, targets: tuple[str, ...] | list[str], rank: int, alpha: float, dropout: float = 0.0
) -> list[str]:
    """Wrap every `nn.Linear` matching a target in `LoRALinear` and freeze everything else.

    Returns the wrapped module names. Raises ValueError for a target that matches no linear
    (see `_QUERY_FORMS` for the one allowed exception), matches a non-linear module, or names
    a refused module (`kv_b_proj`, `lm_head`), and for a model that already holds LoRA.
    """
    if not targets:
        raise ValueError("inject_lora needs at least one target module name")
    modules = dict(model.named_modules())
    if any(isinstance(m, LoRALinear) for m in modules.values()):
        raise ValueError("this model already holds LoRA layers; load a fresh base model to inject again")
    chosen: list[str] = []
    hits: dict[str, int] = {target: 0 for target in targets}
    for name, module in modules.items():
        hit = [t for t in targets if matches(name, t)]
        if not hit:
            continue
        leaf = name.rsplit(".", 1)[-1]
        if leaf in _REFUSED:
            raise ValueError(f"LoRA on {name} is not supported: {_REFUSED[leaf]}")
        if not isinstance(module, nn.Linear):
            raise ValueError(
                f"target {hit[0]!r} matches {name}, a {type(module).__name__}, not an nn.Linear "
                "(routed experts are stacked parameters and cannot take LoRA)"
            )
        for target in hit:
            hits[target] += 1
        chosen.append(name)
    _check_every_target_matched(hits, modules)
    model.requires_grad_(False)
    for name in chosen:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, LoRALinear(getattr(parent, child), rank=rank, alpha=alpha, dropout=dropout))
    return chosen


def _check_every_target_matched(hits: dict[str, int], modules: dict[str, nn.Module]) -> None:
    def present(target: str) -> bool:
        return any(matches(name, target) for name in modules)

    missing = [t for t, n in hits.items() if n == 0 and not any(map(present, _QUERY_FORMS.get(t, ())))]
    if missing:
        linears = sorted({n.rsplit(".", 1)[-1] for n, m in modules.items() if isinstance(m, nn.Linear)})
        raise ValueError(
            f"LoRA target(s) {missing} match no module of the model; "
            f"its linear layers are named: {', '.join(linears)}"
        )


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def lora_weights(model: nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{module name: (A [r, I], B [O, r])}, detached, in the form `save_adapter` writes."""
    layers = lora_layers(model)
    if not layers:
        raise ValueError("this model holds no LoRA layers; call inject_lora first")
    return {name: (m.lora_A.weight.detach(), m.lora_B.weight.detach()) for name, m in layers.items()}


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every LoRA into its base weight and put the plain nn.Linear back; returns `model`.

    The result has the original module names and no LoRA (save it with `save_model` to export a
    merged checkpoint). Base parameters stay frozen.
    """
    for name, layer in lora_layers(model).items():
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, layer.merged())
    return model
