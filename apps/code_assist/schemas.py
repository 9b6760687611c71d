"""Request and response bodies of the code-assist API, in the shapes of Tabby's published API
(`clients/tabby-openapi`: CompletionRequest, CompletionResponse, LogEventRequest, HealthState), so
Tabby's editor plugins work against `/code` unchanged.

Fields Tabby defines but this server does not use (`git_url`, `clipboard`, `debug_options` other
than `return_snippets`/`return_prompt`/`disable_retrieval_augmented_code_completion`) are accepted
and ignored, as an older or newer plugin may send them; unknown fields are ignored too.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

MAX_SEGMENT_CHARS = 1_000_000  # a whole large file; the prompt keeps only the cursor's surroundings


class Declaration(BaseModel):
    filepath: str
    body: str = Field(max_length=100_000)


class SnippetIn(BaseModel):
    filepath: str
    body: str = Field(max_length=100_000)
    score: float = 0.0


class Segments(BaseModel):
    prefix: str = Field(max_length=MAX_SEGMENT_CHARS)
    suffix: str | None = Field(default=None, max_length=MAX_SEGMENT_CHARS)
    filepath: str | None = None
    git_url: str | None = None
    declarations: list[Declaration] | None = None
    relevant_snippets: list[SnippetIn] | None = None  # the name; Tabby splits it in two:
    relevant_snippets_from_changed_files: list[SnippetIn] | None = None
    relevant_snippets_from_recently_opened_files: list[SnippetIn] | None = None
    clipboard: str | None = None


class DebugOptions(BaseModel):
    raw_prompt: str | None = None
    return_snippets: bool = False
    return_prompt: bool = False
    disable_retrieval_augmented_code_completion: bool = False


class CompletionIn(BaseModel):
    language: str | None = None  # VS Code's identifier: python, typescript, go, ...
    segments: Segments | None = None
    user: str | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    seed: int | None = None
    debug_options: DebugOptions | None = None


class ChoiceOut(BaseModel):
    index: int
    text: str


class SnippetOut(BaseModel):
    filepath: str
    body: str
    score: float


class DebugDataOut(BaseModel):
    snippets: list[SnippetOut] | None = None
    prompt: str | None = None


class CompletionOut(BaseModel):
    id: str
    choices: list[ChoiceOut]
    debug_data: DebugDataOut | None = None


class EventIn(BaseModel):
    type: Literal["view", "select", "dismiss"]
    completion_id: str
    choice_index: int = Field(default=0, ge=0)
    view_id: str | None = None
    elapsed: int | None = Field(default=None, ge=0)  # milliseconds


class VersionOut(BaseModel):
    build_date: str = ""
    build_timestamp: str = ""
    git_sha: str = ""
    git_describe: str = ""


class HealthOut(BaseModel):
    model: str | None
    chat_model: str | None = None
    device: str
    arch: str
    cpu_info: str
    cpu_count: int
    cuda_devices: list[str]
    version: VersionOut
    webserver: bool | None = None


class ServerSettingOut(BaseModel):
    disable_client_side_telemetry: bool = False


class LanguageStatsOut(BaseModel):
    language: str
    completions: int
    views: int  # completions shown at least once
    selects: int  # completions accepted
    acceptance_rate: float | None  # selects / views; None before any view
    mean_latency_ms: float


class StatsOut(BaseModel):
    languages: list[LanguageStatsOut]
    completions: int
    views: int
    selects: int
    acceptance_rate: float | None


class EvaluationOut(BaseModel):
    """One `verticals code eval` report, summarised."""

    name: str  # the report's file name
    created_at: datetime
    benchmark: str
    model: str
    adapter: str | None
    samples: int
    temperature: float
    problems: int
    pass_at: dict[str, float]  # {"pass@1": 0.0, ...}
    statuses: dict[str, int]  # passed / failed / timeout / memory, over every sample
