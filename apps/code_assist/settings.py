"""`CodeAssistSettings`: what the code-assist app needs to know, parsed once at the edge
(`verticals serve --code-...` or a test) and passed down; nothing below reads the environment.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ASSETS = Path(__file__).resolve().parent / "assets"
DEFAULT_DATABASE_URL = "sqlite:///runs/code_assist.db"
DEFAULT_EVALUATIONS_DIR = Path("runs/code_assist/evaluations")  # `verticals code eval` writes here
ADAPTER_NAME = "code"  # the name the code adapter is served under (`embedded:code`)


@dataclass(frozen=True)
class CodeAssistSettings:
    database_url: str = DEFAULT_DATABASE_URL  # any SQLAlchemy URL; SQLite file by default
    # The fill-in-the-middle adapter; None serves the base alone (a real DeepSeek-Coder checkpoint
    # needs none). The shipped one is used only on the base it was trained on.
    adapter: str | None = str(ASSETS / "fim")
    index_dir: str | None = None  # a repository index from `verticals code index`, for context
    max_tokens: int = 64  # per completion, before post-processing
    temperature: float = 0.0  # greedy by default: an editor wants the likeliest completion
    context: bool = True  # add repository snippets to the prompt, and copy from more of them
    # How strongly a completion is pulled along a snippet its line so far occurs in (`prompts.py`);
    # 0 turns copying off. 12 was best on cursors of the held-out packages (8: a little less, 24: level).
    copy_bias: float = 12.0
    evaluations_dir: str = str(DEFAULT_EVALUATIONS_DIR)  # reports the API lists for the UI

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if not self.copy_bias >= 0:
            raise ValueError(f"copy_bias must be >= 0, got {self.copy_bias}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
