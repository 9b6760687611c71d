"""Random LoRA adapters (PEFT's on-disk format) for the engine and server tests."""

from pathlib import Path

import torch

from core_model.engine.lora import save_adapter


def write_adapter(directory: Path, model: torch.nn.Module, targets, *, seed: int, rank=4, alpha=8) -> Path:
    """A LoRA for `model` on the linears whose names end with `targets`, with non-zero B (as
    after training), so that it changes what the model says."""
    generator = torch.Generator().manual_seed(seed)
    weights = {}
    for name, module in model.named_modules():
        linear = getattr(module, "base", module)  # a linear the engine wrapped for another adapter
        if name.endswith(tuple(targets)) and isinstance(linear, torch.nn.Linear):
            a = torch.randn(rank, linear.in_features, generator=generator) * 0.3
            b = torch.randn(linear.out_features, rank, generator=generator) * 0.3
            weights[name] = (a, b)
    return save_adapter(directory, weights, rank=rank, alpha=alpha)
