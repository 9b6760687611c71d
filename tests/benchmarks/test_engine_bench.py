"""The engine benchmark's smoke run: every figure present, throughputs positive, same greedy tokens.

.venv/bin/python -m pytest tests/benchmarks/test_engine_bench.py -q
"""

import json

import pytest

from benchmarks.engine import main

FIGURES = (
    "ours_tokens_per_s",
    "theirs_tokens_per_s",
    "ratio",
    "ours_decode_tokens_per_s",
    "theirs_decode_tokens_per_s",
    "decode_ratio",
    "ours_ttft_p50_ms",
    "ours_ttft_p99_ms",
    "theirs_ttft_ms",
)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "e.json"
    main(["--quick", "--out", str(out)])
    return json.loads(out.read_text())


def test_quick_covers_tiny_at_concurrency_1_and_4(report):
    cells = {(c["preset"], c["dtype"], c["concurrency"]) for c in report["cells"]}
    assert cells == {("tiny", "float32", 1), ("tiny", "float32", 4)}
    assert report["environment"]["torch"] and report["environment"]["transformers"]


def test_every_figure_is_reported_and_positive(report):
    for cell in report["cells"]:
        for figure in FIGURES:
            assert cell[figure] > 0, (cell["concurrency"], figure)
        assert cell["ours_ttft_p50_ms"] <= cell["ours_ttft_p99_ms"]
        assert isinstance(cell["same_greedy_tokens"], bool)


def test_goals_are_judged_where_the_issue_sets_them(report):
    by_concurrency = {c["concurrency"]: c for c in report["cells"]}
    assert by_concurrency[1]["goal_ratio"] == 3.0
    assert by_concurrency[1]["goal_met"] == (by_concurrency[1]["ratio"] >= 3.0)
    assert by_concurrency[4]["goal_met"] is None


def test_our_greedy_tokens_equal_transformers_at_batch_1(report):
    [cell] = [c for c in report["cells"] if c["concurrency"] == 1]
    assert cell["same_greedy_tokens"] and cell["first_difference"] is None


def test_kv_cache_figures_for_the_deepseek_v3_shape(report):
    kv = report["kv_cache"]
    assert (kv["shape"], kv["dtype"], kv["layers"]) == ("deepseek-v3", "bfloat16", 61)
    assert kv["ours_bytes_per_token"] == (512 + 64) * 2 * 61
    assert kv["decompressed_bytes_per_token"] == 128 * (128 + 64 + 128) * 2 * 61
    assert kv["transformers_bytes_per_token"] > 0 and kv["ratio_vs_transformers"] > 0
    assert kv["ratio_vs_decompressed"] == pytest.approx(4_997_120 / 70_272)
