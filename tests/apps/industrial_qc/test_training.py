"""The training loop and the `verticals qc` model commands: the schedule, that a tiny model's losses
fall on real NEU-DET images, that evaluation's figures agree with the model's own predictions, and
the commands end to end (train, evaluate, a clear error for a folder that is not a data set).

.venv/bin/python -m pytest -q tests/apps/industrial_qc/test_training.py
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from apps.cli import main
from apps.industrial_qc.baseline import CNNBaseline
from apps.industrial_qc.dataset import InspectionDataset, collate
from apps.industrial_qc.model import QCModel, QCModelConfig, load_qc_model
from apps.industrial_qc.training import TrainingConfig, evaluate, fit, giou_loss, learning_rate, read_splits

TINY = QCModelConfig.preset("tiny")


@pytest.fixture(scope="module")
def neu():
    data = read_splits()
    # a few images of every class: the splits list records by path, so by class
    pick = lambda records, n: [r for c in data.classes for r in [x for x in records if x.label == c][:n]]  # noqa: E731
    return replace(data, train=pick(data.train, 4), valid=pick(data.valid, 2), test=pick(data.test, 2))


def test_learning_rate_warms_up_then_decays_to_zero():
    rates = [learning_rate(step, total=100, warmup=10, peak=1e-3) for step in range(101)]
    assert rates[0] == pytest.approx(1e-4) and rates[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(rates[10:], rates[11:], strict=False))
    assert rates[100] == pytest.approx(0.0, abs=1e-12)


def test_giou_loss_is_zero_for_the_same_box_and_grows_as_boxes_part():
    same = torch.tensor([[4.0, 4.0, 4.0, 4.0]])
    assert giou_loss(same, same).item() == pytest.approx(0.0, abs=1e-6)
    half = giou_loss(torch.tensor([[4.0, 4.0, 0.0, 4.0]]), same).item()  # half the box: IoU 1/2
    assert half == pytest.approx(0.5, abs=1e-6)
    far = giou_loss(torch.tensor([[0.1, 0.1, 0.1, 0.1]]), torch.tensor([[40.0, 40.0, 40.0, 40.0]])).item()
    assert half < far < 2.0


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="box_threshold"):
        TrainingConfig(box_threshold=1.5)
    with pytest.raises(KeyError):
        TrainingConfig(augment="wild")


@pytest.mark.parametrize("build", [QCModel, CNNBaseline])
def test_losses_fall_on_real_images(neu, build):
    torch.manual_seed(0)
    model = build(replace(TINY, num_classes=len(neu.classes)))
    config = TrainingConfig(epochs=6, batch_size=8, lr=3e-3, warmup_epochs=1, augment="none")
    history = fit(model, neu.train, classes=neu.classes, config=config, valid=neu.valid, progress=False)
    assert [row["epoch"] for row in history] == list(range(1, 7))
    assert history[-1]["cell_loss"] < history[0]["cell_loss"]
    assert history[-1]["class_loss"] < history[0]["class_loss"]
    assert history[-1]["box_loss"] < history[0]["box_loss"]
    assert 0.0 <= history[-1]["valid_accuracy"] <= 1.0


def test_evaluation_agrees_with_the_models_predictions(neu):
    torch.manual_seed(1)
    model = QCModel(replace(TINY, num_classes=len(neu.classes))).eval()
    report = evaluate(model, neu.test, classes=neu.classes)
    batch = collate(
        [
            InspectionDataset(neu.test, classes=neu.classes, size=TINY.image_size)[i]
            for i in range(len(neu.test))
        ]
    )
    with torch.inference_mode():
        predicted = model(batch.images_B3SS)[0].argmax(-1)
    assert report.images == len(neu.test)
    assert report.accuracy == pytest.approx(float((predicted == batch.labels_B).float().mean()))
    assert set(report.recall) == set(neu.classes) and set(report.ap50) == set(neu.classes)
    assert 0.0 <= report.map50 <= 1.0 and 0.0 <= report.map50_soft_nms <= 1.0


def test_read_splits_of_class_folders_without_a_split_file(tmp_path):
    for name, count in (("good", 10), ("scratch", 10)):
        (tmp_path / name).mkdir()
        for i in range(count):
            Image.fromarray(np.full((20, 20, 3), i * 10, dtype=np.uint8)).save(tmp_path / name / f"{i}.png")
    data = read_splits(tmp_path)
    assert data.classes == ["good", "scratch"]
    assert (len(data.train), len(data.valid), len(data.test)) == (16, 2, 2)


def test_qc_train_then_evaluate_commands(tmp_path, capsys):
    out = tmp_path / "model"
    argv = [
        "qc",
        "train",
        "--preset",
        "tiny",
        "--epochs",
        "1",
        "--limit",
        "12",
        "--no-progress",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    model, card = load_qc_model(out)
    assert card["class_names"] == read_splits().classes and card["metrics"]["epochs"] == 1
    assert main(["qc", "evaluate", "--model", str(out), "--split", "val"]) == 0
    printed = capsys.readouterr().out
    report = json.loads(printed[printed.index("{") :])
    assert report["images"] == 180 and 0.0 <= report["accuracy"] <= 1.0


def test_qc_train_names_a_folder_that_is_not_a_data_set(tmp_path, capsys):
    assert main(["qc", "train", "--data", str(tmp_path), "--out", str(tmp_path / "m")]) == 2
    error = capsys.readouterr().err
    assert str(tmp_path) in error and "accepted layouts" in error
