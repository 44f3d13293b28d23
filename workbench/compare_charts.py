"""Plotly figures of the Compare tab and the report: functions of comparison rows and points, nothing else."""

from __future__ import annotations

from typing import Any, Sequence

import plotly.graph_objects as go

from jobs.api import Point, cell_label, length_label

LAYOUT = dict(height=380, margin=dict(l=50, r=20, t=50, b=45), legend=dict(orientation="h", y=-0.2))
LABEL_EVERY_POINT_UP_TO = 6  # more points than this: only the key ones are labelled on the chart; hover shows all
# Neighbouring labels (in latency order) take turns around their points, so close points do not print on each other.
LABEL_POSITIONS = ("top center", "bottom center", "middle right", "top right", "bottom right", "middle left")


def latency_vs_batch(rows: Sequence[dict[str, Any]], seq_len: int) -> go.Figure:
    """One line per variant over the measured batch sizes: a log axis when there are several (1, 8, 64 spread
    evenly), a category axis when there is one (a log axis around a single value draws an empty-looking chart)."""
    fig = go.Figure()
    batches = sorted({r["batch_size"] for r in rows if r["seq_len"] == seq_len})
    for label in sorted({r["label"] for r in rows}):
        cells = sorted((r for r in rows if r["label"] == label and r["seq_len"] == seq_len), key=lambda r: r["batch_size"])
        if cells:
            fig.add_scatter(x=[r["batch_size"] for r in cells], y=[r["p50_ms"] for r in cells], name=label,
                            mode="lines+markers" if len(cells) > 1 else "markers",
                            error_y=dict(type="data", symmetric=False, array=[r["p95_ms"] - r["p50_ms"] for r in cells]))
    axis = dict(xaxis_type="log", xaxis_tickvals=batches) if len(batches) > 1 else dict(xaxis_type="category")
    fig.update_layout(title=f"p50 latency vs batch size ({length_label(seq_len, tokens=True)}; bars up to p95)", xaxis_title="batch size",
                      yaxis_title="ms", **axis, **LAYOUT)
    return fig


def throughput(rows: Sequence[dict[str, Any]], batch_size: int, seq_len: int) -> go.Figure:
    cells = sorted((r for r in rows if r["batch_size"] == batch_size and r["seq_len"] == seq_len),
                   key=lambda r: -r["throughput_sps"])
    fig = go.Figure(go.Bar(x=[r["label"] for r in cells], y=[r["throughput_sps"] for r in cells], marker_color="#4C78A8"))
    fig.update_layout(title=f"Throughput at {cell_label(batch_size, seq_len, tokens=True)}", yaxis_title="samples / s", **LAYOUT)
    return fig


