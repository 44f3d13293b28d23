"""Plotly figure of the Drift view: live vs reference shares per bin of length and confidence (the bins the PSI was
computed over), and the label mix, from a `jobs.serving.drift.DriftReport` (the core computes every number)."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

REFERENCE_COLOR = "#9D9DA0"
LIVE_COLOR = "#4C78A8"
ALARM_COLOR = "#E45756"
MARGIN = dict(l=50, r=20, t=70, b=80)


def drift_figure(report) -> go.Figure:
    """Three panels: share of texts per token-length bin, per confidence bin, per predicted label."""
    levels = report.levels
    titles = (f"Length (tokens) · PSI {report.length.value:.3f}",
              f"Confidence · PSI {report.confidence.value:.3f}",
              f"Label mix · chi-square p {report.labels.p_value:.2g}")
    fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.07, subplot_titles=titles)
    labels = report.labels
    ref_total, live_total = max(sum(labels.reference_counts), 1), max(sum(labels.live_counts), 1)
    panels = (
        ("length", report.length.bins, report.length.reference_shares, report.length.live_shares),
        ("confidence", report.confidence.bins, report.confidence.reference_shares, report.confidence.live_shares),
        ("labels", labels.labels, [c / ref_total for c in labels.reference_counts],
         [c / live_total for c in labels.live_counts]),
    )
    for column, (name, bins, reference, live) in enumerate(panels, start=1):
        live_color = ALARM_COLOR if levels.get(name) == "alarm" else LIVE_COLOR
        fig.add_bar(x=bins, y=reference, name="reference (test split)", marker_color=REFERENCE_COLOR,
                    legendgroup="reference", showlegend=column == 1, row=1, col=column,
                    hovertemplate="%{x}: %{y:.1%} of the reference<extra></extra>")
        fig.add_bar(x=bins, y=live, name="live window", marker_color=live_color, legendgroup="live",
                    showlegend=column == 1, row=1, col=column,
                    hovertemplate="%{x}: %{y:.1%} of the live window<extra></extra>")
        fig.update_xaxes(type="category", row=1, col=column)
        fig.update_yaxes(tickformat=".0%", rangemode="tozero", row=1, col=column)
    fig.update_layout(barmode="group", height=360, margin=MARGIN, bargap=0.2,
                      title=f"Deployment {report.deployment_id}: live window ({report.live_count} samples) vs "
                            f"{report.dataset_name} test split ({report.reference_count} examples)",
                      legend=dict(orientation="h", y=-0.25))
    return fig
