"""Compare tab's "Across machines" section: one batch x seq cell measured on each kind of machine (one column per
hardware class and fingerprint), as grouped bars and a table. The core (jobs/decisions/machines.py) decides what
is a column, which run it shows and which ratios may be computed; this module only draws and words it."""

from __future__ import annotations

import gradio as gr
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from jobs import api
from storage.errors import WorkbenchError
from workbench.compare_charts import LAYOUT
from workbench.formatting import speedup_words
from workbench.ui import fail

NOT_FACT = "not fact"  # how a busy, unstable or short cell is marked, in the table and on the chart
UNSOUND_PATTERN = "/"  # hatched, faded bars: a figure that is drawn but must not be read as a measurement
PALETTE = ("#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#B279A2", "#FF9DA6", "#9D755D")


def _cell_choice(batch: int, seq: int) -> tuple[str, str]:
    return f"{batch} x {api.length_label(seq)}", f"{batch}:{seq}"  # "16 x 128" shown, "16:128" picked


def _picked_cell(value: str | None) -> tuple[int | None, int | None]:
    batch, _, seq = (value or "").partition(":")
    return (int(batch), int(seq)) if batch.isdigit() and seq.isdigit() else (None, None)


def cell_text(cell, what: str) -> str:
    """'12.34' for a sound figure; '[12.34] not fact: machine busy (...)' for one that may not be read as fact."""
    value = f"{cell.p50_ms:.2f}" if what == "p50" else f"{cell.throughput_sps:.1f}"
    return value if cell.sound else f"[{value}] {NOT_FACT}: {'; '.join(cell.problems)}"


def speedup_text(cell) -> str:
    if cell.speedup is None:
        return f"- ({cell.no_speedup})" if cell.no_speedup else "-"
    return speedup_words(cell.speedup)


def machines_table(view) -> pd.DataFrame:
    """One row per variant; per machine its p50 (ms), throughput (samples/s) and speedup over the baseline in
    that column's own run."""
    records = []
    for variant_id, label in view.variants:
        record = {"variant": label + (" (baseline)" if variant_id == view.baseline_id else "")}
        for column in view.columns:
            name = column.name
            cell = view.cell(variant_id, column.key)
            record[f"{name} p50 ms"] = cell_text(cell, "p50") if cell else "not measured"
            record[f"{name} samples/s"] = cell_text(cell, "throughput") if cell else ""
            record[f"{name} speedup (95% interval)"] = speedup_text(cell) if cell else ""
        records.append(record)
    return pd.DataFrame(records)


def machines_chart(view) -> go.Figure:
    """p50 and throughput, grouped by machine (one bar per variant); hatched, faded bars are not fact."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("p50 latency (ms)", "throughput (samples/s)"))
    machines = [c.name for c in view.columns]
    for index, (variant_id, label) in enumerate(view.variants):
        cells = [view.cell(variant_id, c.key) for c in view.columns]
        hover = [("not measured" if c is None else
                  f"{label} on {column.title}<br>job {column.job_id}, {column.node}, {c.samples} calls"
                  + ("" if c.sound else f"<br>{NOT_FACT}: {'; '.join(c.problems)}"))
                 for c, column in zip(cells, view.columns, strict=True)]
        marker = dict(color=PALETTE[index % len(PALETTE)],
                      opacity=[1.0 if c is None or c.sound else 0.45 for c in cells],
                      pattern=dict(shape=["" if c is None or c.sound else UNSOUND_PATTERN for c in cells]))
        for col, values in ((1, [c.p50_ms if c else None for c in cells]),
                            (2, [c.throughput_sps if c else None for c in cells])):
            fig.add_bar(x=machines, y=values, name=label, legendgroup=label, showlegend=col == 1, marker=marker,
                        hovertext=hover, hovertemplate="%{hovertext}<br>%{y:.2f}<extra></extra>", row=1, col=col)
    fig.update_layout(title=f"{api.cell_label(view.batch_size, view.seq_len, tokens=True)} on each machine "
                            "(hatched: busy, unstable or too few calls: not fact)", barmode="group", **LAYOUT)
    return fig


def machines_view(dataset: str | None, cell: str | None, baseline: str | None):
    """(note, cell picker, baseline picker, chart, table) for the dataset picked in the tab."""
    try:
        view = api.across_machines(dataset or None, *_picked_cell(cell), baseline or None)
    except WorkbenchError as exc:
        return fail(str(exc)), gr.update(), gr.update(), None, pd.DataFrame()
    if not view.columns:
        return " ".join(view.notes), gr.update(choices=[], value=None), gr.update(choices=[], value=None), None, \
            pd.DataFrame()
    lines = [" ".join(view.notes)]
    lines += [f"- **{c.name}**: {c.title}; benchmark job {c.job_id} on {c.node}"
              + (f" ({c.other_runs} older run(s) here not shown)" if c.other_runs else "") for c in view.columns]
    return (
        "\n".join(lines),
        gr.update(choices=[_cell_choice(b, s) for b, s in view.cells], value=f"{view.batch_size}:{view.seq_len}"),
        gr.update(choices=[(label, str(v)) for v, label in view.variants], value=str(view.baseline_id)),
        machines_chart(view),
        machines_table(view),
    )


def build(dataset: gr.Dropdown) -> None:
    """The section; it follows the tab's dataset picker."""
    with gr.Accordion("Across machines (one column per hardware class and fingerprint)", open=False) as section:
        note = gr.Markdown("Open to compare the same variants measured on each kind of machine: run a benchmark "
                           "with `hardware_class` set to each class your Ray nodes advertise.",
                           elem_id="machines-note")
        with gr.Row():
            cell = gr.Dropdown(label="Batch x sequence", choices=[], elem_id="machines-cell")
            baseline = gr.Dropdown(label="Baseline (speedups within each machine's own run)", choices=[],
                                   elem_id="machines-baseline")
        chart = gr.Plot(elem_id="chart-machines")
        table = gr.Dataframe(interactive=False, elem_id="machines-table")
    gr.on([dataset.change, section.expand, cell.input, baseline.input], machines_view, [dataset, cell, baseline],
          [note, cell, baseline, chart, table], show_progress="hidden")
