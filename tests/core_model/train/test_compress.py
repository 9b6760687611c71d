"""Expert pruning keeps the most used experts and the router's choices among them; distillation
moves a student toward its teacher."""

import pytest
import torch

from core_model import MoEConfig, MoEForCausalLM, load_model, save_model
from core_model.moe import moe_layers
from core_model.train.compress import distil, measure_expert_load, prune_experts
from core_model.train.data import PackedSequences
from core_model.train.pretrain import PretrainConfig, held_out_loss, pretrain


def tiny(seed=0, **changes) -> MoEForCausalLM:
    model = MoEForCausalLM(MoEConfig.preset("tiny").replace(**changes))
    model.init_weights(torch.Generator().manual_seed(seed))
    return model.eval()


@pytest.fixture
def data() -> PackedSequences:
    tokens = torch.randint(10, 512, (40 * 16 + 1,), generator=torch.Generator().manual_seed(1))
    return PackedSequences(tokens.int(), seq_len=16)


def test_measured_load_counts_every_routed_token(data):
    model = tiny()
    loads = measure_expert_load(model, data, max_sequences=8)
    k = model.config.num_experts_per_tok
    assert set(loads) == {name for name, _ in moe_layers(model)}
    assert all(load.sum() == 8 * 16 * k for load in loads.values())
    assert all(layer.tokens_per_expert.sum() == 0 for _, layer in moe_layers(model))


def test_pruning_keeps_the_most_loaded_experts_of_each_group(tmp_path):
    model = tiny()  # 8 experts in 2 groups of 4
    name = moe_layers(model)[0][0]
    loads = {n: torch.arange(8.0) for n, _ in moe_layers(model)}
    loads[name] = torch.tensor([5.0, 1, 9, 2, 0, 7, 3, 8])
    pruned = prune_experts(model, keep=4, loads=loads)
    original, layer = dict(moe_layers(model))[name], dict(moe_layers(pruned))[name]
    survivors = torch.tensor([0, 2, 5, 7])
    assert torch.equal(layer.experts.gate_up_proj, original.experts.gate_up_proj[survivors])
    assert torch.equal(layer.gate.weight, original.gate.weight[survivors])
    assert pruned.config.n_routed_experts == 4 and model.config.n_routed_experts == 8
    assert pruned.num_parameters() < model.num_parameters()
    x = torch.randint(10, 512, (2, 12))
    assert pruned(x).shape == model(x).shape
    reloaded = load_model(save_model(pruned, tmp_path / "pruned"))
    assert torch.allclose(reloaded(x), pruned(x), atol=1e-5)


def test_pruning_changes_nothing_for_tokens_that_only_used_survivors():
    model = tiny(topk_method="greedy", scoring_func="softmax", n_group=1, topk_group=1, norm_topk_prob=True)
    loads = {n: torch.tensor([9.0, 8, 7, 6, 0, 0, 0, 0]) for n, _ in moe_layers(model)}
    pruned = prune_experts(model, keep=4, loads=loads)
    layer, kept = moe_layers(model)[0][1], moe_layers(pruned)[0][1]
    x = torch.randn(64, model.config.hidden_size)
    with torch.no_grad():
        _, ids = layer.gate(x)
        rows = (ids < 4).all(dim=1)  # tokens routed only to experts 0-3, the survivors
        assert rows.any()
        assert torch.allclose(kept(x[rows][None]), layer(x[rows][None]), atol=1e-5)


@pytest.mark.parametrize("keep, message", [(8, "between 1 and 7"), (3, "multiple of n_group")])
def test_pruning_refuses_impossible_sizes(keep, message):
    model = tiny()
    with pytest.raises(ValueError, match=message):
        prune_experts(model, keep=keep, loads={n: torch.ones(8) for n, _ in moe_layers(model)})


def test_distillation_brings_the_student_toward_the_teacher(data, tmp_path):
    teacher, student = tiny(seed=1), tiny(seed=2, num_hidden_layers=2)
    with torch.no_grad():
        teacher.lm_head.weight *= 30  # a confident teacher, far from the student's near-uniform start
    gap_before = _kl(teacher, student, data)
    config = PretrainConfig(steps=15, seq_len=16, batch_size=8, micro_batch_size=8, lr=1e-2, warmup_steps=2,
                            log_every=5, eval_every=15, checkpoint_every=15)  # fmt: skip
    result = distil(teacher, student, data, data, config, run_dir=tmp_path, alpha=1.0, progress=False)
    assert _kl(teacher, student, data) < 0.9 * gap_before
    assert result.last("eval")["held_out_loss"] == pytest.approx(held_out_loss(student, data), rel=1e-4)


def _kl(teacher, student, data) -> float:
    batch = data.sequences(torch.arange(8))[:, :-1]
    with torch.no_grad():
        p = torch.log_softmax(teacher(batch), -1)
        q = torch.log_softmax(student(batch), -1)
    return float((p.exp() * (p - q)).sum(-1).mean())


def test_distillation_without_the_teacher_is_plain_pretraining(data, tmp_path):
    config = PretrainConfig(steps=4, seq_len=16, batch_size=8, micro_batch_size=8, warmup_steps=1,
                            log_every=1, eval_every=4, checkpoint_every=4)  # fmt: skip
    student = tiny(seed=2, num_hidden_layers=2)
    alone = pretrain(student, data, None, config, run_dir=tmp_path / "a", progress=False)
    taught = distil(tiny(seed=1), tiny(seed=2, num_hidden_layers=2), data, None, config,
                    run_dir=tmp_path / "b", alpha=0.0, progress=False)  # fmt: skip
    losses = [[r["loss"] for r in result.history if r["type"] == "train"] for result in (alone, taught)]
    assert losses[0] == pytest.approx(losses[1], abs=1e-6)
