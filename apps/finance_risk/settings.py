"""`FinanceSettings`: what the finance app needs to know, parsed once at the edge (`verticals serve
--finance-...` or a test) and passed down; nothing below reads the environment.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_DATABASE = "sqlite:///runs/finance.db"
DEFAULT_MODEL = "runs/finance/model"  # where `benchmarks/finance_risk.py --keep-model` saves one
DEFAULT_THRESHOLD = 0.5
MAX_BATCH = 1000


@dataclass(frozen=True)
class FinanceSettings:
    database: str = DEFAULT_DATABASE
    model: str = DEFAULT_MODEL  # a folder written by save_fraud_model
    threshold: float = DEFAULT_THRESHOLD  # a request may set its own (?threshold=)
    max_batch: int = MAX_BATCH
