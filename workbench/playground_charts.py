"""Plotly figures of the Predictor and A/B tabs: functions of plain values (probabilities, accuracies, arm stats)."""

from __future__ import annotations

from typing import Mapping, Sequence

import plotly.graph_objects as go

COLOR = "#4C78A8"
HIGHLIGHT = "#F58518"
SUBDUED = "#BAB0AC"
ARM_COLORS = {"A": "#4C78A8", "B": "#F58518"}
MARGIN = dict(l=60, r=20, t=45, b=40)


def _percent_axis(**extra) -> dict:
    return dict(tickformat=".0%", range=[0, 1.05], **extra)


def probabilities(probs: Mapping[str, float], predicted: str | None = None, title: str = "Label probabilities") -> go.Figure:
    """One horizontal bar per label, the predicted one highlighted, its percentage written on it."""
    labels = list(probs)[::-1]  # the model's first label on top
    values = [probs[label] for label in labels]
    fig = go.Figure(go.Bar(
        x=values, y=labels, orientation="h", text=[f"{v:.1%}" for v in values], textposition="auto",
        marker_color=[HIGHLIGHT if label == predicted else COLOR for label in labels],
        hovertemplate="%{y}: %{x:.2%}<extra></extra>",
    ))
    fig.update_layout(title=title, height=max(220, 60 + 40 * len(labels)), margin=MARGIN,
                      xaxis=_percent_axis(title="probability"), showlegend=False)
    return fig


def side_by_side(probs_a: Mapping[str, float], probs_b: Mapping[str, float], name_a: str = "A", name_b: str = "B",
                 title: str = "Probabilities per label") -> go.Figure:
    """Both variants' probabilities, grouped by label (labels of A first, then any only B knows)."""
    labels = list(probs_a) + [label for label in probs_b if label not in probs_a]
    fig = go.Figure()
    for name, probs, arm in ((name_a, probs_a, "A"), (name_b, probs_b, "B")):
        values = [probs.get(label, 0.0) for label in labels]
        fig.add_bar(x=labels, y=values, name=name, marker_color=ARM_COLORS[arm], text=[f"{v:.0%}" for v in values],
                    textposition="outside", hovertemplate=f"{name}<br>%{{x}}: %{{y:.2%}}<extra></extra>")
    fig.update_layout(title=title, barmode="group", height=300, margin=MARGIN, yaxis=_percent_axis(title="probability"),
                      legend=dict(orientation="h", y=-0.2))
    return fig


def accuracies(accuracy_a: float, accuracy_b: float, agreement: float, name_a: str = "A", name_b: str = "B",
               title: str = "Accuracy on the same examples") -> go.Figure:
    names = [name_a, name_b, "agreement"]
    values = [accuracy_a, accuracy_b, agreement]
    fig = go.Figure(go.Bar(x=names, y=values, marker_color=[ARM_COLORS["A"], ARM_COLORS["B"], SUBDUED],
                           text=[f"{v:.1%}" for v in values], textposition="outside",
                           hovertemplate="%{x}: %{y:.2%}<extra></extra>"))
    fig.update_layout(title=title, height=280, margin=MARGIN, yaxis=_percent_axis(title="share of examples"), showlegend=False)
    return fig


def arms(stats: Sequence, title: str = "Accuracy per arm, from feedback (Wilson 95 % CI)") -> go.Figure:
    """One bar per arm: accuracy from feedback with asymmetric error bars, annotated with the counts behind it.

    `stats` are objects with arm, variant_id, requests, with_feedback, accuracy, ci_low and ci_high (ArmStats).
    """
    names = [f"{s.arm} (#{s.variant_id})<br>" + (f"{s.accuracy:.1%}" if s.accuracy is not None else "no feedback yet")
             for s in stats]
    values = [s.accuracy or 0.0 for s in stats]
    plus = [(s.ci_high - s.accuracy) if s.accuracy is not None else 0.0 for s in stats]
    minus = [(s.accuracy - s.ci_low) if s.accuracy is not None else 0.0 for s in stats]
    fig = go.Figure(go.Bar(
        x=names, y=values, marker_color=[ARM_COLORS.get(s.arm, COLOR) for s in stats],
        error_y=dict(type="data", symmetric=False, array=plus, arrayminus=minus, color="#333", thickness=1.5),
        customdata=[[s.ci_low or 0.0, s.ci_high or 0.0] for s in stats],
        hovertemplate="%{x}<br>95 % CI %{customdata[0]:.1%} – %{customdata[1]:.1%}<extra></extra>",
    ))
    for name, s in zip(names, stats, strict=True):
        fig.add_annotation(x=name, y=1.04, text=f"n = {s.with_feedback} with feedback ({s.requests} requests)",
                           showarrow=False, yanchor="bottom", font=dict(size=11))
    fig.update_layout(title=title, height=320, margin=dict(MARGIN, t=60, b=55), showlegend=False,
                      yaxis=dict(tickformat=".0%", range=[0, 1.14], tickvals=[0, 0.25, 0.5, 0.75, 1], title="accuracy"))
    return fig
