"""The defect dashboard's helpers, without a browser: the API's answers shaped into chart rows,
alert sentences, limits and captions; and the page itself (Streamlit's AppTest) saying plainly
that the API cannot be reached, or that it serves no model (the suite's /qc on loopback).

.venv/bin/python -m pytest -q tests/apps/industrial_qc/test_ui.py
"""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from apps.industrial_qc.settings import QCSettings
from apps.industrial_qc.ui import (
    alert_sentences,
    known_lines,
    line_limits,
    line_totals,
    pareto_frame,
    part_title,
    rate_frame,
    verdict_text,
)
from apps.suite import create_app
from core_model.serve import ServeSettings
from tests.loopback import ROOT, free_port, serving

PAGE = str(ROOT / "apps" / "industrial_qc" / "ui.py")


def bucket(start: str, line: str, station: str, inspected: int, failed: int) -> dict:
    return {
        "start": f"2026-12-05T{start}:00Z", "line_id": line, "station_id": station,
        "inspected": inspected, "failed": failed, "rate": failed / inspected,
    }  # fmt: skip


BUCKETS = [
    bucket("10:05", "L1", "S2", 4, 1),
    bucket("10:00", "L1", "S2", 2, 2),
    bucket("10:00", "L2", "S1", 5, 0),
]


def test_rate_rows_name_line_and_station_in_time_order_as_percentages():
    frame = rate_frame(BUCKETS)
    assert list(frame["series"]) == ["L1 · S2", "L1 · S2", "L2 · S1"]
    assert list(frame["rate"]) == [100.0, 25.0, 0.0]
    assert frame["start"].dt.tz is not None
    assert rate_frame([]).empty


def test_line_totals_add_up_the_stations_and_buckets():
    totals = line_totals(BUCKETS).set_index("line_id")
    assert totals.loc["L1", ["inspected", "failed"]].tolist() == [6, 3]
    assert totals.loc["L1", "rate"] == pytest.approx(0.5)
    assert totals.loc["L2", "rate"] == 0.0


def test_pareto_rows_put_the_commonest_class_first_with_percentages():
    classes = [
        {"class": "scratches", "count": 2, "share": 0.2, "cumulative_share": 1.0},
        {"class": "crazing", "count": 8, "share": 0.8, "cumulative_share": 0.8},
    ]
    frame = pareto_frame(classes)
    assert list(frame["class"]) == ["crazing", "scratches"]
    assert list(frame["cumulative_share"]) == [80.0, 100.0]
    assert pareto_frame([]).empty


def test_only_lines_above_their_limit_get_a_sentence_the_worst_first():
    alerts = [
        {"line_id": "L1", "inspected": 10, "failed": 3, "rate": 0.3, "limit": 0.2},
        {"line_id": "L2", "inspected": 10, "failed": 2, "rate": 0.2, "limit": 0.2},  # at the limit: fine
        {"line_id": "L3", "inspected": 4, "failed": 4, "rate": 1.0, "limit": 0.5},
    ]
    sentences = alert_sentences(alerts, window_minutes=15)
    assert len(sentences) == 2
    assert sentences[0].startswith("Line L3: 100% of its parts failed in the last 15 min (4 of 4)")
    assert sentences[1].endswith("above its limit of 20%.")


def test_a_line_without_its_own_limit_gets_the_default():
    settings = {"threshold": 0.5, "default_line_limit": 0.2, "line_limits": {"L3": 0.1}}
    lines = known_lines(settings, BUCKETS)
    assert lines == ["L1", "L2", "L3"]
    assert line_limits(settings, lines) == {"L1": 0.2, "L2": 0.2, "L3": 0.1}


def test_a_part_says_its_class_score_station_and_verdict():
    part = {
        "inspection_id": 7, "line_id": "L1", "station_id": "S2", "created_at": "2026-12-05T10:04:05Z",
        "defect_class": "crazing", "pred_score": 0.934, "defects": [{}, {}],
    }  # fmt: skip
    assert part_title(part) == "**#7** · L1 · S2 · 10:04:05  \n**crazing** · score **0.93** · 2 defect(s)"
    assert verdict_text(None) == "not reviewed"
    assert verdict_text({"verdict": "false_alarm", "operator": "ana"}) == "false alarm by ana"


def test_the_page_says_when_the_api_cannot_be_reached(monkeypatch):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("VERTICALS_API_URL", url)
    page = AppTest.from_file(PAGE, default_timeout=30).run()
    assert [e.value for e in page.error] == [
        f"Cannot reach the inspection API at {url}: start it with `make run`."
    ]


def test_the_page_says_when_no_model_is_served_and_shows_the_empty_line(monkeypatch, checkpoint, tmp_path):
    settings = QCSettings(
        database=f"sqlite:///{tmp_path / 'qc.db'}",
        model=str(tmp_path / "no_model"),
        images=str(tmp_path / "img"),
    )
    with serving(create_app(ServeSettings(model=str(checkpoint)), industrial_qc=settings)) as url:
        monkeypatch.setenv("VERTICALS_API_URL", url)
        page = AppTest.from_file(PAGE, default_timeout=30).run()
    assert page.error == []
    assert page.warning[0].value.startswith("No inspection model is served, so no new part is inspected: ")
    assert str(tmp_path / "no_model") in page.warning[0].value
    assert [i.value for i in page.info] == [
        "No part inspected in this period yet.",
        "No failed part in this period yet.",
        "No failed part yet.",
    ]
    assert page.slider(key="threshold").value == settings.threshold
