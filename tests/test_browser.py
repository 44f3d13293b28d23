"""The served app in headless Debian Chromium: add a dataset and a model, watch a job reach 'succeeded'."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.support.browser import require_chromium, serve_app

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    require_chromium()
    with serve_app(tmp_path_factory.mktemp("served")) as url:
        yield url


def test_add_dataset_and_model_then_see_the_job_succeed(page, tmp_path):
    page.get_by_role("tab", name="Datasets").click()
    page.locator("#add-builtin-dataset").click()
    status = page.locator("#datasets-status")
    status.get_by_text("Added dataset").wait_for(timeout=120_000)
    assert "tweet-sentiment" in status.inner_text()
    expect(page.locator("#datasets-table")).to_contain_text("tweet-sentiment")
    # the label-distribution chart is drawn for the new dataset
    page.locator("#label-chart .js-plotly-plot").wait_for(timeout=30_000)

    page.get_by_role("tab", name="Models").click()
    page.locator("#add-builtin-model").click()
    page.locator("#models-status").get_by_text("Added model").wait_for(timeout=120_000)

    page.get_by_role("tab", name="Jobs").click()
    row = page.locator("#jobs-table tr[data-status='succeeded']").filter(has_text="inspect")
    row.wait_for(timeout=180_000)
    assert "100%" in row.inner_text()
    assert "Workers:" in page.locator("#workers-line").inner_text()
    page.screenshot(path=str(tmp_path / "jobs.png"), full_page=True)


def test_a_bad_upload_shows_a_clear_message(page, tmp_path):
    bad = tmp_path / "broken.csv"
    bad.write_bytes("text,label\ncaf\xe9,pos\n".encode("latin-1"))
    page.get_by_role("tab", name="Datasets").click()
    page.locator("#dataset-upload input[type=file]").set_input_files(str(bad))
    page.locator("#datasets-status").get_by_text("not UTF-8").wait_for(timeout=30_000)
