"""Parity with transformers' DeepSeek-V2/V3 on checkpoints it wrote, and clear errors on bad ones.

.venv/bin/python -m pytest tests/core_model/test_checkpoint.py -q
"""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from core_model import CheckpointError, ConfigError, load_model, save_model
from core_model.checkpoint import dequantise_fp8

from . import hf_reference as ref

CASES = {
    # sigmoid + noaux_tc + bias, q_lora_rank set, YaRN, dense first layer, per-expert, sharded
    "v3-per-expert-sharded": lambda d: ref.save(ref.deepseek_v3(), d, max_shard_size="100KB"),
    # softmax + group-limited greedy, q_lora_rank null, stacked experts of transformers 5
    "v2-stacked": lambda d: ref.save(ref.deepseek_v2(), d, stacked=True),
    # rope without interleave, no YaRN, tied embeddings
    "v3-plain-rope-tied": lambda d: ref.save(
        ref.deepseek_v3(rope_interleave=False, rope_scaling=None, tie_word_embeddings=True), d
    ),
}


@pytest.fixture(scope="module", params=list(CASES))
def checkpoint(request, tmp_path_factory):
    directory = tmp_path_factory.mktemp(request.param)
    CASES[request.param](directory)
    from transformers import AutoModelForCausalLM

    return directory, AutoModelForCausalLM.from_pretrained(directory).eval()


def test_logits_match_transformers_on_a_padded_batch(checkpoint):
    directory, reference = checkpoint
    input_ids, mask, positions = ref.padded_batch(reference.config.vocab_size)
    expected = ref.reference_logits(reference, input_ids, mask, positions)
    ours = load_model(directory)
    with torch.no_grad():
        logits = ours(input_ids, attention_mask=mask)  # positions derived from the mask
    real = mask.bool()
    assert (logits[real] - expected[real]).abs().max().item() < 1e-4


def test_routers_pick_the_same_experts(checkpoint):
    directory, reference = checkpoint
    input_ids, mask, positions = ref.padded_batch(reference.config.vocab_size)
    ours = load_model(directory)
    picked = {"ref": [], "ours": []}
    hooks = []
    for layer in reference.model.layers[1:]:
        hooks.append(layer.mlp.gate.register_forward_hook(lambda m, i, o: picked["ref"].append(o[2])))
    for layer in ours.model.layers[1:]:
        hooks.append(
            layer.mlp.register_forward_hook(
                lambda m, i, o: picked["ours"].append(m.gate(i[0].flatten(0, 1))[1])
            )
        )
    with torch.no_grad():
        reference(input_ids=input_ids, attention_mask=mask, position_ids=positions)
        ours(input_ids, attention_mask=mask)
    for hook in hooks:
        hook.remove()
    real = mask.bool().flatten()
    assert len(picked["ours"]) == len(picked["ref"]) == 2
    for theirs, mine in zip(picked["ref"], picked["ours"], strict=True):  # ours routes real tokens only
        assert torch.equal(theirs[real].sort(-1).values, mine.sort(-1).values)


@pytest.mark.parametrize("layout", ["per_expert", "stacked"])
def test_saved_model_loads_back_into_transformers(checkpoint, tmp_path, layout):
    from transformers import AutoModelForCausalLM

    directory, _ = checkpoint
    ours = load_model(directory)
    save_model(ours, tmp_path, expert_layout=layout, max_shard_bytes=200_000)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    input_ids, mask, positions = ref.padded_batch(ours.config.vocab_size)
    expected = ref.reference_logits(reloaded, input_ids, mask, positions)
    with torch.no_grad():
        logits = ours(input_ids, attention_mask=mask)
    assert (logits[mask.bool()] - expected[mask.bool()]).abs().max().item() < 1e-4


def test_dtype_cast_keeps_routers_in_float32(checkpoint):
    directory, _ = checkpoint
    model = load_model(directory, dtype=torch.bfloat16)
    assert model.lm_head.weight.dtype == torch.bfloat16
    assert model.model.layers[1].mlp.gate.weight.dtype == torch.float32
    logits = model(torch.tensor([[1, 2, 3]]))
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits.float()).all()


@pytest.fixture
def good_checkpoint(tmp_path):
    return save_model(load_model("tiny"), tmp_path / "good")


