"""The industrial-QC benchmark's smoke run: a tiny model through every section, and the table.

.venv/bin/python -m pytest tests/benchmarks/test_industrial_qc_bench.py -q
"""

import json

import pytest

from benchmarks.industrial_qc import main, table


@pytest.mark.slow
def test_smoke_run_reports_every_section(tmp_path):
    out, model = tmp_path / "industrial_qc.json", tmp_path / "model"
    main([
        "--preset", "tiny", "--epochs", "1", "--limit", "12", "--keep-model", str(model),
        "--seconds", "0.2", "--requests", "2", "--concurrency", "1", "--out", str(out),
    ])  # fmt: skip
    report = json.loads(out.read_text())
    accuracy = report["accuracy"]
    for name in ("ours", "cnn"):
        test = accuracy[name]["test"]
        assert test["images"] == 12 and 0.0 <= test["accuracy"] <= 1.0 and 0.0 <= test["map50"] <= 1.0
        assert len(accuracy[name]["history"]) == 1
    assert (model / "model.safetensors").is_file()
    assert report["throughput"]["model"] == report["latency"]["model"] == str(model)
    for backend in ("torch", "onnx"):
        assert report["throughput"][f"{backend}_batch32_images_per_s"] > 0
    (run,) = report["latency"]["runs"]
    assert run["clients"] == 1 and run["requests"] == 2 and run["p99_ms"] >= run["p50_ms"] > 0
    printed = "\n".join(table(report))
    assert "mAP50" in printed and "onnx" in printed and "P99 ms" in printed
