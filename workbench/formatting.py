"""Text for people made from the core's data: percentages, the decision table, the A/B verdict.

The core returns numbers, flags and reasons; the tabs, the report and the CLI word them here, so one figure reads
the same wherever it is shown.
"""

from __future__ import annotations

from typing import Any

from jobs.api import cell_label
from workbench.ui import OK, WARNING, esc

SWEET_SPOT = "★"
NOT_EVALUATED = "not evaluated"


def percent(value: float | None, digits: int = 2, *, missing: str = "", sep: str = "") -> str:
    """A fraction as a percentage: '12.34%' (`sep=" "`: '12.34 %'); `missing` stands for None."""
    return missing if value is None else f"{value * 100:.{digits}f}{sep}%"


def playground_percent(value: float | None, digits: int = 1) -> str:
    """The playground's style: '12.3 %', and '—' when there is no figure."""
    return percent(value, digits, missing="—", sep=" ")


# ---- the decision at one cell (Compare tab, wizard, report) ----------------------------------------------------


def level_words(ratio: dict[str, Any]) -> str:
    """'' for a speed-up beyond the benchmark's resolution; else what it means (jobs.decisions.compare.speedup)."""
    if not ratio.get("level"):
        return ""
    return f"as fast, within the benchmark's {ratio['resolution']:.0%} resolution"


def speedup_words(ratio: dict[str, Any]) -> str:
    """'4.00x (3.95-4.05)', or '1.03x (1.01-1.06; as fast, within the benchmark's 5% resolution)'."""
    level = level_words(ratio)
    return f"{ratio['speedup']:.2f}x ({ratio['low']:.2f}-{ratio['high']:.2f}{'; ' + level if level else ''})"


def decision_table(decision, currency: str = "USD") -> list[dict[str, Any]]:
    """One row per variant at the decision's cell (a jobs.decisions.compare.Decision): speedup with its interval
    (or why there is none), accuracy with its interval and validity, cost, frontier and sweet spot."""
    front = {p.variant_id for p in decision.front}
    out = []
    for p in sorted(decision.points, key=lambda p: p.p50_ms):
        ratio = decision.ratios.get(p.variant_id)
        cost = decision.costs.get(p.variant_id)
        if ratio:
            speed = speedup_words(ratio)
        else:
            speed = f"not comparable: {decision.not_comparable.get(p.variant_id, 'no baseline')}"
        if p.accuracy is None:
            accuracy = NOT_EVALUATED
        elif p.accuracy_low is not None and p.accuracy_high is not None:
            accuracy = f"{p.accuracy:.1%} ({p.accuracy_low:.1%}-{p.accuracy_high:.1%})"
        else:
            accuracy = f"{p.accuracy:.1%}"
        out.append({
            "variant": p.label, "p50 ms": round(p.p50_ms, 2), "p95 ms": round(p.latency_ms, 2),
            "samples/s": round(p.throughput_sps, 1), "calls": p.samples, "stable": "yes" if p.stable else "no",
            "speedup (95% interval)": speed,
            "accuracy (95% interval)": accuracy,
            "validity": f"DEGENERATE: {p.degenerate_reason}" if p.degenerate else ("" if p.accuracy is not None else "?"),
            f"cost / 1M predictions ({currency})": f"{cost:.3f}" if cost is not None else "",
            "Pareto": "yes" if p.variant_id in front else "",
            "sweet spot": SWEET_SPOT if decision.sweet and p.variant_id == decision.sweet.variant_id else "",
        })
    return out


# ---- A/B --------------------------------------------------------------------------------------------------------


def agreement_line(side) -> str:
    """Markdown for two predictions of one text (a jobs.playground.ab.SideBySide): do they agree, on what."""
    if side.agree:
        return f"{OK} agree: both say **{esc(side.a.label)}**"
    return f"{WARNING} disagree: A says **{esc(side.a.label)}**, B says **{esc(side.b.label)}**"


