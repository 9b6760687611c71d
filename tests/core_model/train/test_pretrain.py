"""The pre-training loop on the tiny preset: learning, exact resume, bias updates, held-out loss,
and 2 processes under torchrun matching 1 process with the same global batch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from core_model import MoEConfig, MoEForCausalLM, train_tokenizer
from core_model.moe import moe_layers
from core_model.train.corpus import read_source, stdlib_files
from core_model.train.data import PackedSequences, pack_documents
from core_model.train.pretrain import PretrainConfig, held_out_loss, next_token_loss, pretrain

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def texts() -> list[str]:
    files = [f for f in stdlib_files() if f.name in ("textwrap.py", "shlex.py", "fnmatch.py", "glob.py")]
    return [read_source(f) for f in files]


@pytest.fixture(scope="module")
def tokenizer(texts):
    return train_tokenizer(texts, vocab_size=300)


@pytest.fixture(scope="module")
def data(texts, tokenizer) -> PackedSequences:
    return PackedSequences(pack_documents(texts, tokenizer), seq_len=32)


def tiny_model(seed: int = 0) -> MoEForCausalLM:
    model = MoEForCausalLM(MoEConfig.preset("tiny"))
    model.init_weights(torch.Generator().manual_seed(seed))
    return model


def config(**changes) -> PretrainConfig:
    base = dict(steps=8, seq_len=32, batch_size=4, micro_batch_size=2, lr=3e-3, warmup_steps=2)
    return PretrainConfig(**{**base, "log_every": 1, "eval_every": 4, "checkpoint_every": 4, **changes})


def train_losses(history) -> list[float]:
    return [r["loss"] for r in history if r["type"] == "train"]


def test_packing_puts_eos_after_each_document(tokenizer):
    tokens = pack_documents(["ab", "cd"], tokenizer)
    assert tokens.dtype == torch.int32
    assert (tokens == tokenizer.eos_id).sum() == 2 and tokens[-1] == tokenizer.eos_id
    assert tokenizer.decode(tokens.tolist(), skip_special_tokens=True) == "abcd"


def test_batch_order_is_a_function_of_the_step(data):
    first = data.batch(step=3, batch_size=4, seed=1)
    again = PackedSequences(data.tokens_N, seq_len=32).batch(step=3, batch_size=4, seed=1)
    assert torch.equal(first, again)
    assert not torch.equal(first, data.batch(step=3, batch_size=4, seed=2))
    halves = [data.batch(step=3, batch_size=4, seed=1, rows=rows) for rows in (slice(0, 2), slice(2, 4))]
    assert torch.equal(torch.cat(halves), first)
    steps = len(data) // 4
    seen = torch.cat([data.batch_indices(step=s, batch_size=4, seed=1) for s in range(steps)])
    assert len(set(seen.tolist())) == len(seen)  # an epoch visits each window once
    assert first.shape == (4, 33) and torch.equal(
        first[0], data.sequences([int(data.batch_indices(step=3, batch_size=4, seed=1)[0])])[0]
    )


def test_training_lowers_the_loss(data, tmp_path):
    result = pretrain(tiny_model(), data, None, config(steps=30, lr=1e-2), run_dir=tmp_path, progress=False)
    losses = train_losses(result.history)
    assert sum(losses[-5:]) / 5 < losses[0] - 1.0
    assert result.tokens_seen == 30 * 4 * 32
    assert (tmp_path / "checkpoint.pt").exists() and (tmp_path / "log.jsonl").exists()


def test_a_resumed_run_repeats_the_uninterrupted_losses(data, tmp_path):
    whole = pretrain(tiny_model(), data, data, config(), run_dir=tmp_path / "whole", progress=False)

    class Interrupted(Exception):
        pass

    calls = {"n": 0}

    def crash_at_step_six(model, batch):
        calls["n"] += 1
        if calls["n"] > 5 * 2:  # 2 micro-batches a step: dies inside step 6, after the step-4 checkpoint
            raise Interrupted
        return next_token_loss(model, batch)

    with pytest.raises(Interrupted):
        pretrain(
            tiny_model(),
            data,
            data,
            config(),
            run_dir=tmp_path / "cut",
            loss_fn=crash_at_step_six,
            progress=False,
        )
    resumed = pretrain(tiny_model(seed=99), data, data, config(), run_dir=tmp_path / "cut", progress=False)
    assert train_losses(resumed.history) == pytest.approx(train_losses(whole.history), abs=1e-6)
    evals = [r["held_out_loss"] for r in resumed.history if r["type"] == "eval"]
    assert evals == pytest.approx(
        [r["held_out_loss"] for r in whole.history if r["type"] == "eval"], abs=1e-6
    )
    logged = [json.loads(line) for line in (tmp_path / "cut" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if r["type"] == "train"] == list(range(1, 9))


def test_bias_updates_move_the_router_biases_and_are_logged(data, tmp_path):
    on, off = tiny_model(), tiny_model()
    result = pretrain(on, data, None, config(bias_update_rate=1e-2), run_dir=tmp_path / "on", progress=False)
    pretrain(off, data, None, config(bias_update_rate=0.0), run_dir=tmp_path / "off", progress=False)
    assert all(layer.gate.e_score_correction_bias.abs().sum() > 0 for _, layer in moe_layers(on))
    assert all(layer.gate.e_score_correction_bias.abs().sum() == 0 for _, layer in moe_layers(off))
    loads = [r for r in result.history if r["type"] == "load"]
    assert len(loads) == 8 and len(loads[-1]["layers"]) == len(moe_layers(on))
    assert all(r["max_over_mean"] >= 1.0 for r in loads)


def test_bias_updates_need_a_model_with_correction_biases(data, tmp_path):
    model = MoEForCausalLM(MoEConfig.preset("tiny").replace(topk_method="greedy", scoring_func="softmax"))
    with pytest.raises(ValueError, match="noaux_tc"):
        pretrain(model, data, None, config(), run_dir=tmp_path, progress=False)


def test_held_out_loss_is_the_mean_token_cross_entropy(data):
    model = tiny_model().eval()
    batch = data.sequences(torch.arange(len(data)))
    with torch.no_grad():
        logits = model(batch[:, :-1])
    expected = F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten()).item()
    assert held_out_loss(model, data, batch_size=3) == pytest.approx(expected, rel=1e-5)
    assert all(layer.tokens_per_expert.sum() == 0 for _, layer in moe_layers(model))


def test_batch_must_split_into_micro_batches():
    with pytest.raises(ValueError, match="micro-batches"):
        PretrainConfig(batch_size=6, micro_batch_size=4).accumulation_steps(1)


@pytest.mark.slow
def test_two_processes_under_torchrun_match_one(texts, tokenizer, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(texts))
    tokenizer.save(tmp_path / "tok")
    common = [
        "train", "base", "--preset", "tiny", "--tokenizer", str(tmp_path / "tok"), "--data", str(corpus),
        "--steps", "6", "--seq-len", "32", "--batch-size", "4", "--micro-batch-size", "2",
        "--warmup-steps", "2", "--log-every", "1", "--no-progress", "--lr", "0.01",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "apps.cli"]
    subprocess.run([*torchrun, *common, "--run-dir", str(tmp_path / "two")], check=True, env=env, cwd=REPO)
    single = [sys.executable, "-m", "apps.cli", *common, "--run-dir", str(tmp_path / "one")]
    subprocess.run(single, check=True, env=env, cwd=REPO)
    two, one = (json.loads((tmp_path / d / "training_summary.json").read_text()) for d in ("two", "one"))
    assert two["processes"] == 2 and one["processes"] == 1
    assert [r["loss"] for r in two["loss_curve"]] == pytest.approx(
        [r["loss"] for r in one["loss_curve"]], abs=1e-4
    )
