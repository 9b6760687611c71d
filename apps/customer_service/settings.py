"""`CustomerServiceSettings`: what the customer-service app needs to know, parsed once at the edge
(`verticals serve --cs-...` or a test) and passed down; nothing below reads the environment.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ASSETS = HERE / "assets"
DEMO_KNOWLEDGE_BASE = HERE / "data" / "demo_kb.md"
DEFAULT_DATABASE_URL = "sqlite:///runs/customer_service.db"


@dataclass(frozen=True)
class CustomerServiceSettings:
    database_url: str = DEFAULT_DATABASE_URL  # any SQLAlchemy URL; SQLite file by default
    # Markdown or CSV files to serve, indexed into index_dir when their content changed. Empty:
    # serve the index in index_dir as `verticals cs kb import` left it, or the demo KB if none.
    knowledge_base: tuple[str, ...] = ()
    index_dir: str = "runs/customer_service/kb"
    intent_adapter: str = str(ASSETS / "intents")
    slot_adapter: str = str(ASSETS / "slots")
    reply_adapter: str = str(ASSETS / "replies")
    out_of_scope_threshold: float | None = None  # None: the calibrated one stored with the adapter
    passages: int = 3  # passages retrieved per customer message
    passage_suggestions: int = 2  # of them, offered as ready replies
    context_turns: int = 6  # last turns in the draft prompt
    draft_max_tokens: int = 80
    draft_temperature: float = 0.0  # 0: greedy
    # How strongly a draft copies its passages' sentences (`grounded_replies.copy_sources`): inf,
    # made of them alone (or the hand-over); 0, the model writes freely; between, pulled to them.
    draft_copy_bias: float = math.inf
    bank_name: str = "Harbour & Pine Bank"

    def __post_init__(self) -> None:
        if self.out_of_scope_threshold is not None and not 0 <= self.out_of_scope_threshold <= 1:
            raise ValueError(f"out_of_scope_threshold must be in [0, 1], got {self.out_of_scope_threshold}")
        for name in ("passages", "context_turns", "draft_max_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.draft_copy_bias >= 0:
            raise ValueError(f"draft_copy_bias must be >= 0 (inf: copy only), got {self.draft_copy_bias}")
        if not 0 <= self.passage_suggestions <= self.passages:
            raise ValueError(f"passage_suggestions must be in [0, passages={self.passages}]")
