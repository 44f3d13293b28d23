"""The Wizard tab in headless Chromium, end to end on a tiny setting: model and dataset (preselected) → goal (the
detected target changed to a VNNI CPU, quick trial) → the recommended recipe with its reasons → review → launch, one
progress bar while the served app's worker runs it, a page reload in the middle (the address reopens the run), then
the comparison with the recommended variant highlighted, and the run reopened again from the list of recent runs."""

from __future__ import annotations

import re
import time

import pytest

from tests.conftest import wait_for
from tests.support.browser import choose, require_chromium, serve_app

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def served(home, tmp_path, minilm_dir):
    """The app with its worker, on a home holding a tiny classifier (its head fits the toy data) and the toy data."""
    require_chromium()
    from jobs import api
    from tests.support.data import write_sentiment_csv
    from tests.support.tiny import tiny_classifier

    api.add_model(api.ModelRequest(str(tiny_classifier(tmp_path / "tiny", minilm_dir)), name="tiny"))
    api.add_dataset(api.DatasetRequest(str(write_sentiment_csv(tmp_path / "toy.csv")), name="toy"))
    with serve_app(home) as url:
        yield url


def test_the_wizard_from_goal_to_recommended_variant(page, tmp_path):
    from jobs import api

    started = time.monotonic()
    page.get_by_role("tab", name="Wizard").click()

    # 1. model: the only one is preselected
    page.locator("#wizard-model-info").get_by_text("tiny").wait_for(timeout=30_000)
    page.locator("#wizard-next-1").click()

    # 2. dataset: likewise
    page.locator("#wizard-dataset").wait_for(state="visible", timeout=30_000)
    page.locator("#wizard-dataset-info").get_by_text("negative, neutral, positive").wait_for(timeout=30_000)
    page.locator("#wizard-next-2").click()

    # 3. goal: the detected hardware is shown; the target is changed to a VNNI CPU, quick trial on
    hardware = page.locator("#wizard-hardware")
    hardware.wait_for(state="visible", timeout=30_000)
    assert "Detected here:" in hardware.inner_text() and "cores" in hardware.inner_text()
    choose(page, "wizard-target", "cpu-avx512-vnni")
    page.locator("#wizard-max-drop input").fill("50")
    page.locator("#wizard-speedup input").fill("2")
    page.locator("#wizard-quick input").check()
    page.locator("#wizard-next-3").click()

    # 4. the recipe: export (fused) → dynamic int8 → benchmark, each with its reason
    table = page.locator("#wizard-recipe-table")
    table.wait_for(state="visible", timeout=60_000)
    kinds = [row.get_attribute("data-kind") for row in table.locator("tbody tr").all()]
    assert kinds == ["export-onnx", "quantize", "benchmark"]
    quantize = table.locator("tr[data-kind='quantize']").inner_text()
    assert "ort-dynamic-int8" in quantize and "VNNI" in quantize
    recipe_text = page.locator("#wizard-recipe").inner_text()
    assert "already classifies toy" in recipe_text
    # honest about the machine: a target other than this machine's class is named as not this one (machines here
    # differ: an AMD EPYC with AVX-512 VNNI is that class itself)
    from jobs.decisions.wizard import detected_target
    from jobs.runtimes.devices import detect

    assert ("not cpu-avx512-vnni" in recipe_text) == (detected_target(detect()) != "cpu-avx512-vnni"), recipe_text
    page.screenshot(path=str(tmp_path / "recipe.png"), full_page=True)
    page.locator("#wizard-next-4").click()

    # 5. review and launch
    review = page.locator("#wizard-review")
    review.get_by_text("Quick trial").wait_for(timeout=30_000)
    assert "export-onnx" in review.inner_text() and "cpu-avx512-vnni" in review.inner_text()
    page.locator("#wizard-launch").click()
    page.locator("#wizard-launch-status").get_by_text("launched run").wait_for(timeout=30_000)
    launched = time.monotonic()
    queued = [j for j in api.list_jobs() if j.pipeline]
    assert sorted(j.kind for j in queued) == ["benchmark", "evaluate", "export-onnx", "quantize"]  # + the baseline's
    run = queued[0].pipeline
    progress = page.locator("#wizard-progress")
    progress.locator(f"[data-pipeline='{run}']").wait_for(timeout=30_000)
    assert page.locator("#wizard-chart").is_hidden() and page.locator("#wizard-table").is_hidden()  # no placeholders

    # the run outlives the page: its address names it, and a reload in the middle of the run reopens it
    wait_for(lambda: f"run={run}" in page.url, timeout=30, what="the run in the page's address")
    page.reload()
    page.get_by_role("tab", name="Wizard").click()
    page.locator("#wizard-launch-status").get_by_text(f"reopened run {run}").wait_for(timeout=30_000)
    assert progress.locator(f"[data-pipeline='{run}'][data-state='running']").count()  # reopened in the middle

    # one progress bar for the whole run, step lines filling in (still polled after the reload), then the comparison
    progress.locator("progress").wait_for(timeout=30_000)
    wait_for(lambda: progress.locator("[data-state='done'], [data-state='failed']").count(), timeout=240, interval=1,
             what="the wizard run to finish")
    assert progress.locator("[data-state='done']").count(), progress.inner_text()
    assert "100%" in progress.locator(".wizard-percent").inner_text()
    assert progress.locator("li[data-kind][data-status='succeeded']").count() == 3
    summary = page.locator("#wizard-summary")
    summary.get_by_text("Compare").wait_for(timeout=30_000)
    verdict = summary.inner_text().splitlines()[0]
    chart = page.locator("#wizard-chart")
    chart.locator(".js-plotly-plot").wait_for(timeout=30_000)
    legend = chart.locator("g.legend").text_content()  # SVG: the highlighted point is named in the legend
    assert "baseline: #" in legend, legend
    recommended = re.search(r"recommended: (#\d+)", legend)
    rows = page.locator("#wizard-table [role=row].virtual-row").all()
    cells = [[c.inner_text().strip() for c in row.locator("[role=gridcell]").all()] for row in rows]
    assert len(cells) == 3, cells  # the baseline and the two variants the run made
    starred = [row for row in cells if "★" in row]
    if recommended:  # the summary, the chart and the table name the same variant
        assert f"Recommended: {recommended.group(1)}" in verdict, (legend, verdict)
        assert len(starred) == 1 and starred[0][0].startswith(f"{recommended.group(1)} "), cells
    else:  # no decision (an untrained toy baseline can be judged degenerate): the summary says why, no highlight
        assert "Recommended:" not in verdict and not starred, (verdict, cells)
    page.screenshot(path=str(tmp_path / "wizard.png"), full_page=True)
    assert all(j.status.value == "succeeded" for j in api.list_jobs() if j.pipeline)

    # a fresh page (no run in its address) reopens the finished run from the list of recent runs
    page.goto(page.url.split("?")[0])
    page.get_by_role("tab", name="Wizard").click()
    choose(page, "wizard-runs", run)
    progress.locator(f"[data-pipeline='{run}'][data-state='done']").wait_for(timeout=30_000)
    chart.locator(".js-plotly-plot").wait_for(timeout=30_000)
    assert summary.inner_text().splitlines()[0] == verdict  # the same verdict as when it was followed
    wait_for(lambda: f"run={run}" in page.url, timeout=30, what="the reopened run in the page's address")
    print(f"wizard end to end in {time.monotonic() - started:.0f}s (the run {time.monotonic() - launched:.0f}s): "
          f"{verdict}")
