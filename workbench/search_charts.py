"""The search's live chart: every measured trial at the goal's cell, x = p50 latency, y = accuracy (or points lost).

Trials that can be the answer are blue; pruned, failed, flagged and over-the-tolerance ones are grey, their reason on
hover; the Pareto front is the status's own front (the core computes it), drawn as a line in latency order; the
best so far is a star and the baseline a ring. A function of a `SearchStatus`, nothing else.
"""

from __future__ import annotations

from typing import Any, Literal

import plotly.graph_objects as go

from workbench.compare_charts import LAYOUT
from workbench.search_words import out_reason, trial_recipe

ELIGIBLE_COLOR, OUT_COLOR, FRONT_COLOR, BEST_COLOR = "#4C78A8", "#BBBBBB", "#F58518", "#54A24B"
Axis = Literal["accuracy", "drop"]


def _placed(trial: Any) -> bool:
    """A trial has a place on the chart once both its latency and its accuracy are measured."""
    return trial.p50_ms is not None and trial.accuracy is not None


def _y(trial: Any, axis: Axis) -> float | None:
    if axis == "drop":
        return trial.drop_points
    return trial.accuracy * 100 if trial.accuracy is not None else None


def _hover(trial: Any, reason: str | None = None) -> str:
    facts = [f"trial {trial.number}: {trial_recipe(trial)}"]
    if trial.speedup is not None:
        facts.append(f"{trial.speedup:.2f}x the baseline")
    if trial.drop_points is not None:
        facts.append(f"{trial.drop_points:+.2f} points lost")
    if reason:
        facts.append(f"out: {reason}")
    return "<br>".join(facts)


def trials_chart(status: Any, axis: Axis = "accuracy") -> go.Figure:
    """The chart of a search's trials (see the module docstring). Each trace's `customdata` holds trial numbers."""
    trials = {t.number: t for t in status.trials}
    placed = sorted((t for t in status.trials if _placed(t) and _y(t, axis) is not None), key=lambda t: t.p50_ms)
    reasons = {t.number: out_reason(t, status) for t in placed}
    fig = go.Figure()
    groups = (("trials within the goal", ELIGIBLE_COLOR, [t for t in placed if not reasons[t.number]]),
              ("out (pruned, failed, flagged or too inaccurate)", OUT_COLOR, [t for t in placed if reasons[t.number]]))
    for name, color, chosen in groups:
        if chosen:
            fig.add_scatter(x=[t.p50_ms for t in chosen], y=[_y(t, axis) for t in chosen], mode="markers", name=name,
                            customdata=[t.number for t in chosen], marker=dict(size=10, color=color),
                            hovertext=[_hover(t, reasons[t.number]) for t in chosen],
                            hovertemplate="%{hovertext}<br>p50 %{x:.2f} ms<extra></extra>")
    front = sorted((trials[n] for n in status.front if n in trials and _placed(trials[n])), key=lambda t: t.p50_ms)
    if front:
        fig.add_scatter(x=[t.p50_ms for t in front], y=[_y(t, axis) for t in front], mode="lines+markers",
                        name="Pareto front", customdata=[t.number for t in front],
                        line=dict(color=FRONT_COLOR, dash="dot"), marker=dict(size=11, color=FRONT_COLOR),
                        hovertext=[_hover(t) for t in front],
                        hovertemplate="%{hovertext} (Pareto)<br>p50 %{x:.2f} ms<extra></extra>")
    baseline = status.baseline
    if baseline is not None and _placed(baseline) and _y(baseline, axis) is not None:
        fig.add_scatter(x=[baseline.p50_ms], y=[_y(baseline, axis)], mode="markers", customdata=[baseline.number],
                        name=f"baseline: trial {baseline.number}", hovertext=[_hover(baseline)],
                        hovertemplate="%{hovertext}<br>p50 %{x:.2f} ms<extra></extra>",
                        marker=dict(size=18, symbol="circle-open", color="#555", line=dict(width=2)))
        limit = (status.goal or {}).get("max_drop_points")
        if limit is not None:  # the line a trial must stay on the right side of
            floor = baseline.accuracy * 100 - float(limit) if axis == "accuracy" else float(limit)
            fig.add_hline(y=floor, line_dash="dash", line_color="#E45756",
                          annotation_text=f"{float(limit):g} points below the baseline",
                          annotation_position="bottom right")
    best = status.best
    if best is not None and _placed(best) and _y(best, axis) is not None:
        fig.add_scatter(x=[best.p50_ms], y=[_y(best, axis)], mode="markers", name=f"best so far: trial {best.number}",
                        customdata=[best.number], hovertext=[_hover(best)],
                        hovertemplate="%{hovertext}<br>p50 %{x:.2f} ms<extra></extra>",
                        marker=dict(size=20, symbol="star", color=BEST_COLOR))
    target = (status.goal or {})
    where = _cell(target)
    fig.update_layout(title=f"Trials: accuracy vs p50 latency{where}", xaxis_title="p50 latency (ms)",
                      yaxis_title="accuracy (%)" if axis == "accuracy" else "accuracy points lost",
                      **({"yaxis_autorange": "reversed"} if axis == "drop" else {}), **LAYOUT)
    return fig


def _cell(goal: dict[str, Any]) -> str:
    if not goal:
        return ""
    if goal.get("traffic") == "real":
        return f" (batch {goal.get('batch_size', 1)} on real traffic)"
    return f" (batch {goal.get('batch_size', 1)} x {goal.get('seq_len', 128)} tokens)"
