"""The MoE layer benchmark's smoke run: every implementation in every cell, agreeing, timed.

.venv/bin/python -m pytest tests/benchmarks/test_moe_layer_bench.py -q
"""

import json

import pytest

from benchmarks.moe_layer import OURS, main, transformers_implementations


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "x.json"
    main(["--quick", "--out", str(out)])
    return json.loads(out.read_text())


def test_quick_covers_tiny_cpu_float32_at_1_and_16_tokens(report):
    cells = {(c["preset"], c["device"], c["dtype"], c["tokens"]) for c in report["cells"]}
    assert cells == {("tiny", "cpu", "float32", 1), ("tiny", "cpu", "float32", 16)}
    assert report["environment"]["torch"] and report["environment"]["transformers"]


def test_every_implementation_is_reported_in_every_cell(report):
    expected = {*OURS, *(f"hf:{name}" for name in transformers_implementations())}
    for cell in report["cells"]:
        assert set(cell["results"]) == expected


def test_ran_implementations_agree_with_ours_and_have_positive_times(report):
    for cell in report["cells"]:
        ran = {name: r for name, r in cell["results"].items() if r["status"] == "ok"}
        assert {"grouped", "looped", "hf:eager", "hf:grouped_mm"} <= set(ran)
        for result in ran.values():
            assert result["max_abs_diff"] < 1e-4
            assert result["median_ms"] > 0 and result["repeats"] >= 1
        skipped = [r for r in cell["results"].values() if r["status"] == "skipped"]
        assert all(r["reason"] for r in skipped)
        assert cell["speedup"] > 0 and cell["fastest_transformers"] in ran
