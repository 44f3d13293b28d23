"""Plotly figure of load tests: client-side latency (p50 and p95) against throughput, one point per concurrency,
one pair of lines per load test; levels measured while the machine was busy are drawn hollow and say so."""

from __future__ import annotations

from typing import Any, Sequence

import plotly.graph_objects as go

COLORS = ("#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#B279A2", "#9D755D", "#BAB0AC")
MARGIN = dict(l=60, r=20, t=60, b=60)


def latency_vs_throughput(series: Sequence[tuple[str, Sequence[dict[str, Any]]]],
                          title: str = "Latency against throughput, one point per concurrency",
                          slo_p95_ms: float = 0.0) -> go.Figure:
    """`series`: (label, levels) with the levels' `requests_per_s`, `p50_ms`, `p95_ms`, `concurrency`, `busy`."""
    fig = go.Figure()
    for index, (label, levels) in enumerate(series):
        color = COLORS[index % len(COLORS)]
        answered = sorted((lv for lv in levels if lv.get("p50_ms") is not None), key=lambda lv: lv["concurrency"])
        if not answered:
            continue
        x = [lv["requests_per_s"] for lv in answered]
        text = [f"c={lv['concurrency']}" for lv in answered]
        notes = [f"concurrency {lv['concurrency']}: {lv['ok']}/{lv['sent']} OK"
                 + (f", errors {', '.join(f'{k} {v}' for k, v in sorted(lv['errors'].items()))}" if lv["errors"] else "")
                 + (" · the machine was busy" if lv.get("busy") else "") for lv in answered]
        for stat, dash, symbol in (("p50_ms", "solid", "circle"), ("p95_ms", "dash", "diamond")):
            fig.add_scatter(
                x=x, y=[lv[stat] for lv in answered], mode="lines+markers+text", text=text, textposition="top center",
                name=f"{label} · {stat[:3]}", line=dict(color=color, dash=dash),
                marker=dict(size=9, symbol=[symbol + ("-open" if lv.get("busy") else "") for lv in answered]),
                customdata=notes, cliponaxis=False,
                hovertemplate=f"{stat[:3]} %{{y:.1f}} ms at %{{x:.1f}} requests/s<br>%{{customdata}}<extra>{label}</extra>")
    if slo_p95_ms > 0:
        fig.add_hline(y=slo_p95_ms, line=dict(color="#E45756", dash="dot"), annotation_text=f"p95 SLO {slo_p95_ms:g} ms")
    fig.update_xaxes(title_text="throughput (requests/s answered OK)", rangemode="tozero")
    fig.update_yaxes(title_text="latency seen by the client (ms)", rangemode="tozero")
    fig.update_layout(title=title, height=380, margin=MARGIN, legend=dict(orientation="h", y=-0.2))
    return fig