def accuracy_vs_latency(points: Sequence[Point], front: Sequence[Point], sweet: Point | None,
                        sweet_name: str = "sweet spot", baseline: Point | None = None) -> go.Figure:
    """`sweet` is drawn as a star named `sweet_name` (the wizard calls it "recommended"); `baseline` as a ring.

    Every point names itself on hover. Printed labels stay readable with many points: all of them up to
    LABEL_EVERY_POINT_UP_TO, beyond that only the key points (sweet spot, baseline, Pareto frontier), and
    neighbours in latency order put their labels on different sides.
    """
    scored = sorted((p for p in points if p.accuracy is not None), key=lambda p: (p.latency_ms, -(p.accuracy or 0)))
    key = {p.variant_id for p in front} | {p.variant_id for p in (sweet, baseline) if p is not None}
    labelled = [p for p in scored if len(scored) <= LABEL_EVERY_POINT_UP_TO or p.variant_id in key]
    position = {p.variant_id: LABEL_POSITIONS[i % len(LABEL_POSITIONS)] for i, p in enumerate(labelled)}
    fig = go.Figure()
    fig.add_scatter(x=[p.latency_ms for p in scored], y=[p.accuracy * 100 for p in scored], mode="markers+text",
                    text=[p.label if p.variant_id in position else "" for p in scored],
                    textposition=[position.get(p.variant_id, "top center") for p in scored],
                    textfont=dict(size=11), hovertext=[p.label for p in scored],
                    hovertemplate="%{hovertext}<br>p95 %{x:.2f} ms<br>accuracy %{y:.2f} %<extra></extra>",
                    name="variants", marker=dict(size=10, color="#9ecae1"))
    fig.add_scatter(x=[p.latency_ms for p in front], y=[p.accuracy * 100 for p in front], mode="lines+markers",
                    name="Pareto frontier", line=dict(color="#F58518", dash="dot"), marker=dict(size=11, color="#F58518"),
                    hovertext=[p.label for p in front],
                    hovertemplate="%{hovertext} (Pareto)<br>p95 %{x:.2f} ms<br>accuracy %{y:.2f} %<extra></extra>")
    broken = [p for p in scored if p.degenerate]
    if broken:  # a red cross over each: never a candidate, whatever its place on the chart
        fig.add_scatter(x=[p.latency_ms for p in broken], y=[p.accuracy * 100 for p in broken], mode="markers",
                        name="degenerate (never recommended)", hovertext=[f"{p.label}: {p.degenerate_reason}" for p in broken],
                        hovertemplate="%{hovertext}<extra></extra>",
                        marker=dict(size=16, symbol="x-thin-open", color="#E45756", line=dict(width=3)))
    if baseline is not None and baseline.accuracy is not None:
        fig.add_scatter(x=[baseline.latency_ms], y=[baseline.accuracy * 100], mode="markers", name=f"baseline: {baseline.label}",
                        marker=dict(size=18, symbol="circle-open", color="#555", line=dict(width=2)))
    if sweet is not None:
        fig.add_scatter(x=[sweet.latency_ms], y=[sweet.accuracy * 100], mode="markers", name=f"{sweet_name}: {sweet.label}",
                        marker=dict(size=20, symbol="star", color="#54A24B"))
    fig.update_layout(title="Accuracy vs p95 latency", xaxis_title="p95 latency (ms)", yaxis_title="accuracy (%)", **LAYOUT)
    return fig


def memory_and_size(rows: Sequence[dict[str, Any]], batch_size: int, seq_len: int) -> go.Figure:
    cells = [r for r in rows if r["batch_size"] == batch_size and r["seq_len"] == seq_len]
    labels = [r["label"] for r in cells]
    fig = go.Figure()
    fig.add_bar(x=labels, y=[r["peak_rss_mb"] for r in cells], name="peak RSS of its process (MB)", marker_color="#4C78A8")
    fig.add_bar(x=labels, y=[r["size_mb"] for r in cells], name="size on disk (MB)", marker_color="#F58518")
    if any(r["gpu_peak_mb"] for r in cells):
        fig.add_bar(x=labels, y=[r["gpu_peak_mb"] for r in cells], name="GPU peak (MB)", marker_color="#54A24B")
    fig.update_layout(title=f"Memory and size ({cell_label(batch_size, seq_len)})", barmode="group", yaxis_title="MB", **LAYOUT)
    return fig


def speedups(baseline: Point, points: Sequence[Point], ratios: dict[int, dict[str, float]]) -> go.Figure:
    """Only the comparable variants (those with a ratio): the others' bars would be noise shown as fact."""
    ordered = sorted((p for p in points if p.variant_id in ratios), key=lambda p: -ratios[p.variant_id]["speedup"])
    fig = go.Figure(go.Bar(
        x=[p.label for p in ordered], y=[ratios[p.variant_id]["speedup"] for p in ordered], marker_color="#54A24B",
        error_y=dict(type="data", symmetric=False,
                     array=[ratios[p.variant_id]["high"] - ratios[p.variant_id]["speedup"] for p in ordered],
                     arrayminus=[ratios[p.variant_id]["speedup"] - ratios[p.variant_id]["low"] for p in ordered]),
    ))
    fig.add_hline(y=1.0, line_dash="dot", line_color="#888")
    resolution = max((ratios[p.variant_id].get("resolution", 0.0) for p in ordered), default=0.0)
    if resolution:  # bars whose whiskers reach into the band are as fast as the baseline, as far as it can tell
        fig.add_hrect(y0=1 / (1 + resolution), y1=1 + resolution, fillcolor="#888", opacity=0.15, line_width=0,
                      annotation_text=f"as fast: within the benchmark's {resolution:.0%} resolution",
                      annotation_position="top left")
    fig.update_layout(title=f"Speedup over {baseline.label} (median ratio; whiskers: 95% bootstrap interval)", yaxis_title="x faster", **LAYOUT)
    return fig
