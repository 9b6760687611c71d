"""The agent console's HTTP client of the customer-service API: one method per `/cs` route.

It speaks HTTP only (httpx) and returns the API's own response models from `schemas.py`, so a
change to the contract fails here, loudly, instead of deep inside the UI. It is not the API and
it imports no torch: the console (`ui.py`) runs in a process that never loads the model.

    client = ConsoleClient("http://127.0.0.1:8000")
    conversation = client.create_conversation(customer_name="Ada")
    posted = client.post_message(conversation.id, role="customer", text="I lost my card")
    for event, data in client.stream_draft(conversation.id):   # "start" | "delta" | "done" | "error"
        ...

Every failure is an `ApiError` carrying the HTTP status and the API's error message; a server
that cannot be reached at all is an `ApiUnreachable` (status None) that says how to start it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

import httpx
from pydantic import TypeAdapter, ValidationError

from apps.customer_service.schemas import (
    Action,
    AnalyticsOut,
    ConversationCreatedOut,
    ConversationOut,
    ConversationSummaryOut,
    HandoffOut,
    ParseOut,
    PostedMessageOut,
    Role,
    SearchOut,
    SuggestionOut,
)

DEFAULT_URL = "http://127.0.0.1:8000"


class ApiError(Exception):
    """An answer the console cannot use: `status` is the HTTP status (None: no answer at all) and
    `message` what the API said (its error message, never a traceback)."""

    def __init__(self, status: int | None, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def sentence(self) -> str:
        """The message as the console shows it."""
        if self.status is None:
            return self.message[:1].upper() + self.message[1:] + "."
        return f"The suite answered HTTP {self.status}: {self.message}"


class ApiUnreachable(ApiError):
    """No HTTP answer: the suite is not running at that address, or it stopped answering."""


class ConsoleClient:
    """A thin, synchronous client of the `/cs` routes under `base_url`; `timeout` in seconds."""

    def __init__(self, base_url: str = DEFAULT_URL, timeout: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ConsoleClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------------- routes

    def health(self) -> dict[str, Any]:
        return self._request("GET", "/health")

    def parse(self, text: str) -> ParseOut:
        return _validate(ParseOut, self._request("POST", "/cs/parse", json={"text": text}))

    def list_conversations(self, limit: int = 50) -> list[ConversationSummaryOut]:
        rows = self._request("GET", "/cs/conversations", params={"limit": limit})
        return _validate(list[ConversationSummaryOut], rows)

    def create_conversation(
        self, *, customer_ref: str | None = None, customer_name: str | None = None
    ) -> ConversationCreatedOut:
        body = {"customer_ref": customer_ref, "customer_name": customer_name}
        created = self._request("POST", "/cs/conversations", json={k: v for k, v in body.items() if v})
        return _validate(ConversationCreatedOut, created)

    def get_conversation(self, conversation_id: int) -> ConversationOut:
        return _validate(ConversationOut, self._request("GET", f"/cs/conversations/{conversation_id}"))

    def post_message(self, conversation_id: int, *, role: Role, text: str) -> PostedMessageOut:
        body = {"role": role, "text": text}
        posted = self._request("POST", f"/cs/conversations/{conversation_id}/messages", json=body)
        return _validate(PostedMessageOut, posted)

    def stream_draft(self, conversation_id: int) -> Iterator[tuple[str, dict[str, Any]]]:
        """The model's draft reply as it is written: ("start", {suggestion_id, sources}), then
        ("delta", {text}) per piece, then ("done", SuggestionOut as a dict) or ("error", {message}).
        """
        path = f"/cs/conversations/{conversation_id}/draft"
        try:
            with self._http.stream("GET", path, headers={"Accept": "text/event-stream"}) as response:
                if response.is_error:
                    response.read()
                    raise _error_of(response)
                yield from parse_sse(response.iter_lines())
        except httpx.TransportError as error:
            raise self._unreachable(error) from error

    def feedback(self, suggestion_id: int, *, action: Action, final_text: str | None = None) -> SuggestionOut:
        body: dict[str, Any] = {"action": action}
        if final_text is not None:
            body["final_text"] = final_text
        answer = self._request("POST", f"/cs/suggestions/{suggestion_id}/feedback", json=body)
        return _validate(SuggestionOut, answer)

    def handoff(self, conversation_id: int) -> HandoffOut:
        return _validate(HandoffOut, self._request("POST", f"/cs/conversations/{conversation_id}/handoff"))

    def search(self, query: str, k: int = 4) -> SearchOut:
        return _validate(SearchOut, self._request("GET", "/cs/kb/search", params={"q": query, "k": k}))

    def analytics(self) -> AnalyticsOut:
        return _validate(AnalyticsOut, self._request("GET", "/cs/analytics"))

    # ------------------------------------------------------------------------- plumbing

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as error:
            raise self._unreachable(error) from error
        if response.is_error:
            raise _error_of(response)
        try:
            return response.json()
        except ValueError as error:
            raise ApiError(
                response.status_code, f"{method} {path} answered something that is not JSON"
            ) from error

    def _unreachable(self, error: httpx.TransportError) -> ApiUnreachable:
        if isinstance(error, httpx.TimeoutException):
            return ApiUnreachable(None, f"the suite at {self.base_url} did not answer in time ({error!r})")
        return ApiUnreachable(None, f"cannot reach the suite at {self.base_url}: start it with `make run`")


def parse_sse(lines: Iterable[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Server-sent events as (event, data) pairs; `data` is JSON (a non-object is {"value": ...}).

    Follows the SSE framing rules that matter here: `event:` and `data:` fields, several `data:`
    lines joined by newlines, `:` comment lines ignored, a blank line ending the event.
    """
    event, data = "message", []
    for line in lines:
        if not line:
            if data:
                yield event, _json_object("\n".join(data))
            event, data = "message", []
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                event = value
            elif field == "data":
                data.append(value)
    if data:  # a stream cut without its final blank line still delivers its last event
        yield event, _json_object("\n".join(data))


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {"value": text}
    return value if isinstance(value, dict) else {"value": value}


def _error_of(response: httpx.Response) -> ApiError:
    """The error body as one sentence. The `/cs` contract says `{"detail": ...}` (FastAPI's own,
    where a 422 is a list of problems); the suite's app answers every error in OpenAI's shape,
    `{"error": {"message": ...}}`, so both are read."""
    try:
        body = response.json()
    except ValueError:
        body = None
    detail = None
    if isinstance(body, dict):
        detail = body.get("detail")
        if detail is None and isinstance(body.get("error"), dict):
            detail = body["error"].get("message")
    if isinstance(detail, list):
        detail = "; ".join(_validation_message(item) for item in detail)
    if not detail:
        request = response.request
        detail = f"{request.method} {request.url.path} failed with HTTP {response.status_code}"
    return ApiError(response.status_code, str(detail).replace("Value error, ", ""))


def _validation_message(item: Any) -> str:
    if not isinstance(item, dict):
        return str(item)
    where = ".".join(str(part) for part in item.get("loc", ()) if part != "body")
    message = str(item.get("msg", item))
    return f"{where}: {message}" if where else message


def _validate(type_: Any, value: Any) -> Any:
    """The answer as the schema type, or an ApiError naming what broke the contract."""
    try:
        return TypeAdapter(type_).validate_python(value)
    except ValidationError as error:
        raise ApiError(200, f"the API answered outside its contract: {error}") from error
