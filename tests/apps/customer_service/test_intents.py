"""The out-of-scope threshold: calibrated on kept-aside examples, read back beside the adapter.

.venv/bin/python -m pytest tests/apps/customer_service/test_intents.py -q
"""

import pytest

from apps.customer_service.intents import calibrate_threshold, read_calibration, write_calibration
from apps.customer_service.training import kept_aside


def test_the_threshold_keeps_the_predictions_that_reach_the_target_precision():
    confidences = [0.95, 0.9, 0.8, 0.7, 0.6, 0.5]
    correct = [True, True, True, False, True, False]
    calibration = calibrate_threshold(confidences, correct, target_precision=0.8)
    # kept at 0.6: 4 right of 5 = 0.8; at 0.5: 4 of 6 < 0.8
    assert calibration == {"threshold": 0.6, "coverage": round(5 / 6, 4), "precision": 0.8}


def test_a_threshold_never_splits_equal_confidences():
    calibration = calibrate_threshold([0.9, 0.7, 0.7], [True, True, False], target_precision=0.9)
    assert calibration["threshold"] == 0.9  # keeping one 0.7 would mean keeping both


def test_when_nothing_reaches_the_target_almost_everything_goes_to_a_person():
    calibration = calibrate_threshold([0.9, 0.8], [False, False], target_precision=0.5)
    assert calibration == {"threshold": 0.9, "coverage": 0.0, "precision": 1.0}


def test_calibration_needs_matching_lists():
    with pytest.raises(ValueError, match="one correctness flag per confidence"):
        calibrate_threshold([0.5], [True, False])


def test_calibration_round_trips_beside_the_adapter(tmp_path):
    write_calibration(tmp_path, {"threshold": 0.42, "coverage": 0.9})
    assert read_calibration(tmp_path)["threshold"] == 0.42
    (tmp_path / "calibration.json").write_text('{"threshold": "high"}')
    with pytest.raises(ValueError, match="'threshold' must be a number"):
        read_calibration(tmp_path)


def test_the_kept_aside_part_is_stable_and_about_a_tenth():
    texts = [f"message number {i}" for i in range(2000)]
    aside = [t for t in texts if kept_aside(t)]
    assert aside == [t for t in texts if kept_aside(t)]
    assert 150 < len(aside) < 250
