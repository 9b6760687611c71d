"""`FinanceSettings`: what the finance app needs to know, parsed once at the edge (`verticals serve
--finance-...`, `verticals finance ...` or a test) and passed down; nothing below reads the
environment.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

ASSETS = Path(__file__).resolve().parent / "assets"
SHIPPED_MODEL = ASSETS / "model"  # `verticals finance train` with its defaults (see its README.md)
DEFAULT_DATABASE = "sqlite:///runs/finance.db"
DEFAULT_MODEL = str(SHIPPED_MODEL)
DEFAULT_THRESHOLD = 0.5
MAX_BATCH = 1000
Backend = Literal["torch", "onnx"]


@dataclass(frozen=True)
class FinanceSettings:
    database: str = DEFAULT_DATABASE
    model: str = DEFAULT_MODEL  # a folder written by save_fraud_model
    threshold: float = DEFAULT_THRESHOLD  # a request may set its own (?threshold=)
    max_batch: int = MAX_BATCH
    backend: Backend = "onnx"  # the scoring pass in onnxruntime (export.py) or PyTorch

    def __post_init__(self) -> None:
        if self.backend not in get_args(Backend):
            raise ValueError(f"finance backend must be torch or onnx, got {self.backend!r}")
