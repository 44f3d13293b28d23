"""The Predictor and A/B tabs in headless Chromium, on two tiny classifiers and the toy sentiment dataset: one
prediction, a batch, a bad upload, two variants side by side and on a split, and a traffic-split experiment."""

from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import expect

from tests.conftest import wait_for
from tests.support.browser import choose, module_home, open_page, require_chromium, serve_app, upload_file

pytestmark = [pytest.mark.browser, pytest.mark.slow]

LABELS = ("negative", "neutral", "positive")
TEXT = "what a wonderful day"
WAIT = 60_000


@pytest.fixture(scope="module")
def served(tmp_path_factory, minilm_dir):
    """The app with its worker on a fresh home holding two tiny classifiers (seeds 0 and 1) and the toy dataset.

    Module-scoped, so the environment is set (and restored) here rather than with monkeypatch.
    """
    require_chromium()
    from jobs import api
    from tests.support.tiny import add_two_tiny_variants

    root = tmp_path_factory.mktemp("playground")
    home = root / "home"
    with module_home(home):
        try:
            variants = list(add_two_tiny_variants(root, minilm_dir))
            dataset = api.get_dataset("toy")
            with serve_app(home) as url:
                yield {"url": url, "variants": variants, "dataset": dataset}
        finally:
            from jobs.playground.predictor_cache import CACHE

            CACHE.clear()


@pytest.fixture
def page(served):
    with open_page(served["url"]) as page:
        yield page


def text_of(page, elem_id: str) -> str:
    return page.locator(f"#{elem_id}").inner_text()


def wait_text(page, elem_id: str, text: str, timeout: int = WAIT) -> str:
    page.locator(f"#{elem_id}").get_by_text(text).first.wait_for(timeout=timeout)
    return text_of(page, elem_id)


def row_count(page, elem_id: str) -> int:
    """Rows of a Gradio Dataframe (it draws only the rows in view; the grid states how many it holds)."""
    return int(page.locator(f"#{elem_id} [role=grid]").get_attribute("aria-rowcount")) - 1  # less the header


def table_rows(page, elem_id: str) -> list[list[str]]:
    """Cell texts of the rows a Gradio Dataframe has drawn (the first ~20), in order."""
    rows = page.locator(f"#{elem_id} [role=row].virtual-row").all()
    drawn = sorted((int(r.get_attribute("data-index")), r) for r in rows)
    return [[c.inner_text().strip() for c in r.locator("[role=gridcell]").all()] for _, r in drawn]


def test_predict_one_text_then_a_batch_in_the_predictor_tab(page, served, tmp_path):
    from jobs import api

    started = time.monotonic()
    a = served["variants"][0]
    page.get_by_role("tab", name="Predictor").click()
    choose(page, "predict-variant", f"#{a.id} ")
    page.locator("#predict-text textarea").fill(TEXT)
    page.locator("#predict-button").click()
    page.locator("#predict-chart .js-plotly-plot").wait_for(timeout=WAIT)
    result = wait_text(page, "predict-result", "ms")
    assert re.search(r"\d+\.\d %", result) and "tokens" in result, result
    shown = next(label for label in LABELS if label in result)
    assert shown == api.predict(a.id, TEXT).label  # the same variant, database and predictor code path
    assert f"#{a.id} (" in text_of(page, "predict-loaded")
    page.screenshot(path=str(tmp_path / "predictor.png"), full_page=True)

    # a text longer than the model's max_length is cut, and the result says so
    page.locator("#predict-text textarea").fill("word " * 400)
    page.locator("#predict-button").click()
    assert "truncated: the model read the first 128 of 402 tokens" in wait_text(page, "predict-result", "truncated")

    # an empty text is refused with the core's message
    page.locator("#predict-text textarea").fill("")
    page.locator("#predict-text textarea").press("Enter")
    assert "the text is empty" in wait_text(page, "predict-result", "✗")

    # an example from the dataset fills the text box
    choose(page, "predict-example", "[")
    expect(page.locator("#predict-text textarea")).to_have_value(re.compile(r"\S"), timeout=WAIT)

    # many lines at once, with a table and a CSV to download
    page.locator("#batch-lines textarea").fill("what a wonderful day\nthe meeting is at noon\nworst service ever")
    page.locator("#batch-button").click()
    status = wait_text(page, "batch-status", "✓ 3 texts")
    assert "ms per text" in status
    assert row_count(page, "batch-table") == 3
    assert [r[0] for r in table_rows(page, "batch-table")] == ["what a wonderful day", "the meeting is at noon",
                                                               "worst service ever"]
    page.locator("#batch-download a").first.wait_for(timeout=WAIT)
    assert f"predictions-variant-{a.id}" in text_of(page, "batch-download"), text_of(page, "batch-download")
    page.screenshot(path=str(tmp_path / "predictor-batch.png"), full_page=True)

    # an upload that is not UTF-8 is refused with one clear line
    bad = tmp_path / "latin1.csv"
    bad.write_bytes("text\ncaf\xe9 au lait\n".encode("latin-1"))
    upload_file(page, "batch-upload", bad)  # uploaded: used instead of the lines
    page.locator("#batch-button").click()
    assert "not UTF-8" in wait_text(page, "batch-status", "✗")
    print(f"predictor tab in {time.monotonic() - started:.0f}s")


