"""Smoke runs of the training benchmarks: every figure present and sane, JSON written.

.venv/bin/python -m pytest tests/benchmarks/test_train_benches.py -q
"""

import json

import pytest

from benchmarks import pretrain_ablation, train_throughput


def test_train_throughput_quick_reports_both_models(tmp_path):
    out = tmp_path / "t.json"
    train_throughput.main(["--quick", "--out", str(out)])
    (cell,) = json.loads(out.read_text())["cells"]
    assert cell["preset"] == "tiny" and cell["device"] == "cpu" and cell["mfu"] is None
    assert cell["ours_tokens_per_s"] > 0 and cell["theirs_tokens_per_s"] > 0
    assert cell["ratio"] == pytest.approx(cell["ours_tokens_per_s"] / cell["theirs_tokens_per_s"])


def test_pretrain_ablation_quick_runs_three_arms_and_updates_a_card(tmp_path):
    card = tmp_path / "card"
    card.mkdir()
    (card / "training_summary.json").write_text(json.dumps(_summary()))
    out = tmp_path / "a.json"
    report = pretrain_ablation.main(
        ["--quick", "--run-root", str(tmp_path / "runs"), "--out", str(out), "--card", str(card)]
    )
    assert set(report["runs"]) == {"moe + bias updates", "moe, no bias updates", "dense"}
    assert report["runs"]["dense"]["load_balance"] is None
    assert all(run["held_out_loss"] > 0 for run in report["runs"].values())
    assert json.loads(out.read_text())["steps"] == 6
    text = (card / "README.md").read_text()
    assert "## Ablation" in text and "moe, no bias updates" in text


def _summary() -> dict:
    config = dict(batch_size=4, seq_len=32, lr=0.01, weight_decay=0.1, warmup_steps=1, min_lr_ratio=0.1,
                  max_grad_norm=1.0, bias_update_rate=0.001, log_every=1)  # fmt: skip
    return {
        "parameters": 1e6, "active_parameters": 5e5, "steps": 6, "tokens_seen": 768, "epochs": 0.5,
        "train_seconds": 1.0, "device": "cpu", "processes": 1, "tokens_per_second": 768.0, "config": config,
        "data": {"train_sources": {"stdlib": {"documents": 2, "characters": 10}}, "train_tokens": 100,
                 "held_out_documents": ["stdlib:a.py"], "held_out_tokens": 50},
        "held_out_loss": 4.0, "unigram_held_out_loss": 5.0,
        "load_balance": {"max_over_mean": 1.2, "mean_max_over_mean": 1.1},
    }  # fmt: skip
