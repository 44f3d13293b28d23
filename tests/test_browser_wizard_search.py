"""The wizard's Search choice in headless Chromium: in the goal step "Search" swaps the rule path's SLO for a time
budget, and its button opens the search step with the goal in words (nothing is launched here: the
search itself is tested at the handlers and in tests/test_search.py)."""

from __future__ import annotations

import pytest

# the wizard browser test's app: its worker, a tiny classifier whose head fits the toy data, and the toy data
from tests.test_browser_wizard import served  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_the_search_choice_shows_its_fields_and_its_step(page):
    page.get_by_role("tab", name="Wizard").click()
    page.locator("#wizard-model-info").get_by_text("tiny").wait_for(timeout=30_000)
    page.locator("#wizard-next-1").click()
    page.locator("#wizard-dataset-info").get_by_text("negative, neutral, positive").wait_for(timeout=30_000)
    page.locator("#wizard-next-2").click()

    page.locator("#wizard-approach").wait_for(state="visible", timeout=30_000)
    assert page.locator("#wizard-slo").is_visible() and page.locator("#wizard-budget").is_hidden()
    page.locator("#wizard-approach").get_by_text("Search (try many recipes").click()
    page.locator("#wizard-budget").wait_for(state="visible", timeout=30_000)
    assert page.locator("#wizard-slo").is_hidden() and page.locator("#wizard-speedup").is_visible()
    assert page.locator("#wizard-next-3").is_hidden()
    page.locator("#wizard-budget input").fill("7")
    page.locator("#wizard-traffic").get_by_text("Real traffic: the dataset's own text lengths").click()
    page.locator("#wizard-next-search").click()

    review = page.locator("#wizard-search-review")
    review.get_by_text("within 7 minutes").wait_for(timeout=30_000)
    assert "real traffic" in review.inner_text() and "tiny" in review.inner_text()
    assert page.locator("#wizard-search-launch").is_visible()
    assert page.locator("#wizard-search-chart").is_hidden()  # nothing to draw before a search runs
