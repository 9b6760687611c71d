"""The trainer's LoRA: starts equal to the base, merges exactly, trains only its factors.

.venv/bin/python -m pytest tests/core_model/train/test_lora.py -q
"""

import pytest
import torch

from core_model import MoEConfig, MoEForCausalLM
from core_model.linear import Linear
from core_model.train.lora import DEFAULT_TARGETS, LoRALinear, inject_lora, lora_weights, merge_lora


def tiny_model(**changes) -> MoEForCausalLM:
    model = MoEForCausalLM(MoEConfig.preset("tiny").replace(initializer_range=0.1, **changes))
    model.init_weights(torch.Generator().manual_seed(0))
    return model.eval()


def ids() -> torch.Tensor:
    return torch.randint(0, 512, (2, 9), generator=torch.Generator().manual_seed(3))


def randomise_b(model) -> None:
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, LoRALinear):
                module.lora_B.weight.copy_(torch.randn(module.lora_B.weight.shape, generator=generator) * 0.1)


def test_lora_with_zero_b_equals_the_base():
    model = tiny_model()
    with torch.no_grad():
        expected = model(ids())
    names = inject_lora(model, targets=DEFAULT_TARGETS, rank=4, alpha=8)
    assert "model.layers.0.mlp.gate_proj" in names  # dense layer
    assert "model.layers.1.mlp.shared_experts.down_proj" in names
    assert not any("kv_b_proj" in n or "experts." in n.replace("shared_experts.", "") for n in names)
    with torch.no_grad():
        assert torch.equal(model(ids()), expected)


def test_merged_model_gives_the_unmerged_logits():
    model = tiny_model()
    inject_lora(model, targets=DEFAULT_TARGETS, rank=4, alpha=8)
    randomise_b(model)
    with torch.no_grad():
        unmerged = model(ids())
        merge_lora(model)
        merged = model(ids())
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    assert type(model.get_submodule("model.layers.0.self_attn.o_proj")) is Linear  # the model's own again
    assert (unmerged - merged).abs().max().item() < 1e-4
    assert (unmerged - tiny_model()(ids())).abs().max().item() > 1e-2  # the LoRA did change something


def test_only_lora_factors_are_trainable():
    model = tiny_model()
    names = inject_lora(model, targets=("q_a_proj", "mlp.shared_experts.up_proj"), rank=2, alpha=4)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert len(names) == 3 + 2  # q_a_proj in 3 layers, shared experts in the 2 MoE layers
    assert sorted(trainable) == sorted(f"{n}.lora_{x}.weight" for n in names for x in "AB")
    weights = lora_weights(model)
    a_rI, b_Or = weights["model.layers.0.self_attn.q_a_proj"]
    assert a_rI.shape == (2, 64) and b_Or.shape == (32, 2) and not b_Or.any()


def test_a_target_that_matches_nothing_is_an_error():
    with pytest.raises(ValueError, match="'nonexistent_proj'.*match no module.*o_proj"):
        inject_lora(tiny_model(), targets=("o_proj", "nonexistent_proj"), rank=2, alpha=4)


def test_lora_on_kv_b_proj_is_refused():
    with pytest.raises(ValueError, match="kv_b_proj.*absorbed"):
        inject_lora(tiny_model(), targets=("kv_b_proj",), rank=2, alpha=4)


def test_default_targets_fit_the_direct_query_projection_too():
    model = tiny_model(q_lora_rank=None)
    names = inject_lora(model, targets=DEFAULT_TARGETS, rank=2, alpha=4)
    assert "model.layers.0.self_attn.q_proj" in names


def test_injecting_twice_is_an_error():
    model = tiny_model()
    inject_lora(model, targets=("o_proj",), rank=2, alpha=4)
    with pytest.raises(ValueError, match="already holds LoRA"):
        inject_lora(model, targets=("o_proj",), rank=2, alpha=4)
