"""The Optimize and Variants tabs in headless Chromium: build a finetune → export-onnx → quantize pipeline from the
rendered parameter forms, launch it, and watch three evaluated variants appear in the lineage table."""

from __future__ import annotations

import re
import time

import pytest

from tests.conftest import wait_for
from tests.support.browser import choose, require_chromium, serve_app

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PERCENT = re.compile(r"^\d{1,3}\.\d\d%$")


@pytest.fixture
def served(home):
    """The app with its worker on a fresh home that already holds the built-in model and dataset."""
    require_chromium()
    from jobs import api

    api.add_model(api.ModelRequest("builtin:minilm-l6"))
    api.add_dataset(api.DatasetRequest("builtin:tweet-sentiment"))
    with serve_app(home) as url:
        yield url


def pick_kind(page, kind: str, first_param: str) -> None:
    choose(page, "job-kind", kind)
    page.locator(f"#param-{kind}-{first_param}").wait_for(timeout=30_000)  # the form is drawn for this kind


def variant_rows(page) -> dict[str, str]:
    """step -> accuracy cell of each non-original row of the lineage table."""
    rows = page.locator("#variants-table tbody tr").all()
    out = {}
    for row in rows:
        step = row.get_attribute("data-step")
        if step and step != "intake":
            out[step] = row.locator("td").nth(5).inner_text().strip()
    return out


def test_build_a_pipeline_in_the_optimize_tab_and_see_evaluated_variants(page, tmp_path):
    from jobs import api

    started = time.monotonic()
    original = next(v for v in api.list_variants() if v.parent_id is None)
    dataset = api.list_datasets()[0]

    page.get_by_role("tab", name="Optimize").click()
    choose(page, "start-variant", f"#{original.id} ")
    choose(page, "optimize-dataset", f"#{dataset.id} {dataset.name}")
    pick_kind(page, "finetune", "epochs")
    # the auto values are explained for this dataset before anything runs
    page.locator("#auto-defaults").get_by_text("epochs: auto →").wait_for(timeout=30_000)

    # a bad value is refused with the core's message, and nothing is queued
    before = len(api.list_jobs())
    page.locator("#param-finetune-epochs input").fill("-1")
    page.locator("#launch-job").click()
    page.locator("#optimize-status").get_by_text("✗").wait_for(timeout=30_000)
    assert "epochs must be 0 (auto) or positive" in page.locator("#optimize-status").inner_text()
    assert len(api.list_jobs()) == before

    # finetune -> export-onnx -> quantize, filled into the rendered fields
    page.locator("#param-finetune-epochs input").fill("1")
    page.locator("#param-finetune-max_train_examples input").fill("64")
    page.locator("#param-finetune-max_length input").fill("32")
    page.locator("#param-finetune-max_val_examples input").fill("64")
    page.locator("#add-step").click()
    page.locator("#pipeline-steps").get_by_text("1. finetune").wait_for(timeout=30_000)
    pick_kind(page, "export-onnx", "opset")
    page.locator("#add-step").click()
    page.locator("#pipeline-steps").get_by_text("2. export-onnx").wait_for(timeout=30_000)
    pick_kind(page, "quantize", "method")
    choose(page, "param-quantize-method", "ort-dynamic-int8")
    page.locator("#add-step").click()
    steps = page.locator("#pipeline-steps")
    steps.get_by_text("3. quantize").wait_for(timeout=30_000)
    assert "1. finetune (epochs=1, max_length=32, max_train_examples=64, max_val_examples=64) → 2. export-onnx → 3. quantize" in steps.inner_text()

    page.locator("#eval-examples input").fill("64")
    page.locator("#launch-pipeline").click()
    status = page.locator("#optimize-status")
    status.get_by_text("queued pipeline").wait_for(timeout=30_000)
    queued = [j for j in api.list_jobs() if j.pipeline]
    assert sorted(j.kind for j in queued) == ["export-onnx", "finetune", "quantize"]
    assert all(j.evaluation and j.evaluation["max_examples"] == 64 for j in queued)
    assert queued[0].pipeline in status.inner_text()
    finetune = next(j for j in queued if j.kind == "finetune")
    assert {k: finetune.params[k] for k in ("epochs", "max_train_examples", "max_length")} == {
        "epochs": 1, "max_train_examples": 64, "max_length": 32}

    # the lineage table fills in as the worker runs the steps and evaluates each new variant
    page.get_by_role("tab", name="Variants").click()
    page.locator("#variants-table").wait_for(timeout=30_000)

    def evaluated():
        rows = variant_rows(page)
        done = {step: acc for step, acc in rows.items() if PERCENT.match(acc)}
        return done if set(done) >= {"finetune", "export-onnx", "quantize"} else None

    accuracies = wait_for(evaluated, timeout=300, interval=2, what="three evaluated variants in the Variants table")
    assert len(page.locator("#variants-table tbody tr").all()) == 4
    page.screenshot(path=str(tmp_path / "variants.png"), full_page=True)

    tuned = next(v for v in api.list_variants() if v.parent_id == original.id)
    choose(page, "variant-pick", f"#{tuned.id} ")
    page.locator("#training-curve .js-plotly-plot").wait_for(timeout=30_000)
    assert page.locator("#training-curve").is_visible()
    page.locator("#confusion-matrix .js-plotly-plot").wait_for(timeout=30_000)
    summary = page.locator("#variant-summary").inner_text()
    assert f"#{original.id} original" in summary and f"#{tuned.id} finetune" in summary
    assert accuracies["finetune"] in page.locator("#variant-evaluations").inner_text()
    print(f"pipeline through the UI in {time.monotonic() - started:.0f}s: {accuracies}")
