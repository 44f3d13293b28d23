"""Plotly figure of the Deploy tab: a running server's latency and batch-size distributions and its errors, from
plain (label, count) pairs (the core reads and parses the server's metrics)."""

from __future__ import annotations

from typing import Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

COLOR = "#4C78A8"
BATCH_COLOR = "#54A24B"
ERROR_COLOR = "#E45756"
MARGIN = dict(l=50, r=20, t=60, b=60)

Counts = Sequence[tuple[str, float]]


def live_metrics(latency: Counts, batch_sizes: Counts, errors: Counts, title: str = "Since the server started"
                 ) -> go.Figure:
    """Three panels side by side: predict requests per latency bucket, batches per size, errors per reason."""
    fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.08,
                        subplot_titles=("Latency of predict requests", "Texts per batch the model ran",
                                        "Requests refused or failed"))
    latency = _without_empty_tail(latency)  # the slow buckets are mostly empty: the bars get the room
    panels = ((latency, COLOR, "requests", "latency (ms)", "none yet"),
              (batch_sizes, BATCH_COLOR, "batches", "texts in a batch", "none yet"),
              (errors, ERROR_COLOR, "requests", "reason", "no errors"))
    for column, (pairs, color, unit, axis, empty) in enumerate(panels, start=1):
        labels = [label for label, _ in pairs] or [empty]
        values = [count for _, count in pairs] or [0]
        fig.add_bar(x=labels, y=values, marker_color=color, row=1, col=column, showlegend=False,
                    text=[f"{v:g}" if v else "" for v in values], textposition="outside", cliponaxis=False,
                    hovertemplate=f"%{{x}}: %{{y:g}} {unit}<extra></extra>")
        fig.update_xaxes(title_text=axis, type="category", row=1, col=column)
        fig.update_yaxes(title_text=unit, rangemode="tozero", row=1, col=column)
    fig.update_layout(title=title, height=330, margin=MARGIN, bargap=0.15)
    return fig


def _without_empty_tail(pairs: Counts) -> list[tuple[str, float]]:
    """The buckets up to the last one holding anything, and one more (so the top of the range shows)."""
    pairs = list(pairs)
    last = max((i for i, (_, count) in enumerate(pairs) if count), default=-1)
    return pairs[: last + 2] if last >= 0 else pairs
