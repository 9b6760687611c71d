"""The medical site page in a real browser (Debian's chromium, Playwright) against the suite and
the page on loopback: a recorded run's rounds and F1, the site's own counts, how to join, and
the recogniser showing text de-identified.

.venv/bin/python -m pytest tests/apps/medical/test_ui_browser.py -q

(docs/images/medical_site.png is the page of the README's federation on one machine, not of this
test's recorded run.)
"""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from federated.records import RoundRecord, RoundStore
from tests.browser import chromium_page

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def recorded_run(medical_settings) -> int:
    store = RoundStore(medical_settings.rounds_database)
    run_id = store.start_run(adapter="medical", strategy="fedavg+dp", settings={}, rounds=3)
    for n, f1 in enumerate((0.41, 0.58, 0.66), start=1):
        metrics = {"server": {"f1": f1}, "sites": {"f1": f1 - 0.02}, "privacy": {"epsilon": 9.5 * n}}
        record = RoundRecord(
            round=n, sites=["north", "south", "east"], examples=4300,
            bytes_down=6_000_000, bytes_up=3_000_000,
            seconds=40.0 + n, metrics=metrics, adapter_version=f"{n}" * 64,
        )  # fmt: skip
        store.add_round(run_id, record)
    store.finish_run(run_id)
    store.close()
    return run_id


def test_the_site_page_shows_the_federation_its_counts_and_masks_phi(ui_url, recorded_run):
    with chromium_page(ui_url, width=1400, height=2700, timeout_s=90) as page:
        expect(page.get_by_text("Federated clinical entity recognition")).to_be_visible()
        rounds = page.get_by_test_id("stMetric").filter(has_text="Rounds")
        expect(rounds.get_by_test_id("stMetricValue")).to_have_text("3 / 3")
        expect(page.get_by_test_id("stMetric").filter(has_text="Status")).to_contain_text("finished")
        expect(page.locator("[data-testid='stVegaLiteChart'], .vega-embed").first).to_be_visible()
        grid = page.get_by_test_id("stDataFrame").first
        expect(grid.locator("[role=row]").filter(has_text="north, south, east")).to_have_count(3)
        expect(grid.locator("[role=columnheader]").filter(has_text="ε spent")).to_have_count(1)
        training = page.get_by_test_id("stMetric").filter(has_text="Training sentences")
        expect(training.get_by_test_id("stMetricValue")).not_to_have_text("0")
        expect(page.get_by_text("How to join")).to_be_visible()
        expect(page.get_by_text("verticals fed supernode --site north")).to_be_visible()

        page.get_by_role("button", name="Find entities").click()
        shown = page.get_by_test_id("stCode")
        expect(shown).to_contain_text("Seen by Dr. [NAME] on [DATE] (MRN [ID])")
        expect(shown).not_to_contain_text("Anna Berg")
