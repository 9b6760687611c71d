"""The medical HTTP API, mounted under `/medical` in the suite's FastAPI app.

    POST /medical/ner          {"text": ...} -> {"entities": [{"label", "start", "end", "text", "score"}],
                               "phi": [{"kind", "start", "end"}], "text_deidentified", "adapter",
                               "latency_ms"}
    GET  /medical/federation   the newest federated run (or ?run_id=N) with its rounds, and all runs
    GET  /medical/health       the adapter served (its version), or why there is none

Offsets are characters of the text sent. 413 for a text over the limit, 503 while no adapter is
published or shipped, 404 for an unknown run; FastAPI's 422s name the field at fault. With
`--api-key`, every route but health needs `Authorization: Bearer KEY`.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from core_model.serve.api import require_api_key

from .service import MedicalService, NoAdapter, TextTooLong


class NerIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(description="free text; PHI in it is found and masked in text_deidentified")


class EntityOut(BaseModel):
    label: str
    start: int
    end: int
    text: str
    score: float


class PhiOut(BaseModel):
    kind: str
    start: int
    end: int


class NerOut(BaseModel):
    entities: list[EntityOut]
    phi: list[PhiOut]
    text_deidentified: str
    adapter: dict[str, Any]
    latency_ms: float


def get_service(request: Request) -> MedicalService:
    service: MedicalService = request.app.state.medical
    return service


ServiceDep = Annotated[MedicalService, Depends(get_service)]
router = APIRouter(prefix="/medical", tags=["medical"], dependencies=[Depends(require_api_key)])
open_router = APIRouter(prefix="/medical", tags=["medical"])


@router.post("/ner")
async def ner(body: NerIn, service: ServiceDep) -> NerOut:
    try:
        return NerOut(**await run_in_threadpool(service.recognize, body.text))
    except TextTooLong as error:
        raise HTTPException(status_code=413, detail=str(error)) from None
    except NoAdapter as error:
        raise HTTPException(status_code=503, detail=str(error)) from None


@router.get("/federation")
def federation(service: ServiceDep, run_id: Annotated[int | None, Query(ge=1)] = None) -> dict[str, Any]:
    try:
        return service.federation(run_id)
    except KeyError as error:
        raise HTTPException(status_code=404, detail=error.args[0]) from None


@open_router.get("/health")
def health(service: ServiceDep) -> dict[str, Any]:
    try:
        recognizer = service.recognizer()
    except NoAdapter as error:
        return {"status": "no adapter", "detail": str(error)}
    return {
        "status": "ok",
        "adapter": str(service.adapter_dir()),
        "version": recognizer.version,
        "labels": recognizer.labels,
    }


def mount(app: FastAPI, service: MedicalService) -> None:
    app.state.medical = service
    app.include_router(router)
    app.include_router(open_router)
