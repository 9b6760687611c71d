"""The HTTP client of the `/qc` inspection API, shared by the operators' dashboard (`ui.py`) and
the simulated line (`replay.py`): one method per route, answers as the API's JSON. It speaks HTTP
only (httpx) and imports no torch: neither process ever loads the model.

    client = QCClient("http://127.0.0.1:8000")
    part = client.inspect(image_bytes, filename="crazing_1.jpg", line_id="L1", station_id="S1")
    client.feedback(part["inspection_id"], verdict="false_alarm", operator="desk")
    client.rates(bucket_minutes=5, since=datetime.now(UTC) - timedelta(hours=1))

Every failure is a `QCApiError` whose `message` is a sentence the page can show: the API's own
error message, or how to start the suite when nothing answers (`status` None).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
Verdict = Literal["confirmed", "false_alarm"]


class QCApiError(Exception):
    def __init__(self, status: int | None, message: str) -> None:
        super().__init__(message)
        self.status = status  # None: no answer at all
        self.message = message


class QCClient:
    """A synchronous client of the `/qc` routes under `base_url`, with the suite's API key (if it
    needs one) as a bearer token."""

    def __init__(self, base_url: str = DEFAULT_URL, *, api_key: str | None = None, timeout: float = 30.0):
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def health(self) -> dict[str, Any]:
        """The health route's answer, even when it is a 503 (no model): its body says why."""
        response = self._send("GET", "/qc/health")
        if response.status_code == 503:
            return {"status": "unavailable", **_json_or_detail(response)}
        return self._checked(response).json()

    def inspect(
        self,
        image: bytes,
        *,
        filename: str,
        line_id: str,
        station_id: str,
        threshold: float | None = None,
    ) -> dict[str, Any]:
        form = {"line_id": line_id, "station_id": station_id}
        if threshold is not None:
            form["threshold"] = str(threshold)
        files = {"file": (filename, image, _content_type(filename))}
        return self._json("POST", "/qc/inspect", data=form, files=files)

    def inspections(
        self, *, failed: bool | None = None, line_id: str | None = None, limit: int = 50
    ) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit}
        if failed is not None:
            params["failed"] = str(failed).lower()
        if line_id is not None:
            params["line_id"] = line_id
        answer = self._json("GET", "/qc/inspections", params=params)
        return answer["inspections"] if isinstance(answer, dict) else answer

    def inspection(self, inspection_id: str) -> dict[str, Any]:
        return self._json("GET", f"/qc/inspections/{inspection_id}")

    def overlay(self, inspection_id: str) -> bytes:
        """The part's image with the heat map and the boxes drawn (PNG bytes)."""
        return self._checked(self._send("GET", f"/qc/inspections/{inspection_id}/overlay.png")).content

    def feedback(
        self, inspection_id: str, *, verdict: Verdict, note: str | None = None, operator: str | None = None
    ) -> dict[str, Any]:
        body = {"verdict": verdict, "note": note, "operator": operator}
        return self._json("POST", f"/qc/inspections/{inspection_id}/feedback", json=body)

    def rates(self, *, bucket_minutes: int, since: datetime) -> list[dict[str, Any]]:
        params = {"bucket_minutes": bucket_minutes, "since": since.isoformat()}
        return self._json("GET", "/qc/rates", params=params)["buckets"]

    def pareto(self, *, since: datetime) -> list[dict[str, Any]]:
        return self._json("GET", "/qc/pareto", params={"since": since.isoformat()})["classes"]

    def alerts(self, *, window_minutes: int) -> list[dict[str, Any]]:
        return self._json("GET", "/qc/alerts", params={"window_minutes": window_minutes})["alerts"]

    def settings(self) -> dict[str, Any]:
        return self._json("GET", "/qc/settings")

    def put_settings(
        self,
        *,
        threshold: float | None = None,
        default_line_limit: float | None = None,
        line_limits: dict[str, float] | None = None,
    ) -> dict[str, Any]:
        """Changes the settings given (None: left as they are)."""
        body: dict[str, Any] = {}
        if threshold is not None:
            body["threshold"] = threshold
        if default_line_limit is not None:
            body["default_line_limit"] = default_line_limit
        if line_limits is not None:
            body["line_limits"] = line_limits
        return self._json("PUT", "/qc/settings", json=body)

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._checked(self._send(method, path, **kwargs)).json()

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._http.request(method, path, **kwargs)
        except httpx.TransportError as error:
            raise QCApiError(
                None, f"Cannot reach the inspection API at {self.base_url}: start it with `make run`."
            ) from error

    def _checked(self, response: httpx.Response) -> httpx.Response:
        if response.status_code == 503:
            raise QCApiError(503, f"No inspection model is served: {error_message(response)}")
        if response.is_error:
            path = response.request.url.path
            raise QCApiError(
                response.status_code,
                f"The API answered HTTP {response.status_code} to {path}: {error_message(response)}",
            )
        return response


def error_message(response: httpx.Response) -> str:
    """The API's error message (`{"error": {"message"}}` or FastAPI's `{"detail"}`), else the body."""
    body = _json_or_detail(response)
    error = body.get("error")
    if isinstance(error, dict) and "message" in error:
        return str(error["message"])
    if "detail" in body:
        return str(body["detail"])
    return response.text[:300]


def _json_or_detail(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {"detail": response.text[:300]}
    return body if isinstance(body, dict) else {"detail": str(body)[:300]}


def _content_type(filename: str) -> str:
    suffix = filename.rsplit(".", 1)[-1].lower()
    return {"jpg": "image/jpeg", "jpeg": "image/jpeg", "png": "image/png", "bmp": "image/bmp"}.get(
        suffix, "application/octet-stream"
    )
