"""Weight-only int8: a quarter of the float32 weight bytes, the same greedy path for a while.

.venv/bin/python -m pytest tests/core_model/engine/test_quantize.py -q
"""

import copy

import torch

from core_model import MoEConfig, MoEForCausalLM
from core_model.engine import Engine, SamplingParams, naive_generate
from core_model.engine.quantize import Int8Linear, quantize_int8, quantize_weight, weight_bytes


def _model():
    model = MoEForCausalLM(MoEConfig.preset("tiny").replace(initializer_range=0.15))
    model.init_weights(torch.Generator().manual_seed(0))
    return model.eval()


def test_quantised_weights_round_trip_within_half_a_step():
    weight = torch.randn(32, 64)
    quantized, scale = quantize_weight(weight)
    assert quantized.dtype == torch.int8
    assert ((quantized.float() * scale[:, None] - weight).abs() <= scale[:, None] / 2 + 1e-6).all()


def test_int8_linear_is_close_to_the_float_one():
    linear = torch.nn.Linear(64, 48)
    x = torch.randn(5, 64)
    assert torch.allclose(Int8Linear(linear)(x), linear(x), atol=0.05)


def test_weights_shrink_and_logits_stay_close():
    model = _model()
    quantized = quantize_int8(copy.deepcopy(model))
    assert weight_bytes(quantized) < 0.45 * weight_bytes(model)
    ids = torch.randint(3, 512, (1, 16))
    with torch.no_grad():
        reference, logits = model(ids), quantized(ids)
    # mean, not max: a routing decision that flips under quantisation moves one position a lot
    assert (logits - reference).abs().mean() < 0.05 * reference.abs().mean()
    assert quantized.model.layers[0].self_attn.kv_b_proj.weight.dtype == torch.float32  # absorbed path


def test_engine_runs_the_quantised_model_like_the_naive_reference():
    quantized = quantize_int8(_model())
    prompt = list(range(5, 20))
    [output] = Engine(quantized).generate(
        [prompt], SamplingParams(max_tokens=12, temperature=0, ignore_eos=True)
    )
    assert output.token_ids == naive_generate(quantized, prompt, max_new_tokens=12)
