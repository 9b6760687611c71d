"""What the inspection API reads and answers. JSON bodies are checked here, at the edge: a bad
verdict or a threshold outside [0, 1] is a 422 that names the field, never a 500. (The image
upload itself is multipart: `api.py` reads it, `images.py` checks it.)
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from .models import VERDICTS

LineId = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Limit = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]


class DefectOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    class_: str = Field(alias="class")  # the defect class
    box: list[float]  # [x0, y0, x1, y1] in the uploaded image's pixels, x1 and y1 exclusive
    score: float  # its best cell's defect score times that cell's centredness in the box


class AnomalyMapOut(BaseModel):
    rows: int
    cols: int
    values: list[float]  # rows * cols cells, row-major: each cell's defect score in [0, 1]


class FeedbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    verdict: Literal[VERDICTS]  # type: ignore[valid-type]
    note: str | None = Field(default=None, max_length=2000)
    operator: str | None = Field(default=None, max_length=64)


class FeedbackOut(BaseModel):
    inspection_id: int
    verdict: str
    note: str | None
    operator: str | None
    created_at: datetime


class InspectionOut(BaseModel):
    inspection_id: int
    line_id: str
    station_id: str
    filename: str | None
    image_sha256: str
    content_type: str
    width: int
    height: int
    defect_class: str  # the class head's most likely class
    class_scores: dict[str, float]
    pred_score: float  # P(any defect): the best cell's
    pred_label: Literal["defect", "good"]  # pred_score >= threshold
    passed: bool
    threshold: float
    defects: list[DefectOut]
    anomaly_map: AnomalyMapOut
    image_url: str
    overlay_url: str
    model_version: str
    latency_ms: float
    created_at: datetime
    feedback: FeedbackOut | None = None  # the newest operator verdict


class InspectionsOut(BaseModel):
    inspections: list[InspectionOut]


class RateBucketOut(BaseModel):
    start: datetime
    line_id: str
    station_id: str
    inspected: int
    failed: int
    rate: float  # failed / inspected


class RatesOut(BaseModel):
    bucket_minutes: int
    since: datetime
    buckets: list[RateBucketOut]  # oldest first, then by line and station


class ParetoClassOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    class_: str = Field(alias="class")
    count: int
    share: float
    cumulative_share: float


class ParetoOut(BaseModel):
    since: datetime
    classes: list[ParetoClassOut]  # most defects first


class SettingsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    threshold: Limit | None = None
    default_line_limit: Limit | None = None
    # a line's failure-rate limit; null removes the line's own limit (the default applies again)
    line_limits: dict[LineId, Limit | None] | None = None


class SettingsOut(BaseModel):
    threshold: float
    default_line_limit: float
    line_limits: dict[str, float]
    max_upload_bytes: int
    max_batch: int


class AlertOut(BaseModel):
    line_id: str
    inspected: int
    failed: int
    rate: float
    limit: float


class AlertsOut(BaseModel):
    window_minutes: int
    alerts: list[AlertOut]  # the lines above their limit, highest rate first
