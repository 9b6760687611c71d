"""Intent recognition: a LoRA adapter plus a sequence-classification head on the suite's model,
trained on BANKING77, with an out-of-scope threshold below which a message goes to a person.

    classifier = IntentClassifier.load("apps/customer_service/assets/intents")
    result = classifier.parse(["I still haven't received my card"])[0]
    result.name, result.confidence, result.out_of_scope, result.ranking[:3]

The threshold is calibrated on a part of BANKING77 train kept aside from training
(`calibrate_threshold`): the lowest confidence at which the predictions the suite keeps are right
at least `target_precision` of the time. It is stored beside the adapter in `calibration.json`.
Training lives in `training.py`; this module only loads and predicts.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from core_model.checkpoint import encoder_dtype
from core_model.train.adapters import TaskModel, load_for_inference

CALIBRATION_FILE = "calibration.json"
DEFAULT_TARGET_PRECISION = 0.9
RANKING_SIZE = 10  # Rasa's default length of intent_ranking


@dataclass(frozen=True)
class IntentResult:
    name: str
    confidence: float
    ranking: list[tuple[str, float]]  # most likely first
    out_of_scope: bool  # below the threshold: hand the message to a person


class IntentClassifier:
    """A trained sequence-classification TaskModel and its out-of-scope threshold.

    Calls are serialised by a lock: one forward pass at a time uses every core better than
    several competing for them.
    """

    def __init__(self, model: TaskModel, *, threshold: float, version: str = "") -> None:
        if model.task != "sequence-classification":
            raise ValueError(
                f"an intent classifier needs a sequence-classification adapter, got {model.task!r}"
            )
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"the out-of-scope threshold must be in [0, 1], got {threshold}")
        self.model, self.threshold, self.version = model, threshold, version
        self._lock = threading.Lock()

    @property
    def labels(self) -> list[str]:
        return self.model.labels

    @classmethod
    def load(
        cls, adapter_dir: str | Path, *, base: str | None = None, threshold: float | None = None
    ) -> IntentClassifier:
        """The adapter in `adapter_dir` on `base` (default: the base it was trained on), its LoRA
        merged into the weights for speed, in checkpoint.encoder_dtype. `threshold`: None reads
        `calibration.json`."""
        model = load_for_inference(adapter_dir, base=base, dtype=encoder_dtype("cpu"))
        if threshold is None:
            threshold = read_calibration(adapter_dir)["threshold"]
        return cls(model, threshold=threshold, version=Path(adapter_dir).name)

    def parse(self, texts: list[str]) -> list[IntentResult]:
        with self._lock, torch.inference_mode():
            probs_NL = self.model.probabilities(texts)
        top = min(RANKING_SIZE, len(self.labels))
        results = []
        for probs_L in probs_NL:
            values, ids = probs_L.topk(top)
            ranking = [(self.labels[int(i)], round(float(v), 4)) for v, i in zip(values, ids, strict=True)]
            name, confidence = ranking[0]
            results.append(IntentResult(name, confidence, ranking, confidence < self.threshold))
        return results


def calibrate_threshold(
    confidences: list[float], correct: list[bool], *, target_precision: float = DEFAULT_TARGET_PRECISION
) -> dict[str, float]:
    """The lowest threshold at which the predictions kept (confidence >= threshold) are right at
    least `target_precision` of the time, and what it keeps: {threshold, coverage, precision}.

    Scans the confidences from the highest down, so the kept set only grows; when no prefix reaches
    the target, the threshold is the highest confidence (almost everything goes to a person).
    """
    if len(confidences) != len(correct) or not confidences:
        raise ValueError("calibration needs one correctness flag per confidence, and at least one")
    order = sorted(range(len(confidences)), key=lambda i: -confidences[i])
    right, best = 0, {"threshold": confidences[order[0]], "coverage": 0.0, "precision": 1.0}
    for kept, i in enumerate(order, start=1):
        right += correct[i]
        next_differs = kept == len(order) or confidences[order[kept]] < confidences[i]
        if next_differs and right / kept >= target_precision:
            best = {"threshold": confidences[i], "coverage": kept / len(order), "precision": right / kept}
    return {key: round(value, 4) for key, value in best.items()}


def write_calibration(adapter_dir: str | Path, calibration: dict[str, float | int | str]) -> None:
    (Path(adapter_dir) / CALIBRATION_FILE).write_text(json.dumps(calibration, indent=2) + "\n")


def read_calibration(adapter_dir: str | Path) -> dict[str, float]:
    path = Path(adapter_dir) / CALIBRATION_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: calibrate the adapter or pass a threshold")
    calibration = json.loads(path.read_text())
    if not isinstance(calibration.get("threshold"), int | float):
        raise ValueError(f"{path}: 'threshold' must be a number")
    return calibration
