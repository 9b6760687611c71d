"""The finance HTTP API, mounted under `/finance` in the suite's FastAPI app.

    POST /finance/score         one transaction -> {"score", "decision", "threshold", "reasons",
                                "events", "history", "cold_start", "model_version", "latency_ms"}
    POST /finance/score/batch   {"transactions": [...]} -> {"scores": [...]}, scored in time order
    POST /finance/labels        {"labels": [{"transaction_id", "fraud", "source", "arrived_at"}]}
    GET  /finance/health        the model served, or why there is none
    GET  /finance/days          {"days": [{"day", "transactions", "scored"}]}, oldest first
    GET  /finance/alerts?day=2018-08-08&k=100
                                the day's alert queue: its top-k cards by their riskiest transaction's
                                score, each transaction with its reasons and newest label
    GET  /finance/daily?start=2018-07-10&end=2018-08-08
                                per day: transactions, alerts, alert rate, labelled, fraud rate, and
                                AUC/AP/CP@k over the labelled ones (null without both classes)
    GET  /finance/distribution?day=2018-08-08&bins=20    the day's score histogram

`?threshold=0.7` sets the alert threshold of one request (default: the server's). FastAPI's 422s
name the field at fault (a malformed amount, a timestamp without a time zone); 409 for a
transaction scored before, 404 for labels of unknown transactions (none stored then), 413 for a
batch over the limit, 503 while no model is loaded (and for the requests of a pass whose scorer
process died). With `--api-key`, every route but health needs `Authorization: Bearer KEY`.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from core_model.serve.api import require_api_key
from core_model.worker_process import WorkerDied

from .schemas import (
    AlertsOut,
    BatchIn,
    BatchOut,
    DailyStatsOut,
    DaysOut,
    DistributionOut,
    LabelsIn,
    ScoreOut,
    TransactionIn,
)
from .scorer import AlreadyScored, NoModel
from .service import BadPeriod, FinanceService
from .store import UnknownTransactions


async def get_service(request: Request) -> FinanceService:  # no I/O: no worker thread
    service: FinanceService = request.app.state.finance
    return service


ServiceDep = Annotated[FinanceService, Depends(get_service)]
Threshold = Annotated[float | None, Query(ge=0.0, le=1.0, description="alert when score >= threshold")]
router = APIRouter(prefix="/finance", tags=["finance"], dependencies=[Depends(require_api_key)])
open_router = APIRouter(prefix="/finance", tags=["finance"])
MAX_ALERTS = 1000  # the alert queue's k at most
M = TypeVar("M", bound=BaseModel)


def _http(error: Exception) -> HTTPException:
    status = {NoModel: 503, WorkerDied: 503, AlreadyScored: 409, UnknownTransactions: 404}[type(error)]
    detail = f"{error}; the next request starts a new scorer" if isinstance(error, WorkerDied) else str(error)
    return HTTPException(status_code=status, detail=detail)


def _json_body(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI's request body for a route that reads its body itself (`_read`)."""
    schema = {"schema": model.model_json_schema(ref_template="#/components/schemas/{model}")}
    return {"requestBody": {"required": True, "content": {"application/json": schema}}}


async def _read(request: Request, model: type[M]) -> M:
    """The request's JSON body as `model`, or the 422 FastAPI would give for it."""
    body = await request.body()
    try:
        return model.model_validate_json(body)
    except ValidationError as error:
        problems = [{**p, "loc": ("body", *p["loc"])} for p in error.errors(include_url=False)]
        raise RequestValidationError(problems, body=body) from None


# The hot path, one transaction at authorisation time, reads its body and writes its answer
# itself: FastAPI's own parsing of the body and validation of the return value cost 43 of the
# route's 108 microseconds of framework time a request (in-process, the scorer stubbed out),
# on an event loop that is busy most of the time at 20 clients. The errors are FastAPI's.
@router.post("/score", response_model=ScoreOut, openapi_extra=_json_body(TransactionIn))
async def score(request: Request, service: ServiceDep, threshold: Threshold = None) -> Response:
    transaction = await _read(request, TransactionIn)
    try:
        answer = await service.score(transaction, threshold=threshold)
    except (NoModel, AlreadyScored, WorkerDied) as error:
        raise _http(error) from None
    return Response(ScoreOut(**answer).model_dump_json(), media_type="application/json")


@router.post("/score/batch")
async def score_batch(body: BatchIn, service: ServiceDep, threshold: Threshold = None) -> BatchOut:
    if len(body.transactions) > service.settings.max_batch:
        raise HTTPException(
            413, f"{len(body.transactions)} transactions; at most {service.settings.max_batch}"
        )
    try:
        answers = await service.score_batch(body.transactions, threshold=threshold)
    except (NoModel, AlreadyScored, WorkerDied) as error:
        raise _http(error) from None
    return BatchOut(scores=[ScoreOut(**a) for a in answers], latency_ms=answers[0]["latency_ms"])


@router.post("/labels")
def labels(body: LabelsIn, service: ServiceDep) -> dict[str, int]:
    try:
        return {"stored": service.add_labels(body.labels)}
    except UnknownTransactions as error:
        raise _http(error) from None


@open_router.get("/health")
def health(service: ServiceDep) -> dict[str, Any]:
    try:
        return service.health()
    except WorkerDied as error:
        raise _http(error) from None


Day = Annotated[date, Query(description="a UTC day, YYYY-MM-DD")]
Budget = Annotated[int, Query(ge=1, le=MAX_ALERTS, description="cards an analyst can check in a day")]


@router.get("/days")
def days(service: ServiceDep) -> DaysOut:
    return DaysOut(days=service.days())


@router.get("/alerts")
def alerts(service: ServiceDep, day: Day, k: Budget = 100, threshold: Threshold = None) -> AlertsOut:
    return AlertsOut(**service.alerts(day=day, k=k, threshold=threshold))


@router.get("/daily")
def daily(
    service: ServiceDep,
    start: Annotated[date | None, Query(description="first day (default: 30 days before end)")] = None,
    end: Annotated[date | None, Query(description="last day (default: the newest stored)")] = None,
    threshold: Threshold = None,
    k: Budget = 100,
) -> DailyStatsOut:
    try:
        return DailyStatsOut(**service.daily(start=start, end=end, threshold=threshold, k=k))
    except BadPeriod as error:
        raise HTTPException(422, str(error)) from None


@router.get("/distribution")
def distribution(
    service: ServiceDep, day: Day, bins: Annotated[int, Query(ge=2, le=100)] = 20
) -> DistributionOut:
    return DistributionOut(**service.distribution(day=day, bins=bins))


def mount(app: FastAPI, service: FinanceService) -> None:
    app.state.finance = service
    app.include_router(router)
    app.include_router(open_router)
