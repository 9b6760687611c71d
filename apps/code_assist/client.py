"""The code-assist page's HTTP client of the `/code` API: one method per route, answers checked
against the API's own response models (`schemas.py`). It speaks HTTP only (httpx) and imports no
torch: the page (`ui.py`) runs in a process that never loads the model.

    client = CodeClient("http://127.0.0.1:8000")
    out = client.complete(prefix="def add(a, b):\\n    ", suffix="\\n", language="python")
    client.event("select", completion_id=out.id)

Every failure is an `ApiError` whose `message` is a sentence the page can show: the API's own
error message, or how to start the suite when nothing answers.
"""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import TypeAdapter, ValidationError

from apps.code_assist.schemas import CompletionOut, EvaluationOut, StatsOut

DEFAULT_URL = "http://127.0.0.1:8000"


class ApiError(Exception):
    def __init__(self, status: int | None, message: str) -> None:
        super().__init__(message)
        self.status = status  # None: no answer at all
        self.message = message


class CodeClient:
    """A synchronous client of the `/code` routes under `base_url`; the API key, if the suite
    needs one, is sent as Tabby's plugins send it."""

    def __init__(self, base_url: str = DEFAULT_URL, *, api_key: str | None = None, timeout: float = 60.0):
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    def complete(
        self, *, prefix: str, suffix: str = "", language: str = "python", filepath: str | None = None
    ) -> CompletionOut:
        body = {
            "language": language,
            "segments": {"prefix": prefix, "suffix": suffix, "filepath": filepath},
            "debug_options": {"return_snippets": True},
        }
        return self._get(CompletionOut, "POST", "/code/v1/completions", json=body)

    def event(self, type: str, *, completion_id: str, elapsed_ms: int | None = None) -> None:
        body = {"type": type, "completion_id": completion_id, "choice_index": 0, "elapsed": elapsed_ms}
        self._request("POST", "/code/v1/events", json=body)

    def stats(self) -> StatsOut:
        return self._get(StatsOut, "GET", "/code/v1/stats")

    def evaluations(self) -> list[EvaluationOut]:
        return self._get(list[EvaluationOut], "GET", "/code/v1/evaluations")

    def _get(self, type_: Any, method: str, path: str, **kwargs: Any) -> Any:
        answer = self._request(method, path, **kwargs).json()
        try:
            return TypeAdapter(type_).validate_python(answer)
        except ValidationError as error:
            raise ApiError(200, f"{path} answered outside its contract: {error}") from error

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as error:
            raise ApiError(
                None, f"Cannot reach the suite at {self.base_url}: start it with `make run`."
            ) from error
        if response.is_error:
            raise ApiError(
                response.status_code, f"The suite answered HTTP {response.status_code}: {_message(response)}"
            )
        return response


def _message(response: httpx.Response) -> str:
    """The suite answers errors in OpenAI's shape ({"error": {"message"}}); FastAPI's own is {"detail"}."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("message"))
    return str(body.get("detail", body)) if isinstance(body, dict) else str(body)
