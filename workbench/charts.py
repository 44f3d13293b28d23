"""Plotly figures. Functions of plain data; no storage or ML imports."""

from __future__ import annotations

import plotly.graph_objects as go

SPLIT_COLORS = {"train": "#4C78A8", "validation": "#F58518", "test": "#54A24B"}


def label_distribution(per_split: dict[str, dict[str, int]], title: str = "Label distribution") -> go.Figure:
    labels = sorted({label for counts in per_split.values() for label in counts})
    fig = go.Figure()
    for split, counts in per_split.items():
        fig.add_bar(name=split, x=labels, y=[counts.get(label, 0) for label in labels], marker_color=SPLIT_COLORS.get(split))
    fig.update_layout(
        title=title, barmode="stack", xaxis_title="label", yaxis_title="examples", height=360,
        margin=dict(l=40, r=20, t=50, b=40), legend_title_text="split",
    )
    return fig
