"""The optimiser and learning-rate schedule every training loop here uses.

    optimizer = adamw(model, lr=3e-3, weight_decay=0.1)
    schedule = warmup_cosine(optimizer, warmup_steps=100, total_steps=2000)
    ... optimizer.step(); schedule.step()

Norms, biases, embeddings and the routers' correction biases are not decayed: decaying them
pulls gains and lookup rows toward zero for no regularising benefit.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

NO_DECAY_SUFFIXES = ("norm.weight", ".bias", "embed_tokens.weight", "e_score_correction_bias")


def parameter_groups(model: nn.Module, *, weight_decay: float) -> list[dict]:
    """Two AdamW groups: matrices (decayed) and everything in NO_DECAY_SUFFIXES (not decayed)."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if name.endswith(NO_DECAY_SUFFIXES) or param.dim() < 2 else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def adamw(
    model: nn.Module, *, lr: float, weight_decay: float = 0.1, betas: tuple[float, float] = (0.9, 0.95)
) -> torch.optim.AdamW:
    return torch.optim.AdamW(parameter_groups(model, weight_decay=weight_decay), lr=lr, betas=betas)


def warmup_cosine_factor(step: int, *, warmup_steps: int, total_steps: int, min_ratio: float = 0.1) -> float:
    """Linear warm-up from ~0 to 1 over `warmup_steps`, then cosine decay to `min_ratio` at `total_steps`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine(
    optimizer: torch.optim.Optimizer, *, warmup_steps: int, total_steps: int, min_ratio: float = 0.1
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: warmup_cosine_factor(
            step, warmup_steps=warmup_steps, total_steps=total_steps, min_ratio=min_ratio
        ),
    )


def clip_gradients(parameters: Iterable[torch.Tensor], max_norm: float) -> float:
    """Clip to `max_norm` (0 disables) and return the norm before clipping."""
    params = [p for p in parameters if p.grad is not None]
    if max_norm <= 0:
        return float(torch.nn.utils.get_total_norm([p.grad for p in params])) if params else 0.0  # type: ignore[misc]
    return float(torch.nn.utils.clip_grad_norm_(params, max_norm))
