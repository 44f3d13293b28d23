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


def training_curve(history: list[dict], title: str = "Training curve") -> go.Figure:
    """Validation accuracy and macro-F1 per epoch (left axis), training loss on a second axis (right)."""
    epochs = [h.get("epoch") for h in history]
    fig = go.Figure()
    fig.add_scatter(x=epochs, y=[h.get("val_accuracy") for h in history], name="validation accuracy",
                    mode="lines+markers", line=dict(color="#4C78A8"))
    fig.add_scatter(x=epochs, y=[h.get("val_macro_f1") for h in history], name="validation macro-F1",
                    mode="lines+markers", line=dict(color="#54A24B"))
    fig.add_scatter(x=epochs, y=[h.get("train_loss") for h in history], name="training loss", yaxis="y2",
                    mode="lines+markers", line=dict(color="#E45756", dash="dot"))
    fig.update_layout(
        title=title, height=360, margin=dict(l=50, r=60, t=50, b=40),
        xaxis=dict(title="epoch", tickmode="linear", dtick=1),
        yaxis=dict(title="validation score", range=[0, 1.02], tickformat=".0%"),
        yaxis2=dict(title="training loss", overlaying="y", side="right", rangemode="tozero", showgrid=False),
        legend=dict(orientation="h", y=-0.2),
    )
    return fig


def confusion_matrix(confusion: dict, title: str = "Confusion matrix") -> go.Figure:
    """Counts per (true label, predicted label), true labels top to bottom."""
    labels = [str(label) for label in confusion.get("labels", [])]
    matrix = confusion.get("matrix", [])
    fig = go.Figure(go.Heatmap(
        z=matrix, x=labels, y=labels, colorscale="Blues", texttemplate="%{z}", showscale=False,
        hovertemplate="true %{y}, predicted %{x}: %{z}<extra></extra>",
    ))
    fig.update_layout(
        title=title, height=360, margin=dict(l=80, r=20, t=50, b=60),
        xaxis=dict(title="predicted", side="bottom"), yaxis=dict(title="true", autorange="reversed"),
    )
    return fig
