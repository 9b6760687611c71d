"""The finance HTTP API, mounted under `/finance` in the suite's FastAPI app.

    POST /finance/score         one transaction -> {"score", "decision", "threshold", "reasons",
                                "history", "cold_start", "model_version", "latency_ms"}
    POST /finance/score/batch   {"transactions": [...]} -> {"scores": [...]}, scored in time order
    POST /finance/labels        {"labels": [{"transaction_id", "fraud", "source", "arrived_at"}]}
    GET  /finance/health        the model served, or why there is none

`?threshold=0.7` sets the alert threshold of one request (default: the server's). FastAPI's 422s
name the field at fault (a malformed amount, a timestamp without a time zone); 409 for a
transaction scored before, 404 for labels of unknown transactions (none stored then), 413 for a
batch over the limit, 503 while no model is loaded. With `--api-key`, every route but health
needs `Authorization: Bearer KEY`.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool

from core_model.serve.api import require_api_key

from .schemas import BatchIn, BatchOut, LabelsIn, ScoreOut, TransactionIn
from .service import AlreadyScored, FinanceService, NoModel
from .store import UnknownTransactions


def get_service(request: Request) -> FinanceService:
    service: FinanceService = request.app.state.finance
    return service


ServiceDep = Annotated[FinanceService, Depends(get_service)]
Threshold = Annotated[float | None, Query(ge=0.0, le=1.0, description="alert when score >= threshold")]
router = APIRouter(prefix="/finance", tags=["finance"], dependencies=[Depends(require_api_key)])
open_router = APIRouter(prefix="/finance", tags=["finance"])


def _http(error: Exception) -> HTTPException:
    status = {NoModel: 503, AlreadyScored: 409, UnknownTransactions: 404}[type(error)]
    return HTTPException(status_code=status, detail=str(error))


@router.post("/score")
async def score(body: TransactionIn, service: ServiceDep, threshold: Threshold = None) -> ScoreOut:
    try:
        return ScoreOut(**await run_in_threadpool(service.score, body, threshold=threshold))
    except (NoModel, AlreadyScored) as error:
        raise _http(error) from None


@router.post("/score/batch")
async def score_batch(body: BatchIn, service: ServiceDep, threshold: Threshold = None) -> BatchOut:
    if len(body.transactions) > service.settings.max_batch:
        raise HTTPException(
            413, f"{len(body.transactions)} transactions; at most {service.settings.max_batch}"
        )
    try:
        answers = await run_in_threadpool(service.score_batch, body.transactions, threshold=threshold)
    except (NoModel, AlreadyScored) as error:
        raise _http(error) from None
    return BatchOut(scores=[ScoreOut(**a) for a in answers], latency_ms=sum(a["latency_ms"] for a in answers))


@router.post("/labels")
def labels(body: LabelsIn, service: ServiceDep) -> dict[str, int]:
    try:
        return {"stored": service.add_labels(body.labels)}
    except UnknownTransactions as error:
        raise _http(error) from None


@open_router.get("/health")
def health(service: ServiceDep) -> dict[str, Any]:
    return service.health()


def mount(app: FastAPI, service: FinanceService) -> None:
    app.state.finance = service
    app.include_router(router)
    app.include_router(open_router)
