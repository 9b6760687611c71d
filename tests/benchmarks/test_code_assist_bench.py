"""The code-assist benchmark's smoke run: its sections produce every figure the table prints.

.venv/bin/python -m pytest tests/benchmarks/test_code_assist_bench.py -q
"""

import json

import pytest

from benchmarks.code_assist import NgramModel, edit_similarity, main
from core_model import load_tokenizer


def test_edit_similarity_is_one_minus_levenshtein_over_the_longer():
    assert edit_similarity("return x", "return x") == 1.0
    assert edit_similarity("abcd", "abxd") == 0.75
    assert edit_similarity("", "abc") == 0.0


def test_the_ngram_baseline_continues_what_it_has_seen():
    model = NgramModel(load_tokenizer("embedded"))
    model.fit(["for item in items:\n    total += item.price\n"] * 3, max_tokens=10_000)
    assert model.complete_line("for item in items:\n    total += item.") == "price"


@pytest.mark.slow
def test_quick_run_reports_every_section(tmp_path):
    out = tmp_path / "code.json"
    main(["--quick", "--out", str(out)])
    report = json.loads(out.read_text())
    assert set(report["lines"]["results"]) == {
        "adapter + context", "adapter + context, raw model output", "adapter + context, not copying",
        "adapter, no context", "base, no adapter", "4-gram baseline",
    }  # fmt: skip
    assert all(0 <= r["edit_similarity"] <= 1 for r in report["lines"]["results"].values())
    assert report["humaneval"]["problems"] == 3 and report["mbpp"]["problems"] == 3
    assert report["latency"]["c4"]["requests"] == 4 * 3
    assert report["latency"]["c1"]["p50_ms"] <= report["latency"]["c1"]["p95_ms"]
