"""Compare tab's load-test section: on the picked hardware fingerprint, each deployment's newest load test as
latency against throughput, so served variants are compared as their callers see them (HTTP, queue, batching).
Kept apart from the benchmark charts: these figures never feed the sweet spot or the speedups."""

from __future__ import annotations

import gradio as gr

from jobs import api
from storage.errors import WorkbenchError
from workbench import loadtest_charts
from workbench.ui import fail

NONE_YET = "No load test on this hardware yet: run one from the Deploy tab (a deployment, then *Run load test*)."
MAX_SERIES = 8


def _variant_name(variant_id: int) -> str:
    try:
        return api.get_variant(variant_id).name.rsplit(" > ", 1)[-1]
    except WorkbenchError:
        return f"variant #{variant_id}"


def load_tests_view(fingerprint: str | None):
    """(markdown, chart): the newest load test of each deployment measured on `fingerprint` (all when blank)."""
    try:
        rows = api.load_tests(fingerprint=fingerprint or None)
    except WorkbenchError as exc:
        return fail(str(exc)), None
    newest: dict[int, int] = {}  # deployment -> its newest load-test job
    for row in rows:
        newest[row["deployment_id"]] = max(newest.get(row["deployment_id"], 0), row["job_id"] or 0)
    if not newest:
        return NONE_YET, None
    picked = sorted(newest.items(), key=lambda item: -item[1])[:MAX_SERIES]
    series = []
    for deployment_id, job_id in picked:
        levels = sorted((r for r in rows if r["deployment_id"] == deployment_id and (r["job_id"] or 0) == job_id),
                        key=lambda r: r["concurrency"])
        series.append((f"#{levels[0]['variant_id']} {_variant_name(levels[0]['variant_id'])} (deployment "
                       f"{deployment_id})", levels))
    busy = sum(r["busy"] for _, levels in series for r in levels)
    where = "on this hardware" if fingerprint else "on any hardware (pick one above to keep them apart)"
    note = (f"Newest load test of {len(series)} deployment(s) {where}: client-side p50 (solid) and p95 (dashed) "
            "against requests/s, one point per concurrency.")
    if busy:
        note += f" {busy} level(s) ran while the machine was busy (hollow markers): not trustworthy."
    return note, loadtest_charts.latency_vs_throughput(series, title="Served variants: latency against throughput")


def build(fingerprint: gr.Dropdown) -> None:
    """The section; it follows the tab's hardware fingerprint picker."""
    with gr.Accordion("Load tests of deployments (latency against throughput)", open=False) as section:
        note = gr.Markdown(NONE_YET, elem_id="compare-loadtest-note")
        chart = gr.Plot(elem_id="chart-loadtest")
    gr.on([fingerprint.change, section.expand], load_tests_view, fingerprint, [note, chart], show_progress="hidden")
