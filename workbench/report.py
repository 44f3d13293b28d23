"""The shareable report: one self-contained HTML file (plotly.js inlined, opens offline) plus CSV and JSON rows."""

from __future__ import annotations

import csv
import html
import io
import json
from dataclasses import dataclass
from pathlib import Path

from jobs.api import Comparison, Decision, decision_table
from workbench import compare_charts


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
    out = io.StringIO()
    if rows:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return out.getvalue()


def html_table(rows: list[dict]) -> str:
    head = "".join(f"<th>{html.escape(k)}</th>" for k in (rows[0] if rows else {}))
    body = "".join("<tr>" + "".join(f"<td>{html.escape('' if v is None else str(v))}</td>" for v in r.values()) + "</tr>"
                   for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def build_report(comparison: Comparison, decision: Decision, title: str = "Transformer Deployment Workbench report") -> Report:
    parts = []
    for i, fig in enumerate(figures(comparison, decision)):
        parts.append(fig.to_html(full_html=False, include_plotlyjs="inline" if i == 0 else False,
                                 div_id=f"chart-{i}", config={"displaylogo": False}))
    sweet = decision.sweet
    summary = (f"Sweet spot at batch {decision.batch_size} x {decision.seq_len}: <b>{html.escape(sweet.label)}</b>, "
               f"p95 {sweet.latency_ms:.2f} ms, accuracy {sweet.accuracy:.2%}" if sweet else
               "No variant meets the latency SLO and the accuracy tolerance.")
    fp = comparison.fingerprint
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}} table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ddd;padding:3px 6px}} .note{{color:#a15c00}}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Hardware and libraries: <b>{html.escape(fp.description if fp else "none")}</b> (fingerprint {html.escape(fp.hash if fp else "-")}).
Results from other fingerprints are not included.</p>
<p class="note">{html.escape(comparison.note)}</p>
<p>{summary}</p>
<h2>Decision at batch {decision.batch_size} x {decision.seq_len}</h2>{html_table(decision_table(decision))}
{''.join(parts)}
<h2>Measurements</h2>{html_table(comparison.rows)}
</body></html>"""
    return Report(page, rows_csv(comparison.rows), json.dumps(comparison.rows, indent=2))
