"""`QCSettings`: what the inspection API needs to know, parsed once at the edge (`verticals serve
--qc-...` or a test) and passed down; nothing below reads the environment.

The threshold and the lines' rate limits given here are defaults: operators change them at run
time (`PUT /qc/settings`), and what they set is kept in the database, so it survives a restart.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

ASSETS = Path(__file__).resolve().parent / "assets"
SHIPPED_MODEL = ASSETS / "model"  # a folder written by save_qc_model (shipped once trained)
DEFAULT_DATABASE = "sqlite:///runs/qc.db"
DEFAULT_IMAGES = "runs/qc_images"
DEFAULT_THRESHOLD = 0.5
DEFAULT_LINE_LIMIT = 0.2  # a line alerts when more than this share of its parts fail
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MAX_BATCH = 32
MAX_PIXELS = 50_000_000  # an image's width x height at most (a 10 MB PNG can decode to gigabytes)

Backend = Literal["torch", "onnx"]


@dataclass(frozen=True)
class QCSettings:
    database: str = DEFAULT_DATABASE
    model: str = str(SHIPPED_MODEL)  # a folder written by save_qc_model
    images: str = DEFAULT_IMAGES  # uploaded images, one file per content hash
    threshold: float = DEFAULT_THRESHOLD  # fail when pred_score >= threshold (until an operator sets one)
    line_limit: float = DEFAULT_LINE_LIMIT  # the failure rate a line may reach (until set per line)
    backend: Backend = "torch"
    max_upload_bytes: int = MAX_UPLOAD_BYTES  # per image
    max_batch: int = MAX_BATCH  # images per batch request
    max_pixels: int = MAX_PIXELS

    def __post_init__(self) -> None:
        for name in ("threshold", "line_limit"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"QC {name} must be in [0, 1], got {getattr(self, name)}")
        if self.backend not in ("torch", "onnx"):
            raise ValueError(f"QC backend must be torch or onnx, got {self.backend!r}")
