"""Plotly figures of the Compare tab and the report: functions of comparison rows and points, nothing else."""

from __future__ import annotations

from typing import Any, Sequence

import plotly.graph_objects as go

from jobs.api import Point

LAYOUT = dict(height=380, margin=dict(l=50, r=20, t=50, b=45), legend=dict(orientation="h", y=-0.2))


def latency_vs_batch(rows: Sequence[dict[str, Any]], seq_len: int) -> go.Figure:
    fig = go.Figure()
    for label in sorted({r["label"] for r in rows}):
        cells = sorted((r for r in rows if r["label"] == label and r["seq_len"] == seq_len), key=lambda r: r["batch_size"])
        if cells:
            fig.add_scatter(x=[r["batch_size"] for r in cells], y=[r["p50_ms"] for r in cells], name=label,
                            mode="lines+markers", error_y=dict(type="data", symmetric=False,
                                                               array=[r["p95_ms"] - r["p50_ms"] for r in cells]))
    fig.update_layout(title=f"p50 latency vs batch size (seq {seq_len}; bars up to p95)", xaxis_title="batch size",
                      yaxis_title="ms", xaxis_type="log", **LAYOUT)
    return fig


def throughput(rows: Sequence[dict[str, Any]], batch_size: int, seq_len: int) -> go.Figure:
    cells = sorted((r for r in rows if r["batch_size"] == batch_size and r["seq_len"] == seq_len),
                   key=lambda r: -r["throughput_sps"])
    fig = go.Figure(go.Bar(x=[r["label"] for r in cells], y=[r["throughput_sps"] for r in cells], marker_color="#4C78A8"))
    fig.update_layout(title=f"Throughput at batch {batch_size} x {seq_len} tokens", yaxis_title="samples / s", **LAYOUT)
    return fig


def accuracy_vs_latency(points: Sequence[Point], front: Sequence[Point], sweet: Point | None,
                        sweet_name: str = "sweet spot", baseline: Point | None = None) -> go.Figure:
    """`sweet` is drawn as a star named `sweet_name` (the wizard calls it "recommended"); `baseline` as a ring."""
    scored = [p for p in points if p.accuracy is not None]
    fig = go.Figure()
    fig.add_scatter(x=[p.latency_ms for p in scored], y=[p.accuracy * 100 for p in scored], mode="markers+text",
                    text=[p.label for p in scored], textposition="top center", name="variants",
                    marker=dict(size=10, color="#9ecae1"))
    fig.add_scatter(x=[p.latency_ms for p in front], y=[p.accuracy * 100 for p in front], mode="lines+markers",
                    name="Pareto frontier", line=dict(color="#F58518", dash="dot"), marker=dict(size=11, color="#F58518"))
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
    fig.update_layout(title=f"Memory and size (batch {batch_size} x {seq_len})", barmode="group", yaxis_title="MB", **LAYOUT)
    return fig


def speedups(baseline: Point, points: Sequence[Point], ratios: dict[int, dict[str, float]]) -> go.Figure:
    ordered = sorted(points, key=lambda p: -ratios[p.variant_id]["speedup"])
    fig = go.Figure(go.Bar(
        x=[p.label for p in ordered], y=[ratios[p.variant_id]["speedup"] for p in ordered], marker_color="#54A24B",
        error_y=dict(type="data", symmetric=False,
                     array=[ratios[p.variant_id]["high"] - ratios[p.variant_id]["speedup"] for p in ordered],
                     arrayminus=[ratios[p.variant_id]["speedup"] - ratios[p.variant_id]["low"] for p in ordered]),
    ))
    fig.add_hline(y=1.0, line_dash="dot", line_color="#888")
    fig.update_layout(title=f"Speedup over {baseline.label} (p50 ratio; whiskers from p90)", yaxis_title="x faster", **LAYOUT)
    return fig
