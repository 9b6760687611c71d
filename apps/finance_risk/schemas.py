"""What the finance API reads and answers. Every field is checked here, at the edge: a malformed
amount or timestamp is a 422 that names the field, never a 500.
"""

from __future__ import annotations

from datetime import date, datetime
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


class AttendedOut(BaseModel):
    transaction_id: str
    timestamp: str
    amount: float
    weight: float  # the share of the transaction's attention (last layer, mean of heads) on it


class ScoreOut(BaseModel):
    transaction_id: str
    score: float
    decision: Literal["alert", "pass"]
    threshold: float
    reasons: list[ReasonOut]  # the features that raised the score most
    events: list[AttendedOut]  # the card's earlier transactions the model weighed most
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


# --------------------------------------------------------------------- the analysts' desk (GET)


class EventOut(BaseModel):
    """An earlier transaction of the card, and how much the attention weighed it."""

    model_config = ConfigDict(coerce_numbers_to_str=True)
    transaction_id: str
    timestamp: datetime
    amount: float
    weight: float


class ReasonsOut(BaseModel):
    features: list[ReasonOut] = []
    events: list[EventOut] = []  # the earlier transactions the attention weighed most, when recorded


class LabelOut(BaseModel):
    fraud: bool
    source: str
    arrived_at: datetime


class AlertTransactionOut(BaseModel):
    transaction_id: str
    timestamp: datetime
    terminal_id: str
    amount: float
    score: float
    reasons: ReasonsOut | None  # None: scored without reasons (the replay's offline seeding)
    label: LabelOut | None  # its newest label, if any


class AlertCardOut(BaseModel):
    rank: int
    customer_id: str
    score: float  # the card's riskiest transaction's
    alert: bool  # score >= threshold
    transactions: list[AlertTransactionOut]  # the card's scored transactions of the day, riskiest first


class AlertsOut(BaseModel):
    day: date
    k: int
    threshold: float
    scored: int  # the day's scored transactions
    cards: list[AlertCardOut]


class DayOut(BaseModel):
    day: date
    transactions: int
    scored: int


class DaysOut(BaseModel):
    days: list[DayOut]  # oldest first


class DailyOut(BaseModel):
    day: date
    transactions: int
    scored: int
    alerts: int  # scored >= threshold
    alert_rate: float | None  # alerts / scored
    labelled: int
    frauds: int
    fraud_rate: float | None  # frauds / labelled
    auc: float | None  # over the day's scored and labelled transactions; None without both classes
    ap: float | None
    cp_at_k: float | None


class DailyStatsOut(BaseModel):
    start: date
    end: date
    threshold: float
    k: int
    days: list[DailyOut]  # the days with transactions, oldest first


class DistributionOut(BaseModel):
    day: date
    edges: list[float]  # bins + 1 edges over [0, 1]
    counts: list[int]  # scored transactions per bin
    fraud: list[int]  # of them labelled fraud
    genuine: list[int]  # of them labelled genuine
