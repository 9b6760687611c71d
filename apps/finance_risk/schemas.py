"""What the finance API reads and answers. Every field is checked here, at the edge: a malformed
amount or timestamp is a 422 that names the field, never a 500.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from .models import LABEL_SOURCES

Identifier = Field(min_length=1, max_length=64)


class TransactionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    transaction_id: str = Identifier
    customer_id: str = Identifier
    terminal_id: str = Identifier
    amount: float = Field(ge=0, allow_inf_nan=False, description="in the card's currency")
    timestamp: AwareDatetime = Field(description="ISO 8601 with a time zone, e.g. 2018-09-01T08:30:00Z")


class BatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    transactions: list[TransactionIn] = Field(min_length=1)


class ReasonOut(BaseModel):
    feature: str
    value: float
    contribution: float  # the score minus the score with this feature at its training mean


class ScoreOut(BaseModel):
    transaction_id: str
    score: float
    decision: Literal["alert", "pass"]
    threshold: float
    reasons: list[ReasonOut]
    history: int  # the card's earlier transactions the model read
    cold_start: bool  # no earlier transaction of this customer is known
    model_version: str
    latency_ms: float


class BatchOut(BaseModel):
    scores: list[ScoreOut]
    latency_ms: float


class LabelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    transaction_id: str = Identifier
    fraud: bool
    source: Literal[LABEL_SOURCES] = "analyst"  # type: ignore[valid-type]
    arrived_at: AwareDatetime | None = Field(default=None, description="default: now")


class LabelsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    labels: list[LabelIn] = Field(min_length=1)
