"""Deploy tab, Drift section: a deployment's sampled traffic against a dataset's test split, with the PSI and
chi-square figures, an alarm banner over the thresholds, and live vs reference charts.

Viewers may read it. The core (`jobs.api.deployment_drift`) picks the reference, runs it once and computes every
figure; this module only shows them.
"""

from __future__ import annotations

import gradio as gr

from jobs import api
from storage.errors import WorkbenchError
from workbench import drift_charts
from workbench.drift_format import report_lines
from workbench.ui import INFO, OK, WARNING, esc

PRIVATE = dict(api_visibility="private")
DEFAULT_WINDOW = 1000
BANNER_STYLES = {
    "alarm": ("#fdecea", "#b3261e", WARNING),
    "watch": ("#fff4e5", "#8a5300", "◐"),
    "ok": ("#e8f5e9", "#1b5e20", OK),
}
INFO_STYLE = ("#f1f3f4", "#3c4043", INFO)
NO_PICK = "Pick a deployment above to see whether its traffic drifts from its reference."


def banner(level: str, text: str) -> str:
    background, color, icon = BANNER_STYLES.get(level, INFO_STYLE)
    return (f"<div id='drift-banner' data-level='{esc(level)}' role='{'alert' if level == 'alarm' else 'status'}' "
            f"style='background:{background};color:{color};border:1px solid {color};border-radius:6px;"
            f"padding:10px 14px;font-weight:600'>{icon} {esc(text)}</div>")


def _window(value) -> int | None:
    if value in (None, ""):
        return DEFAULT_WINDOW
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def show_drift(ref: str | None, dataset: str | None, window):
    """(banner, figures, chart) for the picked deployment."""
    if not ref:
        return banner("info", NO_PICK), "", None
    try:
        report = api.deployment_drift(ref, (dataset or "").strip() or None, _window(window))
    except WorkbenchError as exc:
        return banner("info", f"No drift figures for deployment {ref}: {exc}"), "", None
    lines = report_lines(report)
    figures = "```text\n" + "\n".join(line.strip() for line in lines[1:]) + "\n```"  # the figures line up
    chart = drift_charts.drift_figure(report) if report.length is not None else None
    return banner(report.status, report.message), figures, chart


def dataset_choices():
    names = [d.name for d in api.list_datasets()]
    return gr.update(choices=[("the deployment's default", "")] + [(n, n) for n in names])


def build(pick: gr.Dropdown) -> None:
    """The section, under the deployment picker `pick` of the Deploy tab."""
    with gr.Accordion("Drift", open=True):
        gr.Markdown("Sampled requests (the deployment's `--sample-rate`) against a dataset's test split run "
                    "through the same variant: PSI of lengths and confidences (watch ≥ 0.1, alarm ≥ 0.2) and a "
                    "chi-square test of the label mix (alarm at p < 0.01).")
        with gr.Row():
            dataset = gr.Dropdown(label="Reference dataset", choices=[("the deployment's default", "")], value="",
                                  allow_custom_value=True, elem_id="drift-dataset", scale=3)
            window = gr.Number(DEFAULT_WINDOW, label="Window (newest samples)", precision=0, minimum=1,
                               elem_id="drift-window", scale=1)
            check = gr.Button("Check drift", elem_id="drift-check", scale=1)
        shown = gr.HTML(banner("info", NO_PICK), elem_id="drift-banner-html")
        figures = gr.Markdown(elem_id="drift-figures")
        chart = gr.Plot(label="Live vs reference", elem_id="drift-chart")
    dataset.focus(dataset_choices, None, dataset, show_progress="hidden", **PRIVATE)
    gr.on([check.click, pick.change], show_drift, [pick, dataset, window], [shown, figures, chart], **PRIVATE)
