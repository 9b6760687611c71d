"""A tiny checkpoint directory with its tokenizer, as `verticals serve --model DIR` expects, and a
LoRA adapter for it, as `--adapter NAME=DIR` expects.

.venv/bin/python -m pytest tests/apps -q
"""

import json
import string
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from core_model import MoEConfig, MoEForCausalLM, load_model, save_model, train_tokenizer


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    corpus = [Path(module.__file__).read_text(encoding="utf-8") for module in (json, textwrap, string)]
    tokenizer = train_tokenizer(corpus, vocab_size=300)
    model = MoEForCausalLM(MoEConfig.preset("tiny").replace(vocab_size=tokenizer.vocab_size))
    model.init_weights()
    directory = tmp_path_factory.mktemp("checkpoint")
    save_model(model, directory)
    tokenizer.save(directory)
    return directory


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
