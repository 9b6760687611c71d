"""The code-assist HTTP API, mounted under `/code` in the suite's FastAPI app, in Tabby's shapes:
point a Tabby editor plugin at `http://HOST:8000/code` (with the suite's API key as its token).

    POST /code/v1/completions          {"language", "segments": {"prefix", "suffix", "filepath",
                                        "declarations", "relevant_snippets..."}} -> {"id", "choices"}
    POST /code/v1/events               {"type": "view"|"select"|"dismiss", "completion_id", ...}
    GET  /code/v1/health               the model and device (Tabby's HealthState; POST works too)
    GET  /code/v1beta/server_setting   {"disable_client_side_telemetry": false}
    GET  /code/v1/stats                completions, views, selects, acceptance rate per language
    GET  /code/v1/evaluations          the `verticals code eval` reports, newest first

Routes are thin: they call `service.py` and turn its errors into 400 / 404 with a message;
FastAPI's 422s name the field at fault. With `--api-key`, every route but health needs
`Authorization: Bearer KEY`, as Tabby's plugins send it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response

from core_model.serve.api import require_api_key

from .schemas import (
    CompletionIn,
    CompletionOut,
    EvaluationOut,
    EventIn,
    HealthOut,
    ServerSettingOut,
    StatsOut,
)
from .service import CodeAssist, InvalidCompletionRequest
from .store import UnknownCompletion


def get_service(request: Request) -> CodeAssist:
    service: CodeAssist = request.app.state.code_assist
    return service


ServiceDep = Annotated[CodeAssist, Depends(get_service)]
router = APIRouter(prefix="/code", tags=["code assist"], dependencies=[Depends(require_api_key)])
open_router = APIRouter(prefix="/code", tags=["code assist"])  # editors probe it before they have a key


@router.post("/v1/completions")
async def completions(body: CompletionIn, service: ServiceDep) -> CompletionOut:
    try:
        return await service.complete(body)
    except InvalidCompletionRequest as error:
        raise HTTPException(status_code=400, detail=str(error)) from None


@router.post("/v1/events")
def events(
    body: EventIn,
    service: ServiceDep,
    select_kind: Annotated[str | None, Query(max_length=16, pattern="^[a-z_]+$")] = None,
) -> Response:
    try:
        service.record_event(body, select_kind=select_kind)
    except UnknownCompletion as error:
        raise HTTPException(status_code=404, detail=str(error)) from None
    return Response(status_code=200)


@open_router.get("/v1/health")
@open_router.post("/v1/health")
def health(service: ServiceDep) -> HealthOut:
    return service.health()


@router.get("/v1beta/server_setting")
def server_setting() -> ServerSettingOut:
    return ServerSettingOut()


@router.get("/v1/stats")
def stats(service: ServiceDep) -> StatsOut:
    return service.stats()


@router.get("/v1/evaluations")
def evaluations(service: ServiceDep) -> list[EvaluationOut]:
    return service.evaluations()


def mount(app: FastAPI, service: CodeAssist) -> None:
    app.state.code_assist = service
    app.include_router(open_router)
    app.include_router(router)
