"""What the inspection tests share: a tiny, untrained QC model saved to disk with NEU-DET's six
class names (its scores are arbitrary but well formed), real NEU-DET images, and synthetic PNGs.

.venv/bin/python -m pytest -q tests/apps/industrial_qc/test_inspection.py \\
    tests/apps/industrial_qc/test_store.py tests/apps/industrial_qc/test_api.py
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from apps.industrial_qc.model import QCModel, QCModelConfig, save_qc_model
from core_model.datasets import dataset_dir

NEU_CLASSES = ["crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches"]


@pytest.fixture(scope="session")
def tiny_qc_model(tmp_path_factory) -> Path:
    """A tiny QCModel (32-px images, 4-px cells: an 8 x 8 anomaly map) saved with save_qc_model."""
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("qc_model") / "model"
    return save_qc_model(QCModel(QCModelConfig.preset("tiny")), directory, class_names=NEU_CLASSES)


@pytest.fixture(scope="session")
def neu_images() -> list[Path]:
    """One real NEU-DET image (200 x 200 JPEG) of each class."""
    return [dataset_dir("neu_det") / "IMAGES" / f"{name}_1.jpg" for name in NEU_CLASSES]


def png_bytes(width: int, height: int, *, seed: int = 0) -> bytes:
    """A grey noise PNG of width x height with a bright square in it."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(60, 120, size=(height, width), dtype=np.uint8)
    pixels[height // 4 : height // 2, width // 4 : width // 2] = 250
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()
