"""The customer-service benchmark's smoke run: its sections produce every figure the table prints.

.venv/bin/python -m pytest tests/benchmarks/test_customer_service_bench.py -q
"""

import json

import pytest

from benchmarks.customer_service import main


@pytest.mark.slow
def test_quick_run_reports_intents_retrieval_and_latency(tmp_path):
    out = tmp_path / "cs.json"
    main(["--quick", "--sections", "intents,retrieval,latency", "--out", str(out)])
    report = json.loads(out.read_text())
    intents = report["intents"]
    assert 0 < intents["ours_accuracy"] <= 1 and 0 < intents["baseline_accuracy"] <= 1
    assert intents["test_examples"] == 200
    assert {"bm25", "vector", "hybrid"} <= report["retrieval"].keys()
    assert 0 <= report["retrieval"]["hybrid"]["recall@1"] <= report["retrieval"]["hybrid"]["recall@5"] <= 1
    latency = report["latency"]
    assert latency["messages_c1"]["p50_ms"] <= latency["messages_c1"]["p99_ms"]
    assert latency["messages_c8"]["requests"] == 8 * 5
    assert latency["draft"]["first_token_p50_ms"] > 0
