"""The inspection HTTP API, mounted under `/qc` in the suite's FastAPI app.

    POST /qc/inspect            multipart: file (the image), line_id, station_id, threshold?
                                -> {inspection_id, defect_class, class_scores, pred_score,
                                pred_label, passed, threshold, defects [{class, box, score}],
                                anomaly_map, overlay_url, ...}
    POST /qc/inspect/batch      multipart: files (several), the same fields -> {inspections: [...]}
    GET  /qc/inspections?line_id=&station_id=&failed=true&limit=50     newest first, with defects
                                and the newest feedback
    GET  /qc/inspections/{id}   one; /image its bytes as uploaded; /overlay.png heat map and boxes
    POST /qc/inspections/{id}/feedback   {verdict: confirmed|false_alarm, note?, operator?}
    GET  /qc/rates?bucket_minutes=5&since=ISO   failure rate per bucket, line and station
    GET  /qc/pareto?since=ISO   defects of failed parts per class, most first, with running shares
    GET  /qc/settings, PUT /qc/settings   {threshold?, default_line_limit?, line_limits?}: kept in SQL
    GET  /qc/alerts?window_minutes=60     the lines above their failure-rate limit
    GET  /qc/health             the model served, or why there is none

`threshold` (form field or query) sets one request's pass/fail threshold (default: the settings').
Errors: 415 for a file that is not a readable image (named), 413 for an image over the size
limit (refused from its Content-Length before the body is read, when it says so), over the
pixel limit or a batch over its count, 422 naming a missing or malformed field, 404 for an
unknown inspection, 503 while no model is loaded. A refused request stores nothing. With
`--api-key`, every route but health needs `Authorization: Bearer KEY`.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, Response
from fastapi.routing import APIRoute
from pydantic import AwareDatetime

from core_model.serve.api import require_api_key

from .schemas import (
    AlertsOut,
    FeedbackIn,
    FeedbackOut,
    InspectionOut,
    InspectionsOut,
    ParetoOut,
    RatesOut,
    SettingsIn,
    SettingsOut,
)
from .service import ImageTooLarge, NoModel, NotAnImage, QCService, UnknownInspection
from .settings import QCSettings

FORM_OVERHEAD = 64 * 1024  # bytes of a multipart body besides the images: boundaries, headers, fields


async def get_service(request: Request) -> QCService:  # no I/O: no worker thread
    service: QCService = request.app.state.qc
    return service


def body_limit(settings: QCSettings, *, batch: bool) -> int:
    return (settings.max_batch if batch else 1) * settings.max_upload_bytes + FORM_OVERHEAD


class UploadRoute(APIRoute):
    """A route that refuses a body its Content-Length says is over the limit with a 413, before
    reading it (FastAPI parses the form before any dependency runs)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        batch = self.path.endswith("/batch")

        async def limited(request: Request) -> Response:
            limit = body_limit(request.app.state.qc.settings, batch=batch)
            length = request.headers.get("content-length", "")
            if length.isdigit() and int(length) > limit:  # the suite's error body, like any HTTPException
                raise HTTPException(413, f"a request body of {int(length):,} bytes; at most {limit:,}")
            return await handler(request)

        return limited


ServiceDep = Annotated[QCService, Depends(get_service)]
keyed = [Depends(require_api_key)]
router = APIRouter(prefix="/qc", tags=["industrial-qc"], dependencies=keyed)
upload_router = APIRouter(prefix="/qc", tags=["industrial-qc"], dependencies=keyed, route_class=UploadRoute)
open_router = APIRouter(prefix="/qc", tags=["industrial-qc"])

LineForm = Annotated[str, Form(min_length=1, max_length=64, description="the production line")]
StationForm = Annotated[str, Form(min_length=1, max_length=64, description="the camera's station")]
ThresholdForm = Annotated[
    float | None, Form(alias="threshold", ge=0.0, le=1.0, description="fail when pred_score >= threshold")
]
ThresholdQuery = Annotated[
    float | None, Query(ge=0.0, le=1.0, description="fail when pred_score >= threshold (or as a form field)")
]
Since = Annotated[AwareDatetime | None, Query(description="ISO 8601 with a time zone (default: 24 h ago)")]


def _http(error: Exception) -> HTTPException:
    status = {NoModel: 503, NotAnImage: 415, ImageTooLarge: 413, UnknownInspection: 404}[type(error)]
    return HTTPException(status_code=status, detail=str(error))


async def _read(files: list[UploadFile], service: QCService) -> list[tuple[str, bytes]]:
    """Each file's name and bytes; a 413 naming the first over the size limit."""
    limit = service.settings.max_upload_bytes
    read = []
    for n, file in enumerate(files):
        name = file.filename or f"file {n + 1}"
        data = await file.read(limit + 1)
        if len(data) > limit:
            raise HTTPException(413, f"{name} is over the upload limit of {limit:,} bytes")
        read.append((name, data))
    return read


