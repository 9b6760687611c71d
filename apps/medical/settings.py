"""`MedicalSettings`: what the medical app needs to know, parsed once at the edge (`verticals
serve --medical-...` or a test) and passed down; nothing below reads the environment.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ASSETS = Path(__file__).resolve().parent / "assets"
DEFAULT_REGISTRY = "runs/adapters"  # where `verticals fed run` publishes each round
DEFAULT_ROUNDS_DATABASE = "sqlite:///runs/fed/federated.db"  # where `verticals fed run` records rounds
SHIPPED_ADAPTER = ASSETS / "ner"  # served until a federation publishes its own
MAX_TEXT_CHARS = 20_000


@dataclass(frozen=True)
class MedicalSettings:
    registry: str = DEFAULT_REGISTRY
    adapter: str = "medical"  # the registry name the federation publishes (federation.ADAPTER)
    fallback_adapter: str | None = str(SHIPPED_ADAPTER)  # served while the registry has none
    rounds_database: str = DEFAULT_ROUNDS_DATABASE  # the coordinator's round records
    max_text_chars: int = MAX_TEXT_CHARS
