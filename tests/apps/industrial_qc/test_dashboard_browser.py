"""The defect dashboard in a real browser (Debian's chromium, Playwright) against the suite's app
with the /qc router on loopback (a tiny untrained model, threshold 0 so that every part fails):
real NEU-DET images posted by the simulated line show up in the alert banner, both charts and
the failed parts with their overlays; False alarm stores the operator's verdict through the API,
and the threshold control writes the settings. A screenshot is saved under the test's tmp dir
(and copied to /tmp/qc_dashboard.png).

.venv/bin/python -m pytest -q tests/apps/industrial_qc/test_dashboard_browser.py

NOTE: chromium comes from apt (`apt-get install chromium`); never `playwright install`.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect

from apps.industrial_qc.client import QCClient
from apps.industrial_qc.replay import line_images, replay, stations
from apps.industrial_qc.settings import QCSettings
from apps.suite import create_app
from core_model.serve import ServeSettings
from tests.browser import chromium_page
from tests.loopback import ROOT, serving, streamlit_page

pytestmark = pytest.mark.slow
KEY = "qc-desk-key"
UI = ROOT / "apps" / "industrial_qc" / "ui.py"
PARTS = 6


@pytest.fixture(scope="module")
def qc_url(checkpoint, tiny_qc_model, tmp_path_factory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("qc_desk")
    settings = QCSettings(
        database=f"sqlite:///{folder / 'qc.db'}", model=str(tiny_qc_model), images=str(folder / "images"),
        threshold=0.0, line_limit=0.5,
    )  # fmt: skip
    app = create_app(ServeSettings(model=str(checkpoint), api_key=KEY), industrial_qc=settings)
    with serving(app) as url:
        yield url


@pytest.fixture(scope="module")
def client(qc_url) -> Iterator[QCClient]:
    client = QCClient(qc_url, api_key=KEY)
    yield client
    client.close()


@pytest.fixture(scope="module")
def line(client, neu_images) -> list[dict]:
    """PARTS real NEU-DET parts through the simulated line (2 lines x 2 stations); the failed
    inspections as the API lists them, newest first."""
    report = replay(
        client, images=line_images(neu_images, seed=0), stations=stations(2, 2), rate=0, count=PARTS,
        stop=threading.Event(),
    )  # fmt: skip
    assert (report.posted, report.failed, report.errors) == (PARTS, PARTS, 0)
    return client.inspections(failed=True, limit=PARTS)


def test_the_dashboard_shows_the_line_and_stores_a_false_alarm(qc_url, client, line, tmp_path):
    newest = line[0]["inspection_id"]
    args = ["--api", qc_url, "--api-key", KEY, "--refresh", "0"]
    with (
        streamlit_page(UI, args=args, log=tmp_path / "ui.log") as ui_url,
        chromium_page(ui_url, width=1400, height=1800, timeout_s=30) as page,
    ):
        errors: list[str] = []  # a chart vega cannot draw fails only in the browser's console
        page.on(
            "console",
            lambda m: m.type == "error" and "Failed to load resource" not in m.text and errors.append(m.text),
        )
        expect(page.get_by_text("Defect dashboard", exact=True)).to_be_visible()
        banner = page.get_by_test_id("stAlertContentError")
        expect(banner.filter(has_text="Line L1: 100% of its parts failed")).to_be_visible()
        expect(banner.filter(has_text="above its limit of 50%")).to_have_count(2)  # both lines
        expect(page.locator("[data-testid='stVegaLiteChart']")).to_have_count(2)  # rates, Pareto
        part = page.locator(f".st-key-part-{newest}")
        expect(part).to_contain_text(f"#{newest}")
        expect(part).to_contain_text(line[0]["defect_class"])
        expect(part).to_contain_text("not reviewed")
        overlay = part.locator("img").first
        expect(overlay).to_be_visible()
        assert overlay.evaluate("img => img.complete && img.naturalWidth") > 0

        part.get_by_role("button", name="False alarm").click()
        expect(page.get_by_text(f"Part #{newest} marked false alarm.")).to_be_visible()
        expect(page.locator(f".st-key-part-{newest}")).to_contain_text("false alarm by dashboard")

        page.get_by_role("slider").first.press("ArrowRight")  # the threshold: 0.00 -> 0.01
        page.get_by_role("button", name="Save settings").click()
        expect(page.get_by_text("Threshold 0.01 saved")).to_be_visible()
        save_screenshot(page, tmp_path / "qc_dashboard.png")
        assert errors == []

    assert client.inspection(str(newest))["feedback"]["verdict"] == "false_alarm"
    assert client.settings()["threshold"] == pytest.approx(0.01)


def save_screenshot(page, path: Path) -> None:
    page.screenshot(path=str(path), full_page=True)
    shutil.copyfile(path, "/tmp/qc_dashboard.png")
