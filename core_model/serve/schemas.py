"""The OpenAI wire format: request bodies in, `*Out` models back, field for field as OpenAI's.

Request models check types only (a wrong type is a 422 naming the field); rules about values
(n must be 1, max_tokens fits the context, temperature >= 0) live in `service.py`, which turns
them into 400s. Extensions that vLLM also accepts (`top_k`, `repetition_penalty`, `ignore_eos`)
are marked. Unknown fields are ignored, as OpenAI's SDKs send some we have no use for.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

# ----------------------------------------------------------------------------- requests


class StreamOptions(BaseModel):
    include_usage: bool = False


class SamplingFields(BaseModel):
    """Fields both endpoints share; None means "the default"."""

    model: str | None = None  # None: the served base model
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None  # extension; 0 or -1 turns it off
    repetition_penalty: float | None = None  # extension; 1 turns it off
    ignore_eos: bool = False  # extension
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    # Accepted so the SDKs' defaults pass; anything but the neutral value is refused (service.py).
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None


class CompletionRequest(SamplingFields):
    prompt: str | list[int]  # text, or token ids
    suffix: str | None = None  # fill-in-the-middle: the model writes what goes between prompt and suffix
    max_tokens: int | None = None  # default 16, as OpenAI's
    logprobs: int | None = None  # how many alternatives per token; 0: the chosen token's only
    echo: bool = False
    best_of: int | None = None


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = None  # default: the rest of the context
    max_completion_tokens: int | None = None  # OpenAI's newer name; wins over max_tokens
    logprobs: bool = False
    top_logprobs: int | None = None
    tools: list[dict[str, object]] | None = None


class AdapterRequest(BaseModel):
    """POST /v1/adapters: serve the PEFT LoRA directory `path` (on the server's disk) as BASE:name."""

    name: str
    path: str


class LoadLoRAAdapterRequest(BaseModel):
    """vLLM's POST /v1/load_lora_adapter."""

    lora_name: str
    lora_path: str


class UnloadLoRAAdapterRequest(BaseModel):
    """vLLM's POST /v1/unload_lora_adapter."""

    lora_name: str
    lora_int_id: int | None = None  # vLLM's; names are enough here


# ----------------------------------------------------------------------------- responses


class UsageOut(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionLogprobsOut(BaseModel):
    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]]
    text_offset: list[int]


class CompletionChoiceOut(BaseModel):
    index: int = 0
    text: str
    finish_reason: str | None
    logprobs: CompletionLogprobsOut | None = None


class CompletionOut(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoiceOut]
    usage: UsageOut | None = None  # always set, except on streamed chunks


class TopLogprobOut(BaseModel):
    token: str
    logprob: float
    bytes: list[int]


class TokenLogprobOut(TopLogprobOut):
    top_logprobs: list[TopLogprobOut]


class ChatLogprobsOut(BaseModel):
    content: list[TokenLogprobOut]


class ChatMessageOut(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoiceOut(BaseModel):
    index: int = 0
    message: ChatMessageOut
    finish_reason: str | None
    logprobs: ChatLogprobsOut | None = None


class ChatCompletionOut(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoiceOut]
    usage: UsageOut


class DeltaOut(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoiceOut(BaseModel):
    index: int = 0
    delta: DeltaOut
    finish_reason: str | None = None
    logprobs: ChatLogprobsOut | None = None


class ChatCompletionChunkOut(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoiceOut]
    usage: UsageOut | None = None  # only on the last chunk, with stream_options.include_usage


class ModelOut(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "verticals"
    root: str  # the base model's source; for an adapter, its directory
    parent: str | None = None  # for an adapter, the base model's id
    max_model_len: int


class ModelListOut(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelOut]


class AdapterOut(BaseModel):
    name: str
    model: str  # what to send as `model` to use it: BASE:name
    path: str
    resident: bool  # its weights are in memory; if not, the next request reads them back from disk


class AdapterListOut(BaseModel):
    object: Literal["list"] = "list"
    data: list[AdapterOut]


class HealthOut(BaseModel):
    status: Literal["ok"] = "ok"


class ErrorDetailOut(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorOut(BaseModel):
    error: ErrorDetailOut