def significance_sentence(verdict) -> str:
    """McNemar's verdict (a jobs.playground.ab.Verdict) in one sentence."""
    level = f"{verdict.alpha * 100:g} %"
    if verdict.significant:
        return (f"The difference is significant at the {level} level: {verdict.better.upper()} is more accurate on "
                "these examples, by more than chance would explain.")
    return f"The difference is not significant at the {level} level: chance alone could explain it on these examples."


# ---- the wizard's verdict ---------------------------------------------------------------------------------------


def wizard_summary(outcome) -> str:
    """A finished wizard run's verdict (a jobs.decisions.wizard.Outcome) in one line."""
    decision = outcome.decision
    if decision is None:
        if outcome.benchmark_job is not None:
            return "The benchmark stored no measurements; see its log."
        if outcome.final_id:
            return (f"No benchmark step in this run: variant #{outcome.final_id} is what it made; benchmark it against "
                    "its baseline to compare.")
        return "This run made no variant."
    if outcome.recommended_id is None:
        return (f"Could not decide at {cell_label(decision.batch_size, decision.seq_len)}: {outcome.undecided}. "
                "Re-measure (a full benchmark of the same variants) when the machine is quiet, or change the recipe.")
    return recommendation_sentence(decision, decision.sweet, outcome.goal, outcome.speedup_goal, outcome.misses_slo)


def recommendation_sentence(decision, rec, goal, speedup_goal: str | None, misses_slo: bool) -> str:
    """'Recommended: ...': the variant `rec` against the decision's baseline, and how it meets the goal."""
    base = decision.baseline
    cell = cell_label(decision.batch_size, decision.seq_len)
    if rec is None or base is None:
        return f"No variant at {cell} has an accuracy to compare: see the evaluations in the Variants tab."
    interval = decision.ratios[rec.variant_id]
    drop = (base.accuracy - rec.accuracy) * 100 if base.accuracy is not None and rec.accuracy is not None else None
    change = (f", {round(-drop, 1) + 0.0:+.1f} accuracy points ({rec.accuracy:.1%} vs {base.accuracy:.1%})"
              if drop is not None else "")  # + 0.0: no "-0.0"
    if rec.variant_id == base.variant_id:
        summary = (f"Recommended: keep the baseline {rec.label}: no variant within {goal.max_drop_points:g} accuracy "
                   f"points was faster at {cell} (p95 {rec.latency_ms:.2f} ms)")
    elif interval.get("level"):
        summary = (f"Recommended: {rec.label}, as fast as the baseline {base.label} as far as the benchmark can tell "
                   f"(p50 at {cell} {interval['speedup']:.2f}x, 95% interval {interval['low']:.2f}-"
                   f"{interval['high']:.2f} from {interval['n_baseline']} and {interval['n_candidate']} calls, within "
                   f"its {interval['resolution']:.0%} resolution){change}, p95 {rec.latency_ms:.2f} ms")
    else:
        summary = (f"Recommended: {rec.label}, {interval['speedup']:.1f}x faster than the baseline {base.label} (p50 at "
                   f"{cell}, 95% interval {interval['low']:.1f}-{interval['high']:.1f}x from {interval['n_baseline']} "
                   f"and {interval['n_candidate']} calls){change}, p95 {rec.latency_ms:.2f} ms")
    if goal.speedup:
        summary += {
            "short": f"; short of the {goal.speedup:g}x goal",
            "median only": f"; meets the {goal.speedup:g}x goal at the median, not across its whole interval",
            "met": f"; meets the {goal.speedup:g}x goal",
        }[speedup_goal]
    if goal.slo_ms:
        summary += (f"; no variant within the tolerance meets the {goal.slo_ms:g} ms p95 SLO, this is the fastest"
                    if misses_slo else f"; within the {goal.slo_ms:g} ms p95 SLO")
    if decision.tie and rec is decision.sweet:
        summary += f". {decision.tie}"  # it starts with a label
    return summary + "."
