"""Compare tab: measurements on one hardware fingerprint, the decision charts, the sweet spot and the report."""

from __future__ import annotations

import tempfile
from pathlib import Path

import gradio as gr
import pandas as pd

from jobs import api
from storage.errors import WorkbenchError
from workbench import compare_charts
from workbench.formatting import SWEET_SPOT, decision_table
from workbench.report import CURRENCY, ReportSettings, build_report
from workbench.tabs import compare_loadtest, compare_machines, compare_searches
from workbench.ui import Refresh, fail

ALL = ""
MAX_LINES = 12  # variants drawn in the per-variant charts


def _cell_key(batch: int, seq: int) -> str:
    return f"{batch} x {api.length_label(seq)}"  # "16 x 128" or "16 x real traffic (test split)"


def _decide(comparison, cell: str | None, baseline: str | None, slo, max_drop, price):
    """The chosen cell (the first measured if none) and the core's decision for it."""
    cells = sorted({(r["batch_size"], r["seq_len"]) for r in comparison.rows})
    keys = [_cell_key(b, s) for b, s in cells]
    cell = cell if cell in keys else keys[0]
    batch, seq = cells[keys.index(cell)]
    known = {str(r["variant_id"]) for r in comparison.rows}
    decision = api.decide(comparison.rows, batch, seq, int(baseline) if baseline in known else None, slo or None,
                          max_drop if max_drop is not None else 1.0, price or 0.0)
    return keys, cell, decision


def run_choices(comparison) -> list[tuple[str, str]]:
    """The benchmark runs to pick from, newest first, each with what makes it trustworthy or not."""
    choices = []
    for r in comparison.runs:
        facts = [f"{r.variants} variants", f"{r.cells} cells"]
        if r.unstable:
            facts.append(f"{r.unstable} unstable")
        if r.busy_max is not None:
            facts.append(f"others took up to {r.busy_max:.0%} CPU")
        if r.rough:
            facts.append("quick trial")
        choices.append((f"job {r.job_id}, {r.measured_at.replace('T', ' ')} ({', '.join(facts)})", str(r.job_id)))
    return choices + [("each variant's newest stable row (mixed runs: no speedups between runs)",
                       api.NEWEST_PER_VARIANT)]


def summary_line(decision, max_drop) -> str:
    cell = api.cell_label(decision.batch_size, decision.seq_len)
    sweet = decision.sweet
    if sweet is None:
        return f"### Could not decide at {cell}: {decision.undecided}"
    ratio = decision.ratios.get(sweet.variant_id)
    speed = ""
    if ratio and decision.baseline and sweet.variant_id != decision.baseline.variant_id:
        how = (f"as fast as {decision.baseline.label} (within the benchmark's {ratio['resolution']:.0%} resolution: "
               if ratio.get("level")
               else f"faster than {decision.baseline.label} (")
        speed = (f", {ratio['speedup']:.2f}x {how}95% interval {ratio['low']:.2f}-{ratio['high']:.2f}; "
                 f"{ratio['n_baseline']} and {ratio['n_candidate']} calls)")
    tie = f"\n\n{decision.tie}." if decision.tie else ""  # it starts with a label
    return (f"### {SWEET_SPOT} Sweet spot at {cell}: **{sweet.label}**, p95 {sweet.latency_ms:.2f} ms, accuracy "
            f"{sweet.accuracy:.2%}{speed}{tie}")


def render(dataset: str | None, fingerprint: str | None, run: str | None, cell: str | None, baseline: str | None,
           slo: float | None, max_drop: float | None, price: float | None):
    """Everything the tab shows, from the core's comparison and decision (no ML here)."""
    try:
        comparison = api.comparison(dataset or None, fingerprint or None, run or None)
    except WorkbenchError as exc:
        return (fail(str(exc)),) + _empty()
    fp_choices = [(f"{f.description} [{f.hash}] ({f.rows} rows)", f.hash) for f in comparison.fingerprints]
    fp_value = comparison.fingerprint.hash if comparison.fingerprint else None
    if not comparison.rows:
        return (comparison.note,) + _empty(fp_choices)
    cell_choices, cell, decision = _decide(comparison, cell, baseline, slo, max_drop, price)
    batch, seq = decision.batch_size, decision.seq_len
    variant_choices = sorted({(r["label"], str(r["variant_id"])) for r in comparison.rows}, key=lambda c: int(c[1]))
    sweet = decision.sweet
    summary = summary_line(decision, max_drop)
    note = comparison.note or f"Hardware and libraries: {comparison.fingerprint.description}"
    # Charts across cells and the full table stay readable and light with hundreds of variants: they show the
    # variants the decision is about (frontier, baseline, sweet spot, the fastest); the CSV has every row.
    focus = api.focus_variants(decision, limit=MAX_LINES)
    focused_rows = [r for r in comparison.rows if r["variant_id"] in focus]
    cell_rows = [r for r in comparison.rows if (r["batch_size"], r["seq_len"]) == (batch, seq)]
    if len(focus) < len({r["variant_id"] for r in comparison.rows}):
        note += (f"  \nLatency and memory charts show {len(focus)} variants: the Pareto frontier, the baseline, "
                 "the sweet spot and the fastest. The report's CSV holds every row.")
    return (
        note,
        gr.update(choices=fp_choices, value=fp_value),
        gr.update(choices=run_choices(comparison), value=str(comparison.run)),
        gr.update(choices=cell_choices, value=cell),
        gr.update(choices=variant_choices, value=str(decision.baseline.variant_id) if decision.baseline else None),
        summary,
        pd.DataFrame(decision_table(decision, CURRENCY)),
        compare_charts.latency_vs_batch(focused_rows, seq),
        compare_charts.throughput(comparison.rows, batch, seq),
        compare_charts.accuracy_vs_latency(decision.points, decision.front, sweet),
        compare_charts.memory_and_size(focused_rows, batch, seq),
        compare_charts.speedups(decision.baseline, decision.points, decision.ratios) if decision.baseline else None,
        pd.DataFrame(api.display_rows(cell_rows)),
    )


