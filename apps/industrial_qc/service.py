"""The inspection service: runs the model over uploaded images, keeps every inspection (its
image on disk by content hash, its findings in SQL), records operator feedback, holds the run-time
settings, and reads back what the operators' dashboard shows (failure rates, Pareto, alerts).

    service = QCService.start(QCSettings(model="runs/qc/model"))
    answers = service.inspect([("part.png", data)], line_id="L1", station_id="S1")  # one model batch
    service.add_feedback(answers[0]["inspection_id"], verdict="false_alarm", note=None, operator="ana")
    service.rates(bucket_minutes=5, since=an_hour_ago)

`inspect` is blocking (decoding, the model, the disk and SQL): the API runs it in a worker
thread, never on the event loop. Concurrent inspections share the model's forward passes (a
`MicroBatcher`: one pass of 4 images costs far less than 4 passes of one), on one torch thread
(two stall on the core the HTTP threads use: 4 clients 38 -> 50 inspections/s). A model written
to the folder while serving (none at start, or a retrained one) is loaded by the next inspection.
No HTTP here (`api.py`), no SQL (`store.py`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import torch

from core_model.batching import MicroBatcher

from .dataset import DatasetError, load_image
from .images import ImageStore, ImageTooLarge, NotAnImage, Upload, probe_image
from .inspection import Inspector, NoModel, Outputs, load_inspector, render_overlay
from .model import CARD, WEIGHTS
from .settings import QCSettings
from .store import InspectionStore, UnknownInspection

log = logging.getLogger(__name__)
DEFAULT_PERIOD = timedelta(hours=24)  # rates and Pareto without `since`


__all__ = ["ImageTooLarge", "NoModel", "NotAnImage", "QCService", "UnknownInspection"]


class QCService:
    def __init__(self, settings: QCSettings, store: InspectionStore, images: ImageStore) -> None:
        self.settings, self.store, self.images = settings, store, images
        self.inspector: Inspector | None = None
        self._stamp: tuple[int, ...] | None = None  # the model files it was loaded from
        self._load_error: str | None = None  # why the model there was not loaded, if it was not
        self._model_lock = threading.Lock()
        self._load_model()
        self._forwards = MicroBatcher(run_together, torch_threads=1, name="qc-model")

    @classmethod
    def start(cls, settings: QCSettings) -> QCService:
        return cls(settings, InspectionStore(settings.database), ImageStore(settings.images))

    # --------------------------------------------------------------------------- the model
    def _load_model(self) -> None:
        """Loads the model when its files changed on disk since the last load (or never were)."""
        folder = Path(self.settings.model)
        try:
            stamp = tuple(
                n for name in (CARD, WEIGHTS) for s in [(folder / name).stat()]
                for n in (s.st_ino, s.st_mtime_ns, s.st_size)
            )  # fmt: skip
        except FileNotFoundError:
            return  # none yet, or removed: what is loaded keeps serving
        with self._model_lock:
            if stamp == self._stamp:
                return
            try:
                inspector = load_inspector(folder, backend=self.settings.backend)
            except (NoModel, ValueError, OSError) as error:  # half written: the next call tries again
                log.warning("inspection model at %s not loaded: %s", folder, error)
                self._load_error = str(error)
                return
            self.inspector, self._stamp, self._load_error = inspector, stamp, None
        log.info("inspection model %s loaded from %s (%s)", inspector.version, folder, self.settings.backend)

    def no_model(self) -> str:
        if self._load_error is not None:
            return f"no inspection model is loaded: {self.settings.model} failed to load: {self._load_error}"
        return (
            f"no inspection model is loaded: none at {self.settings.model} (it needs {WEIGHTS} and {CARD}, "
            f"as save_qc_model writes them); train one with `verticals qc train --out {self.settings.model}` "
            f"or serve another folder with `verticals serve --qc-model DIR`"
        )

    def health(self) -> dict[str, Any]:
        self._load_model()
        inspector = self.inspector
        if inspector is None:
            return {"status": "no model", "detail": self.no_model()}
        return {"status": "ok", "model": self.settings.model, "version": inspector.version,
                "backend": self.settings.backend, "class_names": inspector.class_names,
                "image_size": inspector.image_size, "threshold": self.current_settings()["threshold"],
                "metrics": inspector.card.get("metrics", {})}  # fmt: skip

    # --------------------------------------------------------------------------- inspecting
    def inspect(
        self, files: list[tuple[str, bytes]], *, line_id: str, station_id: str, threshold: float | None = None
    ) -> list[dict[str, Any]]:
        """Inspects the (filename, bytes) images as one model batch and stores every inspection
        (all or none); their answers in order. A NotAnImage or ImageTooLarge names the first file
        at fault (then nothing is stored); a NoModel while none is loaded."""
        started = time.perf_counter()
        self._load_model()
        inspector = self.inspector
        if inspector is None:
            raise NoModel(self.no_model())
        uploads = [
            probe_image(data, filename=name, max_pixels=self.settings.max_pixels) for name, data in files
        ]
        if threshold is None:
            threshold = self.current_settings()["threshold"]
        images = [pixels(upload, size=inspector.image_size) for upload in uploads]
        futures = [self._forwards.submit((inspector, image)) for image in images]
        per_image = [future.result() for future in futures]
        outputs = cast(Outputs, tuple(torch.stack(parts) for parts in zip(*per_image, strict=True)))
        sizes = [(upload.width, upload.height) for upload in uploads]
        findings = inspector.findings(outputs, sizes=sizes, threshold=threshold)
        latency_ms = round((time.perf_counter() - started) * 1000, 2)
        for upload in uploads:
            self.images.put(upload.data, sha256=upload.sha256, extension=upload.extension)
        now = datetime.now(UTC)
        rows = [
            {"created_at": now, "line_id": line_id, "station_id": station_id, "filename": upload.filename,
             "image_sha256": upload.sha256, "content_type": upload.content_type, "width": upload.width,
             "height": upload.height, "defect_class": f.defect_class, "class_scores": f.class_scores,
             "pred_score": f.pred_score, "passed": f.pred_score < threshold, "threshold": threshold,
             "anomaly_map": f.anomaly_map, "model_version": inspector.version, "latency_ms": latency_ms}
            for upload, f in zip(uploads, findings, strict=True)
        ]  # fmt: skip
        ids = self.store.add_inspections(rows, defects=[f.defects for f in findings])
        return [
            public({**row, "id": i, "defects": f.defects, "feedback": None})
            for i, row, f in zip(ids, rows, findings, strict=True)
        ]

    # --------------------------------------------------------------------------- reading back
    def inspection(self, inspection_id: int) -> dict[str, Any]:
        return public(self.store.inspection(inspection_id))

    def inspections(
        self, *, line_id: str | None, station_id: str | None, failed: bool | None, limit: int
    ) -> list[dict[str, Any]]:
        found = self.store.inspections(line_id=line_id, station_id=station_id, failed=failed, limit=limit)
        return [public(record) for record in found]

    def image(self, inspection_id: int) -> tuple[Path, str]:
        """The stored image's path and content type; an UnknownInspection if either is gone."""
        record = self.store.inspection(inspection_id)
        path = self.images.find(record["image_sha256"])
        if path is None:
            raise UnknownInspection(f"the image of inspection {inspection_id} is no longer stored")
        return path, record["content_type"]

    def overlay(self, inspection_id: int) -> bytes:
        """PNG bytes: the image with its heat map and defect boxes drawn (`render_overlay`)."""
        path, _ = self.image(inspection_id)
        record = self.store.inspection(inspection_id)
        return render_overlay(path.read_bytes(), anomaly_map=record["anomaly_map"], defects=record["defects"])

    def add_feedback(
        self, inspection_id: int, *, verdict: str, note: str | None, operator: str | None
    ) -> dict[str, Any]:
        return self.store.add_feedback(
            inspection_id, verdict=verdict, note=note, operator=operator, at=datetime.now(UTC)
        )

    def rates(self, *, bucket_minutes: int, since: datetime | None) -> dict[str, Any]:
        """Per time bucket (aligned to the epoch), line and station: inspected, failed and their
        rate; oldest first, then by line and station."""
        since = since or datetime.now(UTC) - DEFAULT_PERIOD
        counts = self.store.failure_counts(since=since, bucket_s=bucket_minutes * 60)
        buckets = [{**row, "rate": round(row["failed"] / row["inspected"], 6)} for row in counts]
        return {"bucket_minutes": bucket_minutes, "since": since, "buckets": buckets}

    def pareto(self, *, since: datetime | None) -> dict[str, Any]:
        since = since or datetime.now(UTC) - DEFAULT_PERIOD
        return {"since": since, "classes": pareto(self.store.defect_counts(since=since))}

    def alerts(self, *, window_minutes: int) -> dict[str, Any]:
        """The lines whose failure rate over the last `window_minutes` is above their limit."""
        settings = self.current_settings()
        counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for row in self.store.failure_counts(since=datetime.now(UTC) - timedelta(minutes=window_minutes)):
            counts[row["line_id"]][0] += row["inspected"]
            counts[row["line_id"]][1] += row["failed"]
        alerts = []
        for line_id, (inspected, failed) in counts.items():
            limit = settings["line_limits"].get(line_id, settings["default_line_limit"])
            if failed / inspected > limit:
                alerts.append({"line_id": line_id, "inspected": inspected, "failed": failed,
                               "rate": round(failed / inspected, 6), "limit": limit})  # fmt: skip
        alerts.sort(key=lambda alert: (-alert["rate"], alert["line_id"]))
        return {"window_minutes": window_minutes, "alerts": alerts}

    # --------------------------------------------------------------------------- settings
    def current_settings(self) -> dict[str, Any]:
        """The operators' settings over the defaults given at start."""
        stored = self.store.settings()
        return {
            "threshold": float(stored.get("threshold", self.settings.threshold)),
            "default_line_limit": float(stored.get("default_line_limit", self.settings.line_limit)),
            "line_limits": {str(k): float(v) for k, v in stored.get("line_limits", {}).items()},
            "max_upload_bytes": self.settings.max_upload_bytes,
            "max_batch": self.settings.max_batch,
        }

    def update_settings(
        self,
        *,
        threshold: float | None = None,
        default_line_limit: float | None = None,
        line_limits: dict[str, float | None] | None = None,
    ) -> dict[str, Any]:
        """Stores what is given (a line limit of None removes the line's own); returns them all."""
        changes: dict[str, Any] = {}
        if threshold is not None:
            changes["threshold"] = threshold
        if default_line_limit is not None:
            changes["default_line_limit"] = default_line_limit
        if line_limits:
            limits = self.current_settings()["line_limits"]
            for line_id, limit in line_limits.items():
                if limit is None:
                    limits.pop(line_id, None)
                else:
                    limits[line_id] = limit
            changes["line_limits"] = limits
        self.store.put_settings(changes)
        return self.current_settings()


