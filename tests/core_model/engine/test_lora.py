"""Many LoRA adapters in one batch: each request gets what its adapter, merged, would give alone.

.venv/bin/python -m pytest tests/core_model/engine/test_lora.py -q
"""

import copy
import json

import pytest
import torch

from core_model import MoEConfig, MoEForCausalLM
from core_model.engine import Engine, EngineConfig, SamplingParams, lora, naive_generate
from core_model.engine.lora import GATHER_MAX_TOKENS, AdapterError
from tests.peft_adapters import write_adapter

GREEDY = SamplingParams(max_tokens=10, temperature=0.0, ignore_eos=True)
TARGETS_A = ["self_attn.q_a_proj", "self_attn.o_proj", "mlp.shared_experts.up_proj", "mlp.gate_proj"]
TARGETS_B = ["self_attn.kv_a_proj_with_mqa", "self_attn.q_b_proj", "mlp.shared_experts.down_proj"]


@pytest.fixture(scope="module")
def model():
    model = MoEForCausalLM(MoEConfig.preset("tiny").replace(initializer_range=0.15))
    model.init_weights(torch.Generator().manual_seed(0))
    return model.eval()


def merged(model, directory):
    """The base with the adapter folded into its weights: W + (alpha / r) * B @ A."""
    from safetensors.torch import load_file

    config = json.loads((directory / "adapter_config.json").read_text())
    scale = config["lora_alpha"] / config["r"]
    result = copy.deepcopy(model)
    tensors = load_file(directory / "adapter_model.safetensors")
    with torch.no_grad():
        for key, a in tensors.items():
            if key.endswith(".lora_A.weight"):
                b = tensors[key.replace("lora_A", "lora_B")]
                name = key.removeprefix("base_model.model.").removesuffix(".lora_A.weight")
                result.get_submodule(name).weight += scale * b @ a
    return result


