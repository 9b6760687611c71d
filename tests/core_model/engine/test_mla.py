"""Absorbed decode and chunked decompressed prefill over latents equal the model's own attention.

.venv/bin/python -m pytest tests/core_model/engine/test_mla.py -q
"""

import pytest
import torch

from core_model import load_model
from core_model.attention import attention_mask
from core_model.engine.mla import absorbed_decode, decompressed_prefill


def _layer_and_inputs(sliding_window=None, length=11):
    model = load_model("tiny")
    model.config.sliding_window = sliding_window
    attn = model.model.layers[1].self_attn
    torch.manual_seed(0)
    h_BTD = torch.randn(1, length, model.config.hidden_size)
    cos, sin = model.model.rotary_emb(torch.arange(length)[None])
    mask = attention_mask(None, num_queries=length, sliding_window=sliding_window, device=h_BTD.device)
    with torch.no_grad():
        expected_TD = attn(h_BTD, cos, sin, mask)[0]
        q_nope, q_rope = (q[0] for q in attn.queries(h_BTD, cos, sin))
        c_kv, k_rope = attn.latent(h_BTD, cos, sin)
    latent_SW = torch.cat((c_kv[0], k_rope[0]), dim=-1)
    return attn, expected_TD, q_nope, q_rope, latent_SW


@pytest.mark.parametrize("window", [None, 4])
def test_absorbed_decode_equals_the_decompressed_forward(window):
    attn, expected_TD, q_nope, q_rope, latent_SW = _layer_and_inputs(window)
    S = latent_SW.shape[0]
    visible = torch.ones(1, S, dtype=torch.bool)
    if window:
        visible[0, : S - window] = False
    with torch.no_grad():
        out_BHV = absorbed_decode(attn, q_nope[-1:], q_rope[-1:], latent_SW[None], visible)
        out_D = attn.o_proj(out_BHV.flatten(1))[0]
    assert torch.allclose(out_D, expected_TD[-1], atol=1e-5)


@pytest.mark.parametrize("window", [None, 4])
@pytest.mark.parametrize("chunk_size", [3, 1024])
def test_chunked_prefill_over_cached_context_equals_the_forward(window, chunk_size):
    attn, expected_TD, q_nope, q_rope, latent_SW = _layer_and_inputs(window)
    first = 6  # positions 0..5 are "cached"; 6..10 are the new chunk
    with torch.no_grad():
        out_THV = decompressed_prefill(
            attn, q_nope[first:], q_rope[first:], latent_SW, first_position=first, chunk_size=chunk_size
        )
        out_TD = attn.o_proj(out_THV.flatten(1))
    assert torch.allclose(out_TD, expected_TD[first:], atol=1e-5)
