"""The inspection store: migrations build exactly the tables of models.py; inspections come back
newest first with their defects and newest feedback; Pareto counts only failed parts; failure
counts per time bucket, line and station come from SQL; settings
outlive the store; images are one file per content.

.venv/bin/python -m pytest -q tests/apps/industrial_qc/test_store.py
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from apps.industrial_qc import database
from apps.industrial_qc.images import ImageStore, ImageTooLarge, NotAnImage, probe_image
from apps.industrial_qc.models import Base
from apps.industrial_qc.store import InspectionStore, UnknownInspection
from tests.apps.industrial_qc.conftest import png_bytes

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


def row(minute: int, *, line: str = "L1", station: str = "S1", passed: bool = True) -> dict:
    return {
        "created_at": T0 + timedelta(minutes=minute), "line_id": line, "station_id": station,
        "filename": f"part{minute}.png", "image_sha256": f"{minute:064x}", "content_type": "image/png",
        "width": 64, "height": 48, "defect_class": "scratches", "class_scores": {"scratches": 1.0},
        "pred_score": 0.2 if passed else 0.9, "passed": passed, "threshold": 0.5,
        "anomaly_map": {"rows": 1, "cols": 1, "values": [0.2]}, "model_version": "v1", "latency_ms": 3.0,
    }  # fmt: skip


def scratch(score: float) -> dict:
    return {"class": "scratches", "box": [1.0, 2.0, 30.0, 40.0], "score": score}


@pytest.fixture
def store(tmp_path):
    store = InspectionStore(f"sqlite:///{tmp_path / 'qc.db'}")
    yield store
    store.close()


def test_migrations_build_the_tables_of_the_models(tmp_path):
    engine = database.make_engine(f"sqlite:///{tmp_path / 'qc.db'}")
    database.upgrade(engine)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts=database.MIGRATIONS.options())
        assert compare_metadata(context, Base.metadata) == []
    engine.dispose()


def test_inspections_come_back_newest_first_with_defects_and_filters(store):
    ids = store.add_inspections(
        [row(0), row(1, passed=False), row(2, line="L2", passed=False)],
        defects=[[], [scratch(0.7), {**scratch(0.9), "class": "inclusion"}], [scratch(0.8)]],
    )
    assert [r["id"] for r in store.inspections()] == ids[::-1]
    failed = store.inspections(failed=True, line_id="L1")
    assert [r["id"] for r in failed] == [ids[1]]
    assert [d["class"] for d in failed[0]["defects"]] == ["inclusion", "scratches"]  # best first
    assert failed[0]["defects"][1]["box"] == [1.0, 2.0, 30.0, 40.0]
    assert store.inspection(ids[0])["created_at"] == T0  # aware UTC back
    assert [r["id"] for r in store.inspections(limit=1)] == [ids[2]]
    with pytest.raises(UnknownInspection):
        store.inspection(999)


def test_the_newest_feedback_counts_and_an_unknown_inspection_is_refused(store):
    [i] = store.add_inspections([row(0)], defects=[[]])
    store.add_feedback(i, verdict="confirmed", note=None, operator="ana", at=T0 + timedelta(minutes=1))
    store.add_feedback(i, verdict="false_alarm", note="dust", operator="bo", at=T0 + timedelta(minutes=2))
    assert store.inspection(i)["feedback"]["verdict"] == "false_alarm"
    assert store.inspection(i)["feedback"]["note"] == "dust"
    with pytest.raises(UnknownInspection):
        store.add_feedback(i + 1, verdict="confirmed", note=None, operator=None, at=T0)


def test_defect_counts_come_from_failed_inspections_only(store):
    store.add_inspections(
        [row(0, passed=False), row(1, passed=False), row(2, passed=True)],
        defects=[[scratch(0.9), scratch(0.8)], [{**scratch(0.9), "class": "inclusion"}], [scratch(0.4)]],
    )
    assert store.defect_counts(since=T0) == [("scratches", 2), ("inclusion", 1)]
    assert store.defect_counts(since=T0 + timedelta(minutes=1)) == [("inclusion", 1)]


def test_failure_counts_are_grouped_by_time_bucket_line_and_station_in_sql(store):
    parts = [row(0, passed=False), row(9), row(10, passed=False), row(11, passed=False), row(12, line="L2")]
    parts += [row(13, station="S2", passed=False), row(-1, passed=False)]  # the last is before `since`
    store.add_inspections(parts, defects=[[] for _ in parts])
    counts = store.failure_counts(since=T0, bucket_s=600)
    ten = T0 + timedelta(minutes=10)
    assert [(c["start"], c["line_id"], c["station_id"], c["inspected"], c["failed"]) for c in counts] == [
        (T0, "L1", "S1", 2, 1),
        (ten, "L1", "S1", 2, 2),
        (ten, "L1", "S2", 1, 1),
        (ten, "L2", "S1", 1, 0),
    ]
    whole = store.failure_counts(since=T0)
    assert [(c["start"], c["line_id"], c["station_id"], c["inspected"]) for c in whole] == [
        (None, "L1", "S1", 4),
        (None, "L1", "S2", 1),
        (None, "L2", "S1", 1),
    ]


def test_settings_outlive_the_store(tmp_path):
    url = f"sqlite:///{tmp_path / 'qc.db'}"
    first = InspectionStore(url)
    first.put_settings({"threshold": 0.7, "line_limits": {"L1": 0.1}})
    first.put_settings({"threshold": 0.8})
    first.close()
    second = InspectionStore(url)
    assert second.settings() == {"threshold": 0.8, "line_limits": {"L1": 0.1}}
    second.close()


def test_the_same_bytes_are_one_file(tmp_path):
    images = ImageStore(tmp_path / "images")
    upload = probe_image(png_bytes(64, 48), filename="a.png", max_pixels=10_000)
    assert (upload.extension, upload.content_type, upload.width, upload.height) == (
        "png",
        "image/png",
        64,
        48,
    )
    first = images.put(upload.data, sha256=upload.sha256, extension=upload.extension)
    second = images.put(upload.data, sha256=upload.sha256, extension=upload.extension)
    assert first == second == tmp_path / "images" / upload.sha256[:2] / f"{upload.sha256}.png"
    assert [p.name for p in (tmp_path / "images").rglob("*") if p.is_file()] == [first.name]
    assert images.find(upload.sha256) == first and images.find("0" * 64) is None


def test_a_probe_refuses_what_is_not_an_image_and_too_many_pixels():
    with pytest.raises(NotAnImage, match="notes.txt is not a readable image"):
        probe_image(b"hello", filename="notes.txt", max_pixels=10_000)
    with pytest.raises(NotAnImage, match="empty"):
        probe_image(b"", filename="empty.png", max_pixels=10_000)
    with pytest.raises(ImageTooLarge, match="64x48 pixels"):
        probe_image(png_bytes(64, 48), filename="big.png", max_pixels=1000)
