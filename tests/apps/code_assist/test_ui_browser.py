"""The code-assist page in a real browser: Debian's chromium driven by Playwright, against the
Streamlit page and the suite, both on loopback (see conftest.py).

.venv/bin/python -m pytest tests/apps/code_assist/test_ui_browser.py -q -m slow
VERTICALS_SCREENSHOT=1 .venv/bin/python -m pytest tests/apps/code_assist/test_ui_browser.py -q
    # also writes docs/images/code_assist_playground.png

NOTE: chromium comes from apt (`apt-get install chromium`); never `playwright install`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from apps.code_assist.client import CodeClient
from tests.apps.code_assist.conftest import API_KEY, write_report
from tests.browser import chromium_page
from tests.loopback import ROOT

pytestmark = pytest.mark.slow

SCREENSHOT = ROOT / "docs" / "images" / "code_assist_playground.png"
MODEL_S = 120  # one completion on a busy CPU
FILEPATH = "playground.py"  # the page's default: the same request as the page's, so the same answer
# Function bodies the embedded model completes (greedy, so the same way every time): the first it
# completes with some text is typed into the page, as an empty completion has nothing to accept.
CANDIDATES = [
    ('def mean(values: list[float]) -> float:\n    """The arithmetic mean."""\n    return ', "\n"),
    ("def area(width, height):\n    return ", "\n"),
    ("class Cart:\n    def __init__(self):\n        self.", "\n"),
]


@pytest.fixture(scope="module")
def client(suite):
    return CodeClient(suite, api_key=API_KEY)


@pytest.fixture(scope="module")
def document(client) -> tuple[str, str, str]:
    """(prefix, suffix, the API's completion at the cursor), asked of the API directly."""
    for prefix, suffix in CANDIDATES:
        out = client.complete(prefix=prefix, suffix=suffix, language="python", filepath=FILEPATH)
        if out.choices and out.choices[0].text:
            return prefix, suffix, out.choices[0].text
    pytest.fail(f"the model completes none of {CANDIDATES}: add a function body it completes")


@pytest.fixture(scope="module")
def ui_page(ui_url):
    with chromium_page(ui_url, width=1400, height=1000, timeout_s=MODEL_S) as page:
        yield page


def python_selects(client: CodeClient) -> int:
    rows = {row.language: row for row in client.stats().languages}
    return rows["python"].selects if "python" in rows else 0


def test_a_completion_is_shown_in_place_accepted_and_counted(ui_page, ui_url, client, document):
    page = ui_page
    prefix, suffix, text = document
    page.goto(ui_url)  # the playground is the default page: at the root, not at /play
    _type(page, "Before the cursor", prefix)
    _type(page, "After the cursor", suffix)
    accepted_before = python_selects(client)

    page.get_by_role("button", name="Complete").click()
    shown = page.locator("pre.completion")
    mark = shown.locator("mark#completion")
    expect(mark).not_to_be_empty()
    assert mark.text_content() == text  # greedy: the very text the API gives the same request
    assert shown.text_content().startswith(prefix.lstrip("\n"))  # the page sent what we typed
    if os.environ.get("VERTICALS_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT))

    page.get_by_role("button", name="Accept").click()
    expect(page.get_by_text("Accepted.")).to_be_visible()
    expect(shown).to_have_count(0)  # answered once: the buttons go with it
    accepted = python_selects(client)
    assert accepted == accepted_before + 1

    page.get_by_role("link", name="Acceptance").click()
    expect(page).to_have_url(re.compile(r"/stats$"))
    metric = page.get_by_test_id("stMetric").filter(has_text="Accepted")
    expect(metric.get_by_test_id("stMetricValue")).to_have_text(str(client.stats().selects))
    # the grid draws on a canvas; its cells are also in an accessible table under it
    python_row = page.get_by_test_id("stDataFrame").locator("[role=row]").filter(has_text="python")
    expect(python_row.locator("[role=gridcell][aria-colindex='4']")).to_have_text(str(accepted))


def test_the_evaluations_page_lists_a_report(ui_page, ui_url, code_settings):
    page = ui_page
    write_report(Path(code_settings.evaluations_dir), pass_at_1=0.5)
    page.goto(f"{ui_url}/eval")
    table = page.get_by_test_id("stDataFrame")
    expect(table).to_contain_text("humaneval")


def _type(page, label: str, text: str) -> None:
    """Fills a text area and applies it (Ctrl+Enter), as Streamlit applies a text area's value
    only then or on blur."""
    area = page.get_by_label(label)
    area.fill(text)
    area.press("Control+Enter")
    expect(area).to_have_value(text)