def run_together(items: list[tuple[Inspector, torch.Tensor]]) -> list[Outputs]:
    """Each (inspector, image [3, S, S])'s outputs, one forward per inspector (a batch holds two
    only across a model reload)."""
    groups: dict[int, list[int]] = defaultdict(list)
    for i, (inspector, _) in enumerate(items):
        groups[id(inspector)].append(i)
    results: list[Outputs | None] = [None] * len(items)
    for indices in groups.values():
        outputs = items[indices[0]][0].run(torch.stack([items[i][1] for i in indices]))
        for row, i in enumerate(indices):
            results[i] = cast(Outputs, tuple(output[row] for output in outputs))
    return cast(list[Outputs], results)


def pixels(upload: Upload, *, size: int) -> torch.Tensor:
    """The upload decoded and resized as in training [3, size, size]; a NotAnImage naming it."""
    try:
        return load_image(upload.data, size=size)
    except DatasetError as error:
        reason = str(error).removeprefix("<bytes>: not an image: ")
        raise NotAnImage(f"{upload.filename} is not a readable image: {reason}") from None


def public(record: dict[str, Any]) -> dict[str, Any]:
    """A stored inspection as the API answers it (`InspectionOut`'s fields)."""
    i = record["id"]
    return {
        **{k: v for k, v in record.items() if k != "id"}, "inspection_id": i,
        "pred_label": "good" if record["passed"] else "defect",
        "image_url": f"/qc/inspections/{i}/image", "overlay_url": f"/qc/inspections/{i}/overlay.png",
    }  # fmt: skip


def pareto(counts: list[tuple[str, int]]) -> list[dict[str, Any]]:
    """Classes by falling count, with their share and the running share (the Pareto line)."""
    total = sum(n for _, n in counts)
    rows, running = [], 0
    for name, n in sorted(counts, key=lambda item: (-item[1], item[0])):
        running += n
        rows.append({"class": name, "count": n, "share": round(n / total, 6),
                     "cumulative_share": round(running / total, 6)})  # fmt: skip
    return rows
