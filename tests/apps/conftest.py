"""A LoRA adapter for the tiny checkpoint (tests/conftest.py), as `--adapter NAME=DIR` expects.

.venv/bin/python -m pytest tests/apps -q
"""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from core_model import load_model


@pytest.fixture(scope="session")
def adapter(checkpoint, tmp_path_factory) -> Path:
    """A rank-2 LoRA on the first layer's o_proj, in PEFT's format."""
    name = "model.layers.0.self_attn.o_proj"
    linear = load_model(str(checkpoint)).get_submodule(name)
    directory = tmp_path_factory.mktemp("adapter")
    generator = torch.Generator().manual_seed(0)
    tensors = {
        f"base_model.model.{name}.lora_A.weight": torch.randn(2, linear.in_features, generator=generator),
        f"base_model.model.{name}.lora_B.weight": torch.randn(linear.out_features, 2, generator=generator),
    }
    save_file(tensors, directory / "adapter_model.safetensors")
    (directory / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 2}))
    return directory