async def _inspect(
    service: QCService, files: list[UploadFile], *, line_id: str, station_id: str, threshold: float | None
) -> list[dict[str, Any]]:
    read = await _read(files, service)
    try:
        return await run_in_threadpool(
            service.inspect, read, line_id=line_id, station_id=station_id, threshold=threshold
        )
    except (NoModel, NotAnImage, ImageTooLarge) as error:
        raise _http(error) from None


@upload_router.post("/inspect")
async def inspect(
    service: ServiceDep,
    file: Annotated[UploadFile, File(description="the part's image (PNG, JPEG, BMP, TIFF ...)")],
    line_id: LineForm,
    station_id: StationForm,
    threshold_form: ThresholdForm = None,
    threshold: ThresholdQuery = None,
) -> InspectionOut:
    threshold = threshold_form if threshold_form is not None else threshold
    answers = await _inspect(service, [file], line_id=line_id, station_id=station_id, threshold=threshold)
    return InspectionOut(**answers[0])


@upload_router.post("/inspect/batch")
async def inspect_batch(
    service: ServiceDep,
    files: Annotated[list[UploadFile], File(description="the parts' images, inspected as one batch")],
    line_id: LineForm,
    station_id: StationForm,
    threshold_form: ThresholdForm = None,
    threshold: ThresholdQuery = None,
) -> InspectionsOut:
    if len(files) > service.settings.max_batch:
        raise HTTPException(413, f"{len(files)} images; at most {service.settings.max_batch} a batch")
    threshold = threshold_form if threshold_form is not None else threshold
    answers = await _inspect(service, files, line_id=line_id, station_id=station_id, threshold=threshold)
    return InspectionsOut(inspections=[InspectionOut(**answer) for answer in answers])


@router.get("/inspections")
def inspections(
    service: ServiceDep,
    line_id: str | None = None,
    station_id: str | None = None,
    failed: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> InspectionsOut:
    found = service.inspections(line_id=line_id, station_id=station_id, failed=failed, limit=limit)
    return InspectionsOut(inspections=[InspectionOut(**record) for record in found])


@router.get("/inspections/{inspection_id}")
def inspection(inspection_id: int, service: ServiceDep) -> InspectionOut:
    try:
        return InspectionOut(**service.inspection(inspection_id))
    except UnknownInspection as error:
        raise _http(error) from None


@router.get("/inspections/{inspection_id}/image")
def image(inspection_id: int, service: ServiceDep) -> FileResponse:
    try:
        path, content_type = service.image(inspection_id)
    except UnknownInspection as error:
        raise _http(error) from None
    return FileResponse(path, media_type=content_type)


@router.get("/inspections/{inspection_id}/overlay.png")
def overlay(inspection_id: int, service: ServiceDep) -> Response:
    try:
        return Response(service.overlay(inspection_id), media_type="image/png")
    except UnknownInspection as error:
        raise _http(error) from None


@router.post("/inspections/{inspection_id}/feedback")
def feedback(inspection_id: int, body: FeedbackIn, service: ServiceDep) -> FeedbackOut:
    try:
        return FeedbackOut(**service.add_feedback(inspection_id, **body.model_dump()))
    except UnknownInspection as error:
        raise _http(error) from None


@router.get("/rates")
def rates(
    service: ServiceDep, since: Since = None, bucket_minutes: Annotated[int, Query(ge=1, le=1440)] = 5
) -> RatesOut:
    return RatesOut(**service.rates(bucket_minutes=bucket_minutes, since=since))


@router.get("/pareto")
def pareto(service: ServiceDep, since: Since = None) -> ParetoOut:
    return ParetoOut(**service.pareto(since=since))


@router.get("/settings")
def get_settings(service: ServiceDep) -> SettingsOut:
    return SettingsOut(**service.current_settings())


@router.put("/settings")
def put_settings(body: SettingsIn, service: ServiceDep) -> SettingsOut:
    return SettingsOut(**service.update_settings(**body.model_dump()))


@router.get("/alerts")
def alerts(
    service: ServiceDep, window_minutes: Annotated[int, Query(ge=1, le=7 * 24 * 60)] = 60
) -> AlertsOut:
    return AlertsOut(**service.alerts(window_minutes=window_minutes))


@open_router.get("/health")
def health(service: ServiceDep) -> dict[str, Any]:
    return service.health()


def mount(app: FastAPI, service: QCService) -> None:
    app.state.qc = service
    app.include_router(upload_router)
    app.include_router(router)
    app.include_router(open_router)
