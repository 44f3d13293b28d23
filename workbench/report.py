"""The shareable report: one self-contained HTML file (plotly.js inlined, opens offline) plus CSV and JSON rows."""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs import api
from jobs.api import Comparison, Decision
from jobs.playground import csv_export
from workbench import compare_charts
from workbench.formatting import decision_table, percent

CURRENCY = "USD"  # the price per hour is taken to be in US dollars; the cost column says so


@dataclass(frozen=True)
class ReportSettings:
    """What the decision was made with, beyond the cell and baseline the Decision holds: printed in the report."""

    slo_ms: float | None = None  # p95 latency SLO; None or 0 = none
    max_drop_points: float = 1.0  # accuracy points the sweet spot may lose against the baseline
    price_per_hour: float = 0.0  # machine price per hour; 0 = no costs
    currency: str = CURRENCY


@dataclass(frozen=True)
class Report:
    html: str
    csv: str
    json: str

    def write(self, directory: Path) -> list[Path]:
        directory.mkdir(parents=True, exist_ok=True)
        paths = [directory / "report.html", directory / "rows.csv", directory / "rows.json"]
        for path, text in zip(paths, (self.html, self.csv, self.json), strict=True):
            path.write_text(text, encoding="utf-8")
        return paths


def figures(comparison: Comparison, decision: Decision) -> list:
    figs = [compare_charts.latency_vs_batch(comparison.rows, decision.seq_len),
            compare_charts.throughput(comparison.rows, decision.batch_size, decision.seq_len),
            compare_charts.accuracy_vs_latency(decision.points, decision.front, decision.sweet),
            compare_charts.memory_and_size(comparison.rows, decision.batch_size, decision.seq_len)]
    if decision.baseline is not None:
        figs.append(compare_charts.speedups(decision.baseline, decision.points, decision.ratios))
    return figs


def rows_csv(rows: list[dict]) -> str:
    return csv_export.rows_text(rows)  # formula-looking cells (a variant named "=HYPERLINK(...)") neutralised


# Display precision by column: milliseconds 2 decimals, fractions as percentages, rates and sizes 1 decimal.
PERCENT_2 = {"accuracy", "accuracy_low", "accuracy_high", "majority_accuracy"}
PERCENT_1 = {"spread", "other_cpu_fraction", "steal_fraction"}
ONE_DECIMAL = {"throughput_sps", "tokens_per_s", "samples/s", "size_mb", "peak_rss_mb", "gpu_peak_mb"}


def cell_text(column: str, value: Any) -> str:
    """A table cell as people read it: '12.35' ms, '79.50 %' accuracy, '1,234.5' samples/s, not 13 decimals."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if not isinstance(value, float):
        return str(value)
    if column in PERCENT_2:
        return percent(value, 2, sep=" ")
    if column in PERCENT_1:
        return percent(value, 1, sep=" ")
    if column in ONE_DECIMAL:
        return f"{value:,.1f}"
    if column.endswith(("_ms", " ms", "_s")) or abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"  # a small ratio or fraction: three significant digits


def html_table(rows: list[dict]) -> str:
    head = "".join(f"<th>{html.escape(k)}</th>" for k in (rows[0] if rows else {}))
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell_text(k, v))}</td>" for k, v in r.items()) + "</tr>"
                   for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def cost_column(currency: str = CURRENCY) -> str:
    return f"cost / 1M predictions ({currency})"


def settings_rows(comparison: Comparison, decision: Decision, settings: ReportSettings) -> list[dict[str, str]]:
    baseline = decision.baseline
    price = (f"{settings.price_per_hour:,.2f} {settings.currency} per hour (the '{cost_column(settings.currency)}' "
             "column assumes the machine runs flat out at the measured throughput)"
             if settings.price_per_hour else "not given: no costs")
    rows = [
        ("cell (batch x sequence length)",
         f"{decision.batch_size} x {api.length_label(decision.seq_len, tokens=True)}"),
        ("baseline (speedups relative to it)", baseline.label if baseline is not None else "none measured"),
        ("p95 latency SLO", f"{settings.slo_ms:g} ms" if settings.slo_ms else "none"),
        ("max accuracy drop vs the baseline",
         f"{settings.max_drop_points:g} point{'' if settings.max_drop_points == 1 else 's'}"),
        ("machine price", price),
    ]
    if comparison.run not in (None, ""):
        run = comparison.run
        rows.append(("benchmark run", f"job {run}" if str(run).isdigit() else str(run)))
    return [{"setting": k, "value": v} for k, v in rows]


def build_report(comparison: Comparison, decision: Decision, settings: ReportSettings | None = None,
                 title: str = "Transformer Deployment Workbench report") -> Report:
    settings = settings or ReportSettings()
    parts = []
    for i, fig in enumerate(figures(comparison, decision)):
        parts.append(fig.to_html(full_html=False, include_plotlyjs="inline" if i == 0 else False,
                                 div_id=f"chart-{i}", config={"displaylogo": False}))
    sweet = decision.sweet
    summary = (f"Sweet spot at {api.cell_label(decision.batch_size, decision.seq_len)}: <b>{html.escape(sweet.label)}</b>, "
               f"p95 {sweet.latency_ms:.2f} ms, accuracy {sweet.accuracy:.2%}" if sweet else
               html.escape(decision.undecided or "No variant meets the latency SLO and the accuracy tolerance."))
    if sweet and decision.tie:
        summary += f". {html.escape(decision.tie)}."  # it starts with a label
    fp = comparison.fingerprint
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}} table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ddd;padding:3px 6px}} .note{{color:#a15c00}}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Hardware and libraries: <b>{html.escape(fp.description if fp else "none")}</b> (fingerprint {html.escape(fp.hash if fp else "-")}).
Results from other fingerprints are not included.</p>
<p class="note">{html.escape(comparison.note)}</p>
<p>{summary}</p>
<h2>Settings</h2>{html_table(settings_rows(comparison, decision, settings))}
<h2>Decision at {api.cell_label(decision.batch_size, decision.seq_len)}</h2>{html_table(decision_table(decision, settings.currency))}
{''.join(parts)}
<h2>Measurements</h2>{html_table(api.display_rows(comparison.rows))}
</body></html>"""
    return Report(page, rows_csv(comparison.rows), json.dumps(comparison.rows, indent=2))
