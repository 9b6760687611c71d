"""The agent console in a real browser: Debian's chromium driven by Playwright, against the
Streamlit console and the suite, both started on loopback (see conftest.py).

.venv/bin/python -m pytest tests/apps/customer_service/test_console_browser.py -q -m slow
VERTICALS_SCREENSHOT=1 .venv/bin/python -m pytest tests/apps/customer_service/test_console_browser.py -q
    # also writes docs/images/customer_service_console.png

NOTE: chromium comes from apt (`apt-get install chromium`); never `playwright install`.
"""

import contextlib
import os
import re
import time

import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import expect

from tests.browser import chromium_page

from .conftest import ROOT

pytestmark = pytest.mark.slow

SCREENSHOT = ROOT / "docs" / "images" / "customer_service_console.png"
MODEL_S = 180  # a parse, a retrieval or a whole draft on a busy CPU


@pytest.fixture(scope="module")
def console_page(console_url):
    with chromium_page(console_url, width=1500, height=1050, timeout_s=MODEL_S) as page:
        yield page


def test_an_agent_reads_the_intent_gets_suggestions_and_streams_a_draft(console_page):
    page = console_page
    page.get_by_role("button", name="New conversation").click()
    expect(page.locator(".st-key-messages")).to_contain_text("No messages yet")
    chat = page.get_by_placeholder("Type as the customer…")
    chat.fill("I lost my card yesterday, it ends in 4321")
    chat.press("Enter")

    intent = page.locator(".st-key-intent-panel")
    expect(intent).to_contain_text(re.compile(r"\w+ confidence [01]\.\d\d"))
    expect(page.locator("[class*='st-key-suggestion-']").first).to_be_visible()

    page.get_by_role("button", name="Draft reply").click()
    partial = _watch_the_draft_stream(page)
    draft = page.locator("[class*='st-key-suggestion-draft-']").first
    assert any("▌" in text for text in partial), f"no partial draft was drawn before the end: {partial[-3:]}"
    expect(page.get_by_label("Reply to the customer")).not_to_have_value("")
    assert draft.inner_text().strip()
    if os.environ.get("VERTICALS_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.locator(".st-key-insights").evaluate("panel => panel.scrollTo(0, 0)")  # the intent on top
        page.screenshot(path=str(SCREENSHOT))


def _watch_the_draft_stream(page) -> list[str]:
    """The streaming box's text, sampled until the finished draft's card replaces it."""
    stream, card = page.locator(".st-key-draft-stream"), page.locator("[class*='st-key-suggestion-draft-']")
    seen, deadline = [], time.monotonic() + MODEL_S
    while card.count() == 0:
        assert time.monotonic() < deadline, f"the draft did not finish in {MODEL_S} s"
        if stream.count():
            with contextlib.suppress(PlaywrightError):  # the box went away since count(): the draft is done
                seen.append(stream.first.inner_text(timeout=1000))
        time.sleep(0.05)
    return seen
