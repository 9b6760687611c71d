"""The engine-features benchmark runs end to end on the tiny preset.

.venv/bin/python -m pytest tests/benchmarks/test_engine_features_bench.py -q
"""

import json

from benchmarks.engine_features import main


def test_quick_run_reports_every_figure(tmp_path):
    out = tmp_path / "features.json"
    report = main(["--quick", "--out", str(out)])
    assert json.loads(out.read_text())["adapters"]["ratio"] == report["adapters"]["ratio"]
    assert report["adapters"]["base_tokens_per_s"] > 0 and report["adapters"]["mixed_tokens_per_s"] > 0
    assert report["int8"]["memory_ratio"] < 0.75  # embeddings and kv_b_proj stay in float
    assert 0.0 <= report["int8"]["greedy_agreement_mean"] <= 1.0