def _empty(fp_choices=None):
    return (gr.update(choices=fp_choices or [], value=None), gr.update(choices=[], value=None),
            gr.update(choices=[], value=None), gr.update(choices=[], value=None), "", pd.DataFrame(), None, None, None,
            None, None, pd.DataFrame())


def write_report(dataset, fingerprint, run, cell, baseline, slo, max_drop, price):
    comparison = api.comparison(dataset or None, fingerprint or None, run or None)
    if not comparison.rows:
        return None
    _, _, decision = _decide(comparison, cell, baseline, slo, max_drop, price)
    settings = ReportSettings(slo_ms=slo or None, max_drop_points=max_drop if max_drop is not None else 1.0,
                              price_per_hour=price or 0.0)
    out = Path(tempfile.mkdtemp(prefix="workbench-report-"))
    return [str(p) for p in build_report(comparison, decision, settings).write(out)]


def build() -> Refresh:
    gr.Markdown("Measurements from one **benchmark** job at a time on one hardware/library fingerprint (never mixed), "
                "with each variant's accuracy. Pick the run, the cell, a baseline, your latency SLO and accuracy "
                "tolerance. A speedup is shown only between stable cells of one run, measured while the machine was "
                "not busy; a degenerate variant (one class for all inputs, or no better than the majority class) is "
                "never the sweet spot.")
    with gr.Row():
        dataset = gr.Dropdown(label="Dataset texts", choices=[("all", ALL)], value=ALL, elem_id="compare-dataset")
        fingerprint = gr.Dropdown(label="Hardware / libraries", choices=[], elem_id="compare-fingerprint", scale=3)
        run = gr.Dropdown(label="Benchmark run (speedups only within one run)", choices=[], elem_id="compare-run",
                          scale=2)
        cell = gr.Dropdown(label="Batch x sequence", choices=[], elem_id="compare-cell")
    with gr.Row():
        baseline = gr.Dropdown(label="Baseline (speedups relative to it)", choices=[], elem_id="compare-baseline")
        slo = gr.Number(label="p95 latency SLO (ms, 0 = none)", value=0, elem_id="compare-slo")
        max_drop = gr.Number(label="Accuracy tolerance (points)", value=1.0, elem_id="compare-tolerance")
        price = gr.Number(label="Machine price per hour (USD, for cost / 1M predictions)", value=0,
                          elem_id="compare-price")
    note = gr.Markdown(elem_id="compare-note")
    sweet = gr.Markdown(elem_id="sweet-spot")
    table = gr.Dataframe(label="Decision", interactive=False, elem_id="decision-table")
    with gr.Row():
        pareto = gr.Plot(elem_id="chart-pareto")
        speed = gr.Plot(elem_id="chart-speedup")
    with gr.Row():
        latency = gr.Plot(elem_id="chart-latency")
        through = gr.Plot(elem_id="chart-throughput")
    memory = gr.Plot(elem_id="chart-memory")
    compare_loadtest.build(fingerprint)  # deployments' load tests on the same hardware, apart from the decision
    compare_machines.build(dataset)  # the same cell on every machine, one column per hardware class
    compare_searches.build()  # what a search tried and found, for viewers too (the wizard is editors')
    with gr.Accordion("Measurements at this cell (every cell: export the report)", open=False):
        rows = gr.Dataframe(interactive=False, elem_id="compare-rows")
    with gr.Row():
        report = gr.Button("Export report (HTML + CSV + JSON)", elem_id="export-report")
        files = gr.File(label="Report files", file_count="multiple", elem_id="report-files")

    inputs = [dataset, fingerprint, run, cell, baseline, slo, max_drop, price]
    outputs = [note, fingerprint, run, cell, baseline, sweet, table, latency, through, pareto, memory, speed, rows]
    for control in (dataset, fingerprint, run, cell, baseline):
        control.input(render, inputs, outputs)
    for number in (slo, max_drop, price):
        number.submit(render, inputs, outputs)
        number.blur(render, inputs, outputs)
    report.click(write_report, inputs, files)

    def refresh():
        choices = [("all", ALL)] + [(d.name, str(d.id)) for d in api.list_datasets()]
        return (gr.update(choices=choices),) + render(None, None, None, None, None, 0, 1.0, 0)

    return Refresh(refresh, [dataset, *outputs])