@pytest.fixture(scope="module")
def adapters(model, tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    return {
        "alpha": write_adapter(root / "alpha", model, TARGETS_A, seed=1),
        "beta": write_adapter(root / "beta", model, TARGETS_B, seed=2),
    }


def _prompts(count, length=9):
    generator = torch.Generator().manual_seed(11)
    return [torch.randint(3, 512, (length + i,), generator=generator).tolist() for i in range(count)]


@pytest.mark.parametrize("length", [9, 100])  # steps of 3 x 100 tokens take the per-adapter path
def test_a_mixed_batch_matches_each_adapter_merged_and_alone(model, adapters, length):
    engine = Engine(copy.deepcopy(model), config=EngineConfig(block_size=4))
    for name, path in adapters.items():
        engine.load_adapter(name, path)
    prompts = _prompts(3, length=length)
    names = [None, "alpha", "beta"]
    ids = [engine.add_request(p, GREEDY, adapter=n) for p, n in zip(prompts, names, strict=True)]
    finals = {}
    while len(finals) < 3:
        finals.update({o.request_id: o for o in engine.step() if o.finished})
    expected_models = [model, merged(model, adapters["alpha"]), merged(model, adapters["beta"])]
    for request_id, prompt, reference in zip(ids, prompts, expected_models, strict=True):
        assert finals[request_id].token_ids == naive_generate(reference, prompt, max_new_tokens=10)
    assert GATHER_MAX_TOKENS < 3 * 100 <= engine.config.max_batched_tokens
    base_alone = naive_generate(model, prompts[1], max_new_tokens=10)
    assert finals[ids[1]].token_ids != base_alone  # the adapter changes the output


@pytest.mark.parametrize("length", [9, 100])
@pytest.mark.parametrize("merge_max_bytes", [lora.MERGE_MAX_BYTES, 0])  # merged copies, or LoRA matmuls
def test_a_batch_of_one_adapter_matches_it_merged(model, adapters, length, merge_max_bytes, monkeypatch):
    monkeypatch.setattr(lora, "MERGE_MAX_BYTES", merge_max_bytes)
    engine = Engine(copy.deepcopy(model), config=EngineConfig(block_size=4))
    engine.load_adapter("alpha", adapters["alpha"])
    prompts = _prompts(2, length=length)
    outputs = engine.generate(prompts, GREEDY, adapter="alpha")
    reference = merged(model, adapters["alpha"])
    for prompt, output in zip(prompts, outputs, strict=True):
        assert output.token_ids == naive_generate(reference, prompt, max_new_tokens=10)
    adapter = engine.adapters.resident["alpha"]
    copies = sorted(name for name, weight in adapter.merged.items() if weight is not None)
    assert copies == (sorted(adapter.weights) if merge_max_bytes else [])  # one per linear it targets


def test_stacked_weights_outlive_a_step_but_not_their_adapter(model, adapters):
    engine = Engine(copy.deepcopy(model), config=EngineConfig(block_size=4))
    for name, path in adapters.items():
        engine.load_adapter(name, path)
    for prompt, name in zip(_prompts(2), ["alpha", "beta"], strict=True):
        engine.add_request(prompt, GREEDY, adapter=name)
    while engine.has_unfinished():
        engine.step()
    assert len(engine.adapters._stacks) == 1  # one mix for every decode step, stacked once
    engine.unload_adapter("alpha")
    assert not engine.adapters._stacks


def test_least_recently_used_adapter_is_evicted_and_read_back(model, adapters):
    engine = Engine(copy.deepcopy(model), config=EngineConfig(max_loras=1))
    engine.load_adapter("alpha", adapters["alpha"])
    engine.load_adapter("beta", adapters["beta"])
    assert list(engine.adapters.resident) == ["beta"]
    [prompt] = _prompts(1)
    engine.add_request(prompt, GREEDY, adapter="alpha")
    finals = []
    while not finals:
        finals = [o for o in engine.step() if o.finished]
    assert list(engine.adapters.resident) == ["alpha"]
    assert finals[0].token_ids == naive_generate(merged(model, adapters["alpha"]), prompt, max_new_tokens=10)


def test_prefix_cache_is_keyed_by_adapter_content_not_name(model, adapters, tmp_path):
    engine = Engine(copy.deepcopy(model), config=EngineConfig(block_size=4))
    engine.load_adapter("alpha", adapters["alpha"])
    engine.load_adapter("alpha-again", write_adapter(tmp_path / "copy", model, TARGETS_A, seed=1))
    [prompt] = _prompts(1, length=20)
    engine.generate([prompt], GREEDY)

    def cached(adapter):
        request_id = engine.add_request(prompt, GREEDY, adapter=adapter)
        while True:
            for output in engine.step():
                if output.request_id == request_id and output.finished:
                    return output.cached_prompt_tokens

    assert cached("alpha") == 0  # other latents than the base's
    assert cached("alpha-again") == 16  # same weights under another name: shared
    assert cached(None) == 16


def test_lora_on_kv_b_proj_is_refused_with_the_reason(model, tmp_path):
    engine = Engine(copy.deepcopy(model))
    path = write_adapter(tmp_path / "kvb", model, ["self_attn.kv_b_proj"], seed=3)
    with pytest.raises(AdapterError, match="kv_b_proj is not supported: the absorbed MLA decode"):
        engine.load_adapter("kvb", path)


def test_unknown_adapter_and_bad_directory_are_named(model, tmp_path):
    engine = Engine(copy.deepcopy(model))
    with pytest.raises(AdapterError, match="unknown adapter 'nope'"):
        engine.add_request([5, 6, 7], GREEDY, adapter="nope")
    with pytest.raises(AdapterError, match="no adapter_config.json in"):
        engine.load_adapter("empty", tmp_path)


def test_a_name_is_loaded_once(model, adapters):
    engine = Engine(copy.deepcopy(model))
    engine.load_adapter("alpha", adapters["alpha"])
    with pytest.raises(AdapterError, match="'alpha' is already loaded"):
        engine.load_adapter("alpha", adapters["beta"])
    [output] = engine.generate([_prompts(1)[0]], GREEDY, adapter="alpha")
    assert output.token_ids == naive_generate(
        merged(model, adapters["alpha"]), _prompts(1)[0], max_new_tokens=10
    )