def test_missing_weights_file_is_named(good_checkpoint):
    (good_checkpoint / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no \\*.safetensors files in .*good"):
        load_model(good_checkpoint)


def test_missing_shard_is_named(tmp_path):
    directory = save_model(load_model("tiny"), tmp_path, max_shard_bytes=50_000)
    second_shard = sorted(directory.glob("model-00002-of-*.safetensors"))[0]
    second_shard.unlink()
    with pytest.raises(FileNotFoundError, match=second_shard.name):
        load_model(directory)


def test_unsupported_model_type_names_the_config(good_checkpoint):
    config_path = good_checkpoint / "config.json"
    config_path.write_text(json.dumps({**json.loads(config_path.read_text()), "model_type": "llama"}))
    with pytest.raises(ConfigError, match="config.json: unsupported model_type 'llama'"):
        load_model(good_checkpoint)


def _edit_weights(directory, edit) -> None:
    path = directory / "model.safetensors"
    state = load_file(path)
    edit(state)
    save_file(state, path)


def test_shape_mismatch_names_the_tensor(good_checkpoint):
    key = "model.layers.0.self_attn.kv_b_proj.weight"
    _edit_weights(good_checkpoint, lambda state: state.update({key: torch.zeros(3, 3)}))
    with pytest.raises(CheckpointError, match=f"{key} has shape \\(3, 3\\)"):
        load_model(good_checkpoint)


@pytest.mark.parametrize("key", ["model.norm.weight", "model.layers.2.mlp.experts.5.up_proj.weight"])
def test_missing_tensor_is_named(good_checkpoint, key):
    _edit_weights(good_checkpoint, lambda state: state.pop(key))
    with pytest.raises(CheckpointError, match=f"missing .*{key}"):
        load_model(good_checkpoint)


def test_fp8_block_weights_dequantise_close_to_the_original():
    weight = torch.randn(200, 300)
    scale = torch.rand(2, 3) + 0.5  # one per 128 x 128 block
    blocks = scale.repeat_interleave(128, 0)[:200].repeat_interleave(128, 1)[:, :300]
    fp8 = (weight / blocks).to(torch.float8_e4m3fn)
    restored = dequantise_fp8(fp8, scale)
    assert (restored - weight).abs().max() < 0.1 * weight.abs().max()


def test_fp8_checkpoint_loads_dequantised(tmp_path):
    model = load_model("tiny")
    directory = save_model(model, tmp_path)
    state = load_file(directory / "model.safetensors")
    for key in [k for k in state if k.endswith(("kv_b_proj.weight", "experts.3.down_proj.weight"))]:
        scale = state[key].abs().max().reshape(1, 1) / 448  # e4m3's largest value
        state[key] = (state[key] / scale).to(torch.float8_e4m3fn)
        state[key.replace(".weight", ".weight_scale_inv")] = scale
    save_file(state, directory / "model.safetensors")
    config = json.loads((directory / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "fp8", "weight_block_size": [128, 128]}
    (directory / "config.json").write_text(json.dumps(config))
    loaded = load_model(directory)
    ids = torch.randint(0, 256, (1, 12))
    with torch.no_grad():
        assert (loaded(ids) - model(ids)).abs().max() < 0.05
    assert "quantization_config" not in loaded.config.to_hf_dict()  # the weights are no longer FP8


def test_preset_without_weights_is_seeded():
    first, second = load_model("tiny"), load_model("tiny")
    assert torch.equal(first.lm_head.weight, second.lm_head.weight)


def test_unknown_source_says_what_is_accepted():
    with pytest.raises(FileNotFoundError, match="neither a checkpoint directory nor a preset"):
        load_model("no-such-model")


@pytest.mark.gpu
def test_loads_onto_cuda_in_bfloat16(tmp_path):
    directory = save_model(load_model("tiny"), tmp_path)
    model = load_model(directory, device="cuda", dtype=torch.bfloat16)
    logits = model(torch.tensor([[1, 2, 3]], device="cuda"))
    assert logits.device.type == "cuda" and torch.isfinite(logits.float()).all()


@pytest.mark.parametrize("native", [True, False])
def test_encoders_run_in_bfloat16_where_the_cpu_multiplies_it_natively(native, monkeypatch):
    from core_model import checkpoint

    monkeypatch.setattr(checkpoint, "cpu_has_native_bfloat16", lambda: native)
    assert checkpoint.encoder_dtype("cpu") == (torch.bfloat16 if native else torch.float32)
    assert checkpoint.encoder_dtype("cuda:0") == torch.bfloat16
