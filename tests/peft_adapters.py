"""Writes LoRA adapters in PEFT's on-disk format for the engine and server tests."""

import json
from pathlib import Path

import torch
from safetensors.torch import save_file


def write_adapter(directory: Path, model: torch.nn.Module, targets, *, seed: int, rank=4, alpha=8) -> Path:
    """A LoRA for `model` on the linears whose names end with `targets`, with non-zero B (as
    after training), so that it changes what the model says."""
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, module in model.named_modules():
        linear = getattr(module, "base", module)  # a linear the engine wrapped for another adapter
        if not name.endswith(tuple(targets)) or not isinstance(linear, torch.nn.Linear):
            continue
        key = f"base_model.model.{name}"
        tensors[f"{key}.lora_A.weight"] = torch.randn(rank, linear.in_features, generator=generator) * 0.3
        tensors[f"{key}.lora_B.weight"] = torch.randn(linear.out_features, rank, generator=generator) * 0.3
    directory.mkdir(parents=True, exist_ok=True)
    save_file(tensors, directory / "adapter_model.safetensors")
    config = {"peft_type": "LORA", "r": rank, "lora_alpha": alpha, "target_modules": list(targets)}
    (directory / "adapter_config.json").write_text(json.dumps(config))
    return directory
