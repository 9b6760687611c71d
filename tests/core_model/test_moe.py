"""Router, grouped and dense dispatch against the looped reference, and load balancing.

.venv/bin/python -m pytest tests/core_model/test_moe.py -q
"""

import pytest
import torch

from core_model import MoEConfig
from core_model.moe import (
    MoE,
    Router,
    expert_load_stats,
    moe_dispatch,
    update_expert_bias,
    use_bfloat16_experts,
    use_dense_experts,
)


def _moe(config: MoEConfig, seed: int = 0) -> MoE:
    torch.manual_seed(seed)
    moe = MoE(config)
    for param in moe.parameters():
        torch.nn.init.normal_(param, std=0.2)
    return moe


def test_router_picks_top_k():
    config = MoEConfig.preset("tiny")
    router = Router(config)
    torch.nn.init.normal_(router.weight)
    x_TD = torch.randn(6, config.hidden_size)
    weights_TK, expert_ids_TK = router(x_TD)
    assert expert_ids_TK.shape == (6, config.num_experts_per_tok)
    assert (expert_ids_TK < config.n_routed_experts).all()
    assert torch.allclose(weights_TK.sum(-1), torch.full((6,), config.routed_scaling_factor))


def test_router_keeps_to_the_best_groups():
    config = MoEConfig.preset("tiny").replace(
        n_routed_experts=16, n_group=4, topk_group=2, num_experts_per_tok=4
    )
    router = Router(config)
    torch.nn.init.normal_(router.weight)
    _, expert_ids_TK = router(torch.randn(64, config.hidden_size))
    groups_per_token = [len(set((row // 4).tolist())) for row in expert_ids_TK]
    assert max(groups_per_token) <= 2


def test_correction_bias_changes_the_choice_but_not_the_weights():
    config = MoEConfig.preset("tiny")
    router = Router(config)
    torch.nn.init.normal_(router.weight)
    x_TD = torch.randn(32, config.hidden_size)
    scores_TE = router.scores(x_TD)
    router.e_score_correction_bias[3] = 10.0  # expert 3 always chosen
    weights_TK, expert_ids_TK = router(x_TD)
    assert (expert_ids_TK == 3).any(-1).all()
    unnormalised = scores_TE.gather(1, expert_ids_TK)
    expected = unnormalised / unnormalised.sum(-1, keepdim=True) * config.routed_scaling_factor
    assert torch.allclose(weights_TK, expected)


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"scoring_func": "softmax", "topk_method": "greedy", "n_group": 1, "topk_group": 1},
        {"scoring_func": "softmax", "topk_method": "group_limited_greedy", "norm_topk_prob": False},
        {"n_shared_experts": None},
    ],
)
@pytest.mark.parametrize("tokens", [1, 5, 64])
def test_grouped_dispatch_matches_the_looped_reference(changes, tokens):
    moe = _moe(MoEConfig.preset("tiny").replace(**changes))
    x_BTD = torch.randn(1, tokens, moe.config.hidden_size)
    with torch.no_grad():
        moe.dispatch = "looped"
        looped = moe(x_BTD)
        moe.dispatch = "grouped"
        grouped = moe(x_BTD)
    assert torch.allclose(grouped, looped, atol=1e-5)


def test_grouped_dispatch_gradients_match_the_reference():
    moe = _moe(MoEConfig.preset("tiny"))
    x_BTD = torch.randn(2, 7, moe.config.hidden_size)
    grads = {}
    for dispatch in ("looped", "grouped"):
        moe.zero_grad()
        moe.dispatch = dispatch
        moe(x_BTD).square().sum().backward()
        grads[dispatch] = moe.experts.gate_up_proj.grad.clone()
    assert torch.allclose(grads["grouped"], grads["looped"], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("n_shared", [None, 1, 2])
@pytest.mark.parametrize("tokens", [1, 5, 64])
def test_dense_dispatch_matches_grouped_and_looped(n_shared, tokens):
    moe = _moe(MoEConfig.preset("tiny").replace(n_shared_experts=n_shared))
    x_BTD = torch.randn(2, tokens, moe.config.hidden_size)
    outputs = {}
    with torch.no_grad():
        for dispatch in ("looped", "grouped", "dense"):
            moe.dispatch = dispatch
            outputs[dispatch] = moe(x_BTD)
    assert torch.allclose(outputs["dense"], outputs["grouped"], atol=1e-5)
    assert torch.allclose(outputs["dense"], outputs["looped"], atol=1e-5)


def test_dense_dispatch_gradients_match_the_reference():
    moe = _moe(MoEConfig.preset("tiny"))
    x_BTD = torch.randn(2, 7, moe.config.hidden_size, requires_grad=True)
    grads = {}
    for dispatch in ("looped", "dense"):
        moe.zero_grad()
        x_BTD.grad = None
        moe.dispatch = dispatch
        moe(x_BTD).square().sum().backward()
        grads[dispatch] = [
            moe.experts.gate_up_proj.grad,
            moe.experts.down_proj.grad,
            moe.gate.weight.grad,
            x_BTD.grad,
        ]
    for dense, looped in zip(grads["dense"], grads["looped"], strict=True):
        assert torch.allclose(dense, looped, rtol=1e-4, atol=1e-4)


def test_dense_experts_take_the_short_inference_steps_only():
    moe = _moe(MoEConfig.preset("tiny"))
    short, long = (torch.randn(2, t, moe.config.hidden_size) for t in (4, 40))  # 8 and 80 tokens

    def outputs() -> list[torch.Tensor]:
        with torch.no_grad():
            return [moe(x) for x in (short, long)]

    grouped, trained = outputs(), moe(short).detach()
    with moe_dispatch(moe, "dense"):
        dense = outputs()
    assert not torch.equal(dense[0], grouped[0])  # the two forms round differently
    use_dense_experts(moe, up_to_tokens=8)
    assert [torch.equal(a, b) for a, b in zip(outputs(), [dense[0], grouped[1]], strict=True)] == [True, True]
    assert torch.equal(moe(short).detach(), trained)  # with gradients: grouped, whatever the size
    use_dense_experts(moe, up_to_tokens=None)
    assert torch.equal(outputs()[0], grouped[0])


def test_moe_dispatch_switches_every_layer_and_restores_each():
    from core_model import load_model

    model = load_model("tiny")
    layers = [module for module in model.modules() if isinstance(module, MoE)]
    layers[0].dispatch = "looped"
    with moe_dispatch(model, "dense"):
        assert all(layer.dispatch == "dense" for layer in layers)
    assert [layer.dispatch for layer in layers] == ["looped"] + ["grouped"] * (len(layers) - 1)
    with pytest.raises(ValueError, match="dispatch must be one of"), moe_dispatch(model, "sparse"):
        pass


def test_bias_update_favours_the_under_loaded_experts():
    moe = _moe(MoEConfig.preset("tiny"))
    moe.gate.e_score_correction_bias.zero_()
    with torch.no_grad():
        moe(torch.randn(1, 50, moe.config.hidden_size))
    load = moe.tokens_per_expert.clone()
    update_expert_bias(moe, rate=0.01)
    bias = moe.gate.e_score_correction_bias
    assert (bias[load > load.mean()] < 0).all() and (bias[load < load.mean()] > 0).all()
    assert moe.tokens_per_expert.sum() == 0


def test_bias_updates_even_out_the_load():
    moe = _moe(MoEConfig.preset("tiny").replace(routed_scaling_factor=1.0), seed=3)
    # tokens sharing a common direction crowd onto a few experts
    x_BTD = torch.randn(1, 256, moe.config.hidden_size) + 3 * torch.randn(moe.config.hidden_size)
    with torch.no_grad():
        moe(x_BTD)
    before = expert_load_stats(moe, reset=True)[0]["cv"]
    for _ in range(200):
        with torch.no_grad():
            moe(x_BTD)
        update_expert_bias(moe, rate=0.01)
    with torch.no_grad():
        moe(x_BTD)
    after = expert_load_stats(moe)[0]["cv"]
    assert after < before / 2


def test_load_stats_report_each_moe_layer():
    from core_model import load_model

    model = load_model("tiny")
    with torch.no_grad():
        model(torch.randint(0, 256, (2, 9)))
    stats = expert_load_stats(model)
    assert [s["layer"] for s in stats] == ["model.layers.1.mlp", "model.layers.2.mlp"]
    assert all(s["tokens"] == 2 * 9 * model.config.num_experts_per_tok for s in stats)
    assert all(s["max_over_mean"] >= 1.0 for s in stats)


def test_sequence_balance_loss_is_trained_only_when_asked():
    from core_model import load_model

    model = load_model("tiny").train()
    model(torch.randint(0, 256, (2, 9)))
    assert model.balance_loss() is None
    model.config.aux_loss_alpha = 0.01
    model(torch.randint(0, 256, (2, 9)))
    loss = model.balance_loss()
    loss.backward()
    assert loss.item() > 0
    assert model.model.layers[1].mlp.gate.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("n_shared", [None, 1, 2])
def test_few_pairs_path_with_shared_experts_folded_in_matches_the_reference(n_shared):
    moe = _moe(MoEConfig.preset("tiny").replace(n_shared_experts=n_shared))
    x_TD = torch.randn(2, moe.config.hidden_size)
    with torch.no_grad():
        weights_TK, expert_ids_TK = moe.gate(x_TD)
        folded = moe._few_pairs(x_TD, weights_TK, expert_ids_TK)
        moe.dispatch = "looped"
        looped = moe(x_TD[None])[0]
    assert torch.allclose(folded, looped, atol=1e-5)


@pytest.mark.parametrize("tokens", [1, 64])
def test_half_precision_paths_match_the_reference(tokens):
    moe = _moe(MoEConfig.preset("tiny")).to(torch.bfloat16)
    x_BTD = torch.randn(1, tokens, moe.config.hidden_size, dtype=torch.bfloat16)
    with torch.no_grad():
        grouped = moe(x_BTD)
        moe.dispatch = "looped"
        looped = moe(x_BTD)
    assert (grouped - looped).abs().max() <= 0.02 * looped.abs().max()


@pytest.mark.gpu
@pytest.mark.parametrize("tokens", [1, 300])
def test_cuda_bfloat16_paths_match_the_reference(tokens):
    moe = _moe(MoEConfig.preset("tiny")).to("cuda", torch.bfloat16)
    moe.gate.float()
    x_BTD = torch.randn(1, tokens, moe.config.hidden_size, dtype=torch.bfloat16, device="cuda")
    with torch.no_grad():
        grouped = moe(x_BTD)
        moe.dispatch = "looped"
        looped = moe(x_BTD)
    assert (grouped - looped).abs().max() <= 0.02 * looped.abs().max()


def test_bfloat16_experts_take_the_long_steps_only_and_follow_weight_changes():
    moe = _moe(MoEConfig.preset("tiny"))
    experts = moe.experts
    short, long = (torch.randn(1, t, moe.config.hidden_size) for t in (3, 64))
    with torch.no_grad():
        exact = [moe(x) for x in (short, long)]
        use_bfloat16_experts(moe, from_pairs=64 * moe.config.num_experts_per_tok)
        assert torch.equal(moe(short), exact[0])  # 12 pairs: the float32 weights
        assert not experts._bfloat16_copies
        approximate = moe(long)
        assert sorted(experts._bfloat16_copies) == ["down_proj", "gate_up_proj"]
        assert not torch.equal(approximate, exact[1])
        assert (approximate - exact[1]).abs().max() <= 0.02 * exact[1].abs().max()  # bfloat16 rounding
        experts.down_proj.mul_(2.0)  # an in-place change makes a fresh copy
        assert not torch.equal(experts._bfloat16_copies["down_proj"][1], experts.down_proj.bfloat16())
        moe(long)
        assert torch.equal(experts._bfloat16_copies["down_proj"][1], experts.down_proj.bfloat16())
    with_gradients = moe(long).detach()
    use_bfloat16_experts(moe, from_pairs=None)
    assert experts.bfloat16_from_pairs is None and not experts._bfloat16_copies
    with torch.no_grad():
        assert torch.equal(with_gradients, moe(long))  # training never takes the copies


def test_bfloat16_expert_copies_follow_a_replaced_weight():
    moe = _moe(MoEConfig.preset("tiny"))
    use_bfloat16_experts(moe, from_pairs=4)
    x = torch.randn(1, 16, moe.config.hidden_size)
    with torch.no_grad():
        moe(x)
        moe.experts.down_proj.data = moe.experts.down_proj.data * 3.0  # a new tensor, not in place
        moe(x)
    assert torch.equal(moe.experts._bfloat16_copies["down_proj"][1], moe.experts.down_proj.bfloat16())
