"""The inspection API on a real uvicorn on loopback, with a tiny QC model saved to disk, the
inspections in a SQLite file and the images in a folder: real NEU-DET images and PNGs are
inspected and stored, bad uploads are 4xx that say why and store nothing, feedback keeps its
time, rates, Pareto and alerts are read back from what was stored, settings survive a restart.

.venv/bin/python -m pytest -q tests/apps/industrial_qc/test_api.py
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from PIL import Image

from apps.industrial_qc.api import FORM_OVERHEAD
from apps.industrial_qc.service import NoModel, QCService
from apps.industrial_qc.settings import QCSettings
from apps.suite import create_app
from core_model.serve import ServeSettings
from tests.apps.industrial_qc.conftest import NEU_CLASSES, png_bytes
from tests.loopback import serving

API_KEY = "qc-key"
HEADERS = {"Authorization": f"Bearer {API_KEY}"}
MAX_UPLOAD = 100_000  # bytes: NEU-DET's JPEGs are about 23 kB


@pytest.fixture(scope="module")
def settings(tmp_path_factory, tiny_qc_model) -> QCSettings:
    root = tmp_path_factory.mktemp("qc_api")
    return QCSettings(
        database=f"sqlite:///{root / 'qc.db'}", model=str(tiny_qc_model), images=str(root / "images"),
        max_upload_bytes=MAX_UPLOAD, max_batch=3,
    )  # fmt: skip


@pytest.fixture(scope="module")
def url(checkpoint, settings) -> Iterator[str]:
    app = create_app(ServeSettings(model=str(checkpoint), api_key=API_KEY), industrial_qc=settings)
    with serving(app) as url:
        yield url


def inspect(
    url: str, name: str, data: bytes, *, line: str = "L1", station: str = "S1", **fields
) -> httpx.Response:
    form = {"line_id": line, "station_id": station, **{k: str(v) for k, v in fields.items()}}
    return httpx.post(
        f"{url}/qc/inspect", data=form, files={"file": (name, data)}, headers=HEADERS, timeout=30
    )


def get(url: str, path: str, **params) -> httpx.Response:
    return httpx.get(f"{url}{path}", params=params, headers=HEADERS, timeout=30)


def message(response: httpx.Response) -> str:
    """The suite's error message (OpenAI's body: {"error": {"message", "param", ...}})."""
    return response.json()["error"]["message"]


def stored(url: str) -> int:
    return len(get(url, "/qc/inspections", limit=500).json()["inspections"])


def test_a_real_neu_image_is_inspected_stored_and_drawn(url, neu_images):
    data = neu_images[5].read_bytes()
    answer = inspect(url, neu_images[5].name, data).json()
    assert (
        answer["line_id"] == "L1" and answer["station_id"] == "S1" and answer["filename"] == "scratches_1.jpg"
    )
    assert (answer["width"], answer["height"], answer["content_type"]) == (200, 200, "image/jpeg")
    assert answer["defect_class"] in NEU_CLASSES and set(answer["class_scores"]) == set(NEU_CLASSES)
    assert 0.0 <= answer["pred_score"] <= 1.0 and answer["threshold"] == 0.5
    assert answer["passed"] == (answer["pred_score"] < 0.5)
    assert answer["pred_label"] == ("good" if answer["passed"] else "defect")
    assert answer["anomaly_map"]["rows"] == answer["anomaly_map"]["cols"] == 8
    assert len(answer["anomaly_map"]["values"]) == 64 and len(answer["model_version"]) == 12
    assert answer["latency_ms"] > 0 and answer["created_at"].endswith("Z")
    i = answer["inspection_id"]
    assert answer["overlay_url"] == f"/qc/inspections/{i}/overlay.png"
    assert get(url, f"/qc/inspections/{i}").json() == {**answer, "feedback": None}
    image = get(url, f"/qc/inspections/{i}/image")
    assert image.content == data and image.headers["content-type"] == "image/jpeg"
    overlay = get(url, answer["overlay_url"])
    assert overlay.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(overlay.content)).size == (200, 200)


def test_a_png_fails_or_passes_by_the_request_threshold(url):
    data = png_bytes(64, 48, seed=1)
    failed = inspect(url, "part.png", data, threshold=0.0).json()  # a form field
    assert failed["passed"] is False and failed["pred_label"] == "defect" and failed["threshold"] == 0.0
    assert failed["defects"] and {d["class"] for d in failed["defects"]} <= set(NEU_CLASSES)
    for defect in failed["defects"]:
        x0, y0, x1, y1 = defect["box"]
        assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 48 and 0 <= defect["score"] <= 1
    passed = httpx.post(
        f"{url}/qc/inspect",
        params={"threshold": 1.0},
        data={"line_id": "L1", "station_id": "S1"},
        files={"file": ("part.png", data)},
        headers=HEADERS,
    ).json()  # a query parameter
    assert passed["passed"] is True and passed["defects"] == [] and passed["threshold"] == 1.0
    overlay = Image.open(io.BytesIO(get(url, failed["overlay_url"]).content))
    assert overlay.format == "PNG" and overlay.size == (64, 48)


def test_the_same_bytes_twice_are_two_inspections_and_one_file(url, settings):
    data = png_bytes(40, 40, seed=7)
    first, second = (inspect(url, "same.png", data).json() for _ in range(2))
    assert first["inspection_id"] != second["inspection_id"]
    assert first["image_sha256"] == second["image_sha256"]
    sha = first["image_sha256"]
    assert [p.name for p in Path(settings.images).rglob(f"{sha}*")] == [f"{sha}.png"]


def test_a_batch_is_inspected_in_one_pass(url, neu_images):
    files = [("files", (p.name, p.read_bytes())) for p in neu_images[:2]] + [
        ("files", ("x.png", png_bytes(50, 30)))
    ]
    answer = httpx.post(
        f"{url}/qc/inspect/batch", data={"line_id": "L9", "station_id": "S2"}, files=files, headers=HEADERS
    )
    inspections = answer.json()["inspections"]
    assert [i["filename"] for i in inspections] == ["crazing_1.jpg", "inclusion_1.jpg", "x.png"]
    assert len({i["inspection_id"] for i in inspections}) == 3 and {i["line_id"] for i in inspections} == {
        "L9"
    }
    assert inspections[2]["width"] == 50 and inspections[2]["height"] == 30


def test_bad_uploads_are_refused_with_the_reason_and_store_nothing(url, neu_images):
    before = stored(url)
    corrupt = inspect(url, "broken.jpg", neu_images[0].read_bytes()[:300])
    assert corrupt.status_code == 415 and "broken.jpg is not a readable image" in message(corrupt)
    text = inspect(url, "notes.txt", b"not an image at all")
    assert text.status_code == 415 and "notes.txt" in message(text)
    no_file = httpx.post(f"{url}/qc/inspect", data={"line_id": "L1", "station_id": "S1"}, headers=HEADERS)
    assert no_file.status_code == 422 and no_file.json()["error"]["param"] == "file"
    no_line = httpx.post(
        f"{url}/qc/inspect",
        data={"station_id": "S1"},
        files={"file": ("a.png", png_bytes(8, 8))},
        headers=HEADERS,
    )
    assert no_line.status_code == 422 and no_line.json()["error"]["param"] == "line_id"
    bad_threshold = inspect(url, "a.png", png_bytes(8, 8), threshold=1.5)
    assert bad_threshold.status_code == 422 and bad_threshold.json()["error"]["param"] == "threshold"
    too_big = inspect(url, "big.png", b"\x89PNG" + bytes(MAX_UPLOAD + 10))
    assert too_big.status_code == 413 and "big.png is over the upload limit of 100,000 bytes" in message(
        too_big
    )
    huge = inspect(url, "huge.png", bytes(MAX_UPLOAD + FORM_OVERHEAD))
    assert huge.status_code == 413 and "a request body of" in message(huge)  # by its Content-Length
    files = [("files", ("ok.png", png_bytes(8, 8))), ("files", ("huge.png", bytes(MAX_UPLOAD + 10)))]
    one_too_big = httpx.post(
        f"{url}/qc/inspect/batch", data={"line_id": "L1", "station_id": "S1"}, files=files, headers=HEADERS
    )
    assert one_too_big.status_code == 413 and "huge.png is over the upload limit" in message(one_too_big)
    files = [("files", (f"{n}.png", png_bytes(8, 8, seed=n))) for n in range(4)]
    too_many = httpx.post(
        f"{url}/qc/inspect/batch", data={"line_id": "L1", "station_id": "S1"}, files=files, headers=HEADERS
    )
    assert too_many.status_code == 413 and "4 images; at most 3" in message(too_many)
    files = [("files", ("ok.png", png_bytes(8, 8))), ("files", ("bad.bmp", b"BM garbage"))]
    one_bad = httpx.post(
        f"{url}/qc/inspect/batch", data={"line_id": "L1", "station_id": "S1"}, files=files, headers=HEADERS
    )
    assert one_bad.status_code == 415 and "bad.bmp" in message(one_bad)
    assert stored(url) == before


def test_every_route_but_health_needs_the_key(url):
    assert httpx.get(f"{url}/qc/inspections").status_code == 401
    assert httpx.post(f"{url}/qc/inspect", files={"file": ("a.png", png_bytes(8, 8))}).status_code == 401
    assert httpx.get(f"{url}/qc/health").json()["status"] == "ok"


def test_feedback_is_stored_with_its_time_and_the_newest_counts(url):
    i = inspect(url, "fb.png", png_bytes(16, 16, seed=3)).json()["inspection_id"]
    path = f"{url}/qc/inspections/{i}/feedback"
    first = httpx.post(path, json={"verdict": "confirmed", "operator": "ana"}, headers=HEADERS).json()
    assert first["verdict"] == "confirmed" and first["created_at"].endswith("Z")
    httpx.post(path, json={"verdict": "false_alarm", "note": "dust on the lens"}, headers=HEADERS)
    feedback = get(url, f"/qc/inspections/{i}").json()["feedback"]
    assert feedback["verdict"] == "false_alarm" and feedback["note"] == "dust on the lens"
    assert httpx.post(path, json={"verdict": "maybe"}, headers=HEADERS).status_code == 422
    unknown = httpx.post(
        f"{url}/qc/inspections/999999/feedback", json={"verdict": "confirmed"}, headers=HEADERS
    )
    assert unknown.status_code == 404
    assert get(url, "/qc/inspections/999999").status_code == 404
    assert get(url, "/qc/inspections/999999/overlay.png").status_code == 404


def test_rates_pareto_and_alerts_come_from_the_stored_inspections(url):
    since = datetime.now(UTC) - timedelta(seconds=1)
    outcomes = []
    for n, threshold in enumerate([0.0, 0.0, 1.0, 1.0]):  # two fail, two pass on line R
        image = png_bytes(16, 16, seed=10 + n)
        outcomes.append(
            inspect(url, f"r{n}.png", image, line="R", station=f"S{n % 2}", threshold=threshold).json()
        )
    buckets = get(url, "/qc/rates", bucket_minutes=60, since=since.isoformat()).json()["buckets"]
    line_r = {b["station_id"]: b for b in buckets if b["line_id"] == "R"}
    assert (
        sum(b["inspected"] for b in line_r.values()) == 4 and sum(b["failed"] for b in line_r.values()) == 2
    )
    assert all(b["rate"] == b["failed"] / b["inspected"] for b in line_r.values())
    first = outcomes[0]["created_at"]  # the earlier tests' failed parts are older
    classes = get(url, "/qc/pareto", since=first).json()["classes"]
    expected: dict[str, int] = {}
    for answer in outcomes[:2]:
        for defect in answer["defects"]:
            expected[defect["class"]] = expected.get(defect["class"], 0) + 1
    assert {c["class"]: c["count"] for c in classes} == expected
    assert [c["count"] for c in classes] == sorted(expected.values(), reverse=True)
    assert classes[-1]["cumulative_share"] == pytest.approx(1.0)
    # line R: 2 of 4 failed in this test (0.5); alerts read the last hour, so earlier tests' R parts count too
    alerts = {a["line_id"]: a for a in get(url, "/qc/alerts", window_minutes=60).json()["alerts"]}
    assert alerts["R"]["rate"] == 0.5 and alerts["R"]["limit"] == 0.2
    assert get(url, "/qc/rates", since="2026-01-01T00:00:00").status_code == 422  # no time zone


def test_settings_are_kept_in_the_database_across_a_restart(url, settings):
    body = {"threshold": 0.0, "line_limits": {"R": 0.9, "L1": 0.05}, "default_line_limit": 0.3}
    put = httpx.put(f"{url}/qc/settings", json=body, headers=HEADERS).json()
    assert (
        put["threshold"] == 0.0
        and put["line_limits"] == {"R": 0.9, "L1": 0.05}
        and put["default_line_limit"] == 0.3
    )
    assert "R" not in {a["line_id"] for a in get(url, "/qc/alerts").json()["alerts"]}  # 0.5 < 0.9 now
    assert inspect(url, "t.png", png_bytes(16, 16, seed=20)).json()["threshold"] == 0.0  # the default now
    removed = httpx.put(f"{url}/qc/settings", json={"line_limits": {"L1": None}}, headers=HEADERS).json()
    assert removed["line_limits"] == {"R": 0.9}
    assert httpx.put(f"{url}/qc/settings", json={"threshold": 2}, headers=HEADERS).status_code == 422
    restarted = QCService.start(settings)  # a new process on the same database
    assert restarted.current_settings()["threshold"] == 0.0
    assert restarted.current_settings()["line_limits"] == {"R": 0.9}
    restarted.store.close()
    httpx.put(f"{url}/qc/settings", json={"threshold": 0.5}, headers=HEADERS)


def test_without_a_model_inspection_is_a_503_that_says_what_to_do_and_reads_still_work(checkpoint, tmp_path):
    settings = QCSettings(
        database=f"sqlite:///{tmp_path / 'qc.db'}",
        model=str(tmp_path / "no_model"),
        images=str(tmp_path / "img"),
    )
    with serving(create_app(ServeSettings(model=str(checkpoint)), industrial_qc=settings)) as url:
        answer = httpx.post(
            f"{url}/qc/inspect",
            data={"line_id": "L1", "station_id": "S1"},
            files={"file": ("a.png", png_bytes(8, 8))},
        )
        assert answer.status_code == 503 and "--qc-model" in message(answer)
        assert httpx.get(f"{url}/qc/health").json()["status"] == "no model"
        assert httpx.get(f"{url}/qc/inspections").json() == {"inspections": []}
        assert httpx.get(f"{url}/qc/settings").json()["threshold"] == 0.5


def test_a_model_folder_that_fails_to_load_says_why(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text('{"model": {}}')  # no class names
    (folder / "model.safetensors").write_bytes(b"not weights")
    service = QCService.start(
        QCSettings(
            database=f"sqlite:///{tmp_path / 'qc.db'}", model=str(folder), images=str(tmp_path / "img")
        )
    )
    with pytest.raises(NoModel, match="failed to load: .*not a QC model card"):
        service.inspect([("a.png", png_bytes(8, 8))], line_id="L1", station_id="S1")
    assert service.health()["status"] == "no model"
    service.store.close()
