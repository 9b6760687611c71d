"""The decoder on its own: padding, positions, the trunk, the sliding window.

.venv/bin/python -m pytest tests/core_model/test_model.py -q
"""

import torch

from core_model import load_model


def test_left_padding_does_not_change_the_logits():
    model = load_model("tiny")
    ids = torch.randint(1, 256, (1, 6))
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), ids], dim=1)
    mask = torch.cat([torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 6, dtype=torch.long)], dim=1)
    with torch.no_grad():
        alone = model(ids)
        batched = model(padded, attention_mask=mask)
    assert torch.allclose(alone, batched[:, 3:], atol=1e-5)


def test_feed_forwards_skip_padding_and_the_real_tokens_get_what_they_get_alone():
    model = load_model("tiny").eval()
    lengths = [3, 9]
    ids = torch.randint(1, 256, (2, 9))
    mask = (torch.arange(9)[None] < torch.tensor(lengths)[:, None]).long()  # right padding
    moe_layers = [layer.mlp for layer in model.model.layers if hasattr(layer.mlp, "tokens_per_expert")]
    for moe in moe_layers:
        moe.reset_buffers()
    with torch.no_grad():
        batched = model(ids, attention_mask=mask)
        alone = model(ids[:1, :3])
    assert torch.allclose(alone, batched[:1, :3], atol=1e-5)
    real_tokens = sum(lengths) + 3  # the padded batch's and the lone sequence's, not the 6 pads
    routed = real_tokens * model.config.num_experts_per_tok
    assert [int(m.tokens_per_expert.sum()) for m in moe_layers] == [routed] * len(moe_layers)


def test_a_token_does_not_see_the_future():
    model = load_model("tiny")
    ids = torch.randint(0, 256, (1, 8))
    changed = ids.clone()
    changed[0, 5] = (changed[0, 5] + 1) % 256
    with torch.no_grad():
        before, after = model(ids), model(changed)
    # not bit-equal: expert matmuls batch other tokens' rows, which moves the last float bit
    assert torch.allclose(before[:, :5], after[:, :5], atol=1e-6)
    assert not torch.allclose(before[:, 5:], after[:, 5:], atol=1e-3)


def test_trunk_takes_embeddings_and_can_be_bidirectional():
    model = load_model("tiny")
    x_BTD = torch.randn(2, 5, model.config.hidden_size)
    changed = x_BTD.clone()
    changed[:, -1] += 1.0
    with torch.no_grad():
        causal = model.trunk(inputs_embeds=x_BTD)
        causal_changed = model.trunk(inputs_embeds=changed)
        bidirectional = model.trunk(inputs_embeds=x_BTD, causal=False)
        bidirectional_changed = model.trunk(inputs_embeds=changed, causal=False)
    assert causal.shape == (2, 5, model.config.hidden_size)
    assert torch.allclose(causal[:, 0], causal_changed[:, 0], atol=1e-6)
    assert not torch.allclose(bidirectional[:, 0], bidirectional_changed[:, 0], atol=1e-3)


def test_sliding_window_limits_what_a_token_sees():
    windowed = load_model("tiny")
    windowed.config.sliding_window = 3
    ids = torch.randint(0, 256, (1, 10))
    changed = ids.clone()
    changed[0, 0] = (changed[0, 0] + 1) % 256
    with torch.no_grad():
        # one layer's window is 3 tokens; three layers reach 3 * 2 = 6 tokens back at most
        difference = (windowed(ids) - windowed(changed)).abs().amax(-1)[0]
    assert difference[7:].max() < 1e-6
    assert difference[0] > 1e-3


def test_tied_embeddings_share_one_tensor():
    from core_model import MoEConfig, MoEForCausalLM

    model = MoEForCausalLM(MoEConfig.preset("tiny").replace(tie_word_embeddings=True))
    assert model.lm_head.weight is model.model.embed_tokens.weight


def test_a_full_mask_with_positions_gives_what_separate_sequences_give():
    """Two last tokens sharing one prefix, each seeing the prefix and itself only, at the same
    position: each comes out as the last token of its own sequence would."""
    model = load_model("tiny")
    prefix_B3D, last_B2D = (
        torch.randn(1, 3, model.config.hidden_size),
        torch.randn(1, 2, model.config.hidden_size),
    )
    allowed_TT = torch.ones(5, 5, dtype=torch.bool).tril()
    allowed_TT[4, 3] = False  # the second last token does not see the first
    with torch.no_grad():
        shared = model.trunk(
            inputs_embeds=torch.cat([prefix_B3D, last_B2D], dim=1), attention_mask=allowed_TT[None, None],
            position_ids=torch.tensor([[0, 1, 2, 3, 3]]),
        )  # fmt: skip
        alone = [
            model.trunk(inputs_embeds=torch.cat([prefix_B3D, last_B2D[:, i : i + 1]], dim=1))[:, -1]
            for i in (0, 1)
        ]
    assert torch.allclose(shared[:, 3], alone[0], atol=1e-5)
    assert torch.allclose(shared[:, 4], alone[1], atol=1e-5)


def test_attention_weights_are_what_the_layer_reads_the_values_with():
    model = load_model("tiny")
    attention = model.model.layers[0].self_attn
    x_BTD = torch.randn(2, 4, model.config.hidden_size)
    cos, sin = model.model.rotary_emb(torch.arange(4).expand(2, 4))
    with torch.no_grad():
        weights_BHTS = attention.weights(x_BTD, cos, sin, None)
        _, _, v_BHSV = attention.heads(x_BTD, cos, sin)
        by_hand = attention.o_proj((weights_BHTS @ v_BHSV).transpose(1, 2).flatten(2))
        assert torch.allclose(by_hand, attention(x_BTD, cos, sin, None), atol=1e-5)
    assert torch.allclose(weights_BHTS.sum(-1), torch.ones(2, weights_BHTS.shape[1], 4))
    assert (weights_BHTS.triu(diagonal=1) == 0).all()  # no token reads a later one
