"""The federated-medical benchmark's smoke run: every section reports the figures the table prints.

.venv/bin/python -m pytest tests/benchmarks/test_federated_medical_bench.py -q
"""

import json

import pytest

from benchmarks.federated_medical import main


@pytest.mark.slow
def test_quick_run_reports_every_section(tmp_path):
    out = tmp_path / "federated_medical.json"
    main(["--quick", "--out", str(out)])
    report = json.loads(out.read_text())
    for name in ("centralized", "even", "skewed"):
        assert 0.0 <= report[name]["test"]["f1"] <= 1.0
    assert report["centralized"]["train_sentences"] == report["even"]["train_sentences"]  # the same records
    assert sorted(k for k in report["single_sites"] if k != "section_s") == sorted(
        f"{m}/{s}" for m in ("skewed", "even") for s in ("north", "south", "east")
    )
    assert set(report["dp"]) == {"clip", "noise 0.5", "section_s"}
    assert report["bytes"]["full_model"] > 100 * report["bytes"]["adapter_and_head"]
    even = report["even"]
    assert even["bytes_up_per_round"] == 3 * report["bytes"]["adapter_and_head"]
    assert len(even["round_s"]) == report["rounds"] == 2 and len(even["update_norms"]) == 1