def test_compare_two_variants_on_a_text_a_split_and_in_a_traffic_split(page, served, tmp_path):
    from jobs import api

    started = time.monotonic()
    a, b = served["variants"]
    page.get_by_role("tab", name="A/B").click()
    choose(page, "ab-a", f"#{a.id} ")
    choose(page, "ab-b", f"#{b.id} ")

    # side by side
    page.locator("#ab-text textarea").fill(TEXT)
    page.locator("#ab-compare").click()
    page.locator("#ab-chart .js-plotly-plot").wait_for(timeout=WAIT)
    verdict = wait_text(page, "ab-verdict", "agree")
    assert "✓ agree" in verdict or "⚠ disagree" in verdict
    for side in ("a", "b"):
        assert re.search(r"\d+\.\d % · \d+\.\d ms · 6 tokens", text_of(page, f"ab-result-{side}"))

    # on the toy dataset's test split, with McNemar's test and the disagreements
    choose(page, "ab-dataset", "toy")
    page.locator("#ab-limit input").fill("0")
    page.locator("#ab-run").click()
    summary = wait_text(page, "ab-summary", "McNemar")
    assert "significant at the 5 % level" in summary and "p-value" in summary
    stated = int(re.search(r"([\d,]+) disagreements", summary).group(1).replace(",", ""))
    assert stated == len(api.ab_test_set(a.id, b.id, served["dataset"].id, "test").disagreements) > 0  # seeds disagree
    page.locator("#ab-accuracy-chart .js-plotly-plot").wait_for(timeout=WAIT)
    assert row_count(page, "ab-disagreements") == stated
    rows = table_rows(page, "ab-disagreements")
    gaps = [float(r[-1]) for r in rows]
    assert gaps == sorted(gaps, reverse=True)
    page.locator("#ab-sort").get_by_text("A confidence").click()

    def sorted_by_a():
        confidences = [float(r[4]) for r in table_rows(page, "ab-disagreements")]
        return confidences and confidences == sorted(confidences, reverse=True)

    wait_for(sorted_by_a, timeout=30, what="the disagreements sorted by A's confidence")

    # a traffic split: one routed request with feedback, then simulated traffic
    page.locator("#ab-start").click()
    wait_text(page, "ab-start-status", "started experiment")
    page.locator("#ab-user textarea").fill("alice")
    page.locator("#ab-request-text textarea").fill(TEXT)
    page.locator("#ab-send").click()
    routed = wait_text(page, "ab-routed", "user alice → arm")
    arm = re.search(r"arm ([AB])", routed).group(1)
    page.locator("#ab-correct").click()
    wait_text(page, "ab-feedback", "marked correct")

    def arms():
        return {r[0]: r for r in table_rows(page, "ab-arms") if r}

    row = wait_for(lambda: arms().get(arm) if arms().get(arm, [""] * 6)[4] == "1" else None, timeout=30,
                   what=f"arm {arm} to count the request with its feedback")
    assert (row[2], row[4], row[5]) == ("1", "1", "1")  # requests, with feedback, correct

    choose(page, "ab-sim-dataset", "toy")
    page.locator("#ab-sim-requests input").fill("60")
    page.locator("#ab-simulate").click()
    assert "60 simulated requests" in wait_text(page, "ab-sim-status", "✓")
    page.locator("#ab-arms-chart .js-plotly-plot").wait_for(timeout=WAIT)
    assert sum(int(r[2]) for r in arms().values()) == 61
    page.screenshot(path=str(tmp_path / "ab.png"), full_page=True)
    print(f"A/B tab in {time.monotonic() - started:.0f}s")
