"""The fraud desk in a real browser (Debian's chromium, Playwright) against the finance API and the
dashboard on loopback: transactions scored through POST /finance/score show up in the day's
alert queue with their reasons, and Confirm fraud stores the analyst's label in the database.

.venv/bin/python -m pytest -q tests/apps/finance_risk/test_ui.py
"""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest
from playwright.sync_api import expect

from apps.finance_risk.store import TransactionStore
from tests.apps.finance_risk.conftest import DESK_HEADERS
from tests.browser import chromium_page

pytestmark = pytest.mark.slow
DAY = "2018-09-20"  # the newest day of the desk's database: the page opens on it


@pytest.fixture(scope="module")
def scored_day(desk_url) -> dict:
    """Six transactions of three cards scored by the API; the day's queue as the API gives it."""
    for n in range(6):
        body = {
            "transaction_id": f"ui{n}", "customer_id": f"card{n % 3}", "terminal_id": f"m{n % 2}",
            "amount": 20.0 + 40 * n, "timestamp": f"{DAY}T{8 + n:02d}:15:00Z",
        }  # fmt: skip
        httpx.post(
            f"{desk_url}/finance/score", json=body, headers=DESK_HEADERS, timeout=30
        ).raise_for_status()
    queue = httpx.get(f"{desk_url}/finance/alerts", params={"day": DAY}, headers=DESK_HEADERS, timeout=30)
    return queue.json()


def test_the_desk_shows_the_queue_and_confirm_fraud_stores_the_label(desk_ui_url, scored_day, desk_settings):
    top = scored_day["cards"][0]
    riskiest = top["transactions"][0]["transaction_id"]
    with chromium_page(desk_ui_url, width=1400, height=2400, timeout_s=60) as page:
        expect(page.get_by_text("Fraud desk", exact=True)).to_be_visible()
        expect(page.get_by_text(f"Alert queue: the top 100 cards of {DAY}")).to_be_visible()
        scored = page.get_by_test_id("stMetric").filter(has_text="Scored transactions")
        expect(scored.get_by_test_id("stMetricValue")).to_have_text("6")
        card = page.locator(f".st-key-card-{top['customer_id']}")
        expect(card).to_contain_text(f"#1 · card {top['customer_id']}")
        expect(card).to_contain_text("Why: the score minus the score")
        card.get_by_role("button", name="Confirm fraud").click()
        expect(page.get_by_text(f"Transaction {riskiest} labelled fraud (analyst).")).to_be_visible()
        expect(page.locator(f".st-key-card-{top['customer_id']}")).to_contain_text("fraud (analyst)")

    store = TransactionStore(desk_settings.database)
    day = datetime.fromisoformat(DAY).replace(tzinfo=UTC)
    stored = store.activity(since=day, until=day.replace(day=21), detail=True).set_index("transaction_id")
    store.close()
    assert stored.loc[riskiest, "fraud"] == 1 and stored.loc[riskiest, "label_source"] == "analyst"
