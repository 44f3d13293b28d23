"""A search as people follow it: its goal, budget, why it stopped, and one row per trial with its recipe, accuracy,
latency, speed-up over the baseline measured in the same search, and why it cannot be picked; the Pareto front of
the trials that can be, and the best one.

Eligibility follows jobs.decisions.compare: a degenerate variant, or a cell that is unstable, has too few samples
or was measured on a busy machine (`cell_problems`), is never the best nor on the front. Speed-ups are p50 ratios
against the baseline the same search benchmarked on the same fingerprint (machine and libraries); a trial measured
on another fingerprint is flagged, not compared.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

from jobs.decisions.compare import Point, Rules, cell_problems, pareto_front, sweet_spot
from jobs.search.confirm import Confirmation, read_confirmation
from jobs.search.outcomes import Outcome, cell_point, read
from jobs.search.record import SearchRecord, TrialRecord, reused_whole
from jobs.search.space import size
from storage import queue
from storage.errors import InvalidInput

DROP_EPSILON = 1e-9


@dataclass(frozen=True)
class TrialRow:
    number: int  # 0: the baseline
    state: str  # running, complete, pruned, failed
    params: dict[str, Any]
    steps: list[dict[str, Any]]
    variant_id: int | None
    accuracy: float | None
    drop_points: float | None  # accuracy points lost against the baseline (negative: gained)
    p50_ms: float | None
    throughput_sps: float | None
    speedup: float | None
    problems: list[str]
    pipeline: str | None
    job_ids: list[int]
    reason: str | None = None
    p95_ms: float | None = None
    started_s: float | None = None
    finished_s: float | None = None
    fingerprint: str | None = None
    noise: tuple[str, ...] = ()  # the problems a new measurement may clear: busy, unstable, too few samples
    reused: dict[str, Any] | None = None  # steps made by an earlier trial or outside the search (TrialRecord.reused)

    @property
    def reused_whole(self) -> bool:
        return reused_whole(self.reused, self.steps)

    @property
    def only_noisy(self) -> bool:
        """Sound but for how its cell was measured: another benchmark may make it eligible."""
        return bool(self.noise) and len(self.noise) == len(self.problems)

    @property
    def eligible(self) -> bool:
        """Measured, sound, and not degenerate: may be on the front (and the best, within the drop)."""
        return self.state == "complete" and not self.problems and self.p50_ms is not None and self.accuracy is not None


@dataclass(frozen=True)
class SearchStatus:
    job_id: int
    state: str  # the search job's status
    goal: dict[str, Any]
    elapsed_s: float
    budget_s: float
    stop_reason: str | None
    trials: list[TrialRow]
    front: list[int]
    best: TrialRow | None
    baseline: TrialRow | None
    message: str = ""
    space: dict[str, list[str]] = field(default_factory=dict)
    space_size: int = 0
    start_variant_id: int | None = None
    restarts: int = 0
    # the run-off: the best, its runners-up and the baseline benchmarked in one job once the search stopped
    # (jobs/search/confirm.py); `best` is its winner once it is complete
    confirmation: Confirmation | None = None


def _point(row: TrialRow) -> Point:
    return Point(row.number, f"trial {row.number}", row.p50_ms or 0.0, row.accuracy)


def _row(number: int, state: str, params: dict, steps: list, outcome: Outcome, baseline: TrialRow | None,
         rules: Rules, record: TrialRecord | None = None, reason: str | None = None) -> TrialRow:
    ev, m = outcome.evaluation, outcome.measurement
    problems = []
    if ev is not None and ev.degenerate:
        problems.append(f"degenerate: {ev.degenerate_reason}")
    speedup, noise = None, ()
    if m is not None:
        noise = tuple(cell_problems(cell_point(m, outcome.variant_id or 0, ev.accuracy if ev else None), rules))
        problems += noise
        if baseline is not None and baseline.fingerprint and baseline.fingerprint != m.fingerprint_hash:
            problems.append("measured on another machine or library set than the baseline (fingerprints differ)")
        elif baseline is not None and baseline.p50_ms and number != 0:
            speedup = baseline.p50_ms / m.p50_ms
    accuracy = ev.accuracy if ev is not None else None
    drop = None
    if accuracy is not None and baseline is not None and baseline.accuracy is not None:
        drop = (baseline.accuracy - accuracy) * 100
    return TrialRow(
        number=number, state=state, params=dict(params), steps=list(steps), variant_id=outcome.variant_id,
        accuracy=accuracy, drop_points=drop, p50_ms=m.p50_ms if m else None,
        throughput_sps=m.throughput_sps if m else None, speedup=speedup, problems=problems,
        pipeline=record.pipeline if record else None, job_ids=outcome.job_ids,
        reason=reason if reason is not None else (record.reason if record else None),
        p95_ms=m.p95_ms if m else None, started_s=record.started_s if record else None,
        finished_s=record.finished_s if record else None, fingerprint=m.fingerprint_hash if m else None,
        noise=noise, reused=record.reused if record else None)


def baseline_row(record: SearchRecord, cell: tuple[int, int], rules: Rules) -> TrialRow:
    outcome = read(record.baseline_pipeline, record.start_variant_id, cell)
    row = _row(0, record.baseline_state, {}, [], outcome, None, rules, reason=record.baseline_reason)
    return replace(row, pipeline=record.baseline_pipeline, started_s=record.baseline_started_s,
                   finished_s=record.baseline_finished_s)


def goal_cell(goal: dict[str, Any]) -> tuple[int, int]:
    """The (batch size, seq len) cell a search's goal names; seq len 0 for real traffic."""
    return int(goal["batch_size"]), 0 if goal.get("traffic") == "real" else int(goal.get("seq_len", 128))


def trial_rows(record: SearchRecord, rules: Rules | None = None) -> tuple[TrialRow, list[TrialRow]]:
    """The baseline's row and every trial's, read from their pipelines now."""
    rules = rules or Rules.from_settings()
    cell = goal_cell(record.goal)
    baseline = baseline_row(record, cell, rules)
    return baseline, [_trial_row(t, cell, baseline, rules) for t in record.trials]


def trial_row(record: SearchRecord, number: int, rules: Rules | None = None) -> TrialRow:
    """One trial's row, read from its pipeline (and the baseline's) now, without reading every other trial's."""
    rules = rules or Rules.from_settings()
    cell = goal_cell(record.goal)
    return _trial_row(record.trial(number), cell, baseline_row(record, cell, rules), rules)


def _trial_row(t: TrialRecord, cell: tuple[int, int], baseline: TrialRow, rules: Rules) -> TrialRow:
    return _row(t.number, t.state, t.params, t.steps, read(t.pipeline, t.start_variant_id, cell), baseline, rules, t)


def front(rows: list[TrialRow]) -> list[int]:
    """Trial numbers on the Pareto front of the eligible trials (lower p50, higher accuracy), fastest first."""
    return [p.variant_id for p in pareto_front([_point(r) for r in rows if r.eligible])]


def within_drop(rows: list[TrialRow], max_drop_points: float) -> list[TrialRow]:
    """The eligible rows that lose at most `max_drop_points` against the baseline."""
    return [r for r in rows if r.eligible and r.drop_points is not None
            and r.drop_points <= max_drop_points + DROP_EPSILON]


def best(rows: list[TrialRow], baseline: TrialRow, max_drop_points: float) -> TrialRow | None:
    """The fastest eligible trial within the drop; None while the baseline itself is not sound and evaluated."""
    if baseline.accuracy is None or baseline.problems or baseline.p50_ms is None:
        return None
    eligible = [r for r in rows if r.eligible]
    chosen = sweet_spot([_point(r) for r in eligible], baseline.accuracy, max_drop_points, None)
    return next((r for r in eligible if chosen is not None and r.number == chosen.variant_id), None)


def after_runoff(chosen: TrialRow | None, rows: list[TrialRow], confirmation: Confirmation | None) -> TrialRow | None:
    """The search's pick, or the runner-up its run-off found faster beyond doubt (jobs/search/confirm.py)."""
    if chosen is None or confirmation is None or confirmation.state != "complete" or confirmation.trial != chosen.number:
        return chosen
    return next((r for r in rows if r.number == confirmation.picked and r.eligible), chosen)


def status(search_job_id: int) -> SearchStatus:
    """Where search job `search_job_id` is: trials, front and best, read from the database now."""
    job = queue.get_job(search_job_id)
    if job.kind != "search":
        raise InvalidInput(f"job {job.id} is a {job.kind} job, not a search")
    record = SearchRecord.from_result(job.result)
    goal = dict(job.params)
    budget = float(goal.get("budget_s", 0))
    goal_view = {k: goal[k] for k in ("max_drop_points", "batch_size", "seq_len", "traffic", "device", "budget_s",
                                      "speedup") if k in goal}
    if goal_view.get("traffic") == "real":
        goal_view.pop("seq_len", None)
    goal_view["speedup"] = goal_view.get("speedup") or None  # 0: no speed-up target
    if record is None:  # queued, or started but not yet saved
        return SearchStatus(job.id, job.status.value, goal_view, 0.0, budget, None, [], [], None, None, job.message)
    baseline, rows = trial_rows(record)
    elapsed = record.elapsed_s if job.status.finished else max(record.elapsed_s, time.time() - record.started_at)
    if job.status.value == "queued":
        elapsed = record.elapsed_s
    stop = record.stop_reason or ("cancelled" if job.status.value == "cancelled" else None)

    confirmation = read_confirmation(record, goal_cell(record.goal), Rules.from_settings(),
                                     {r.number: r.drop_points for r in rows})
    chosen = after_runoff(best(rows, baseline, float(goal.get("max_drop_points", 0))), rows, confirmation)
    return SearchStatus(
        job.id, job.status.value, goal_view, round(elapsed, 1), budget, stop, rows, front(rows), chosen, baseline,
        job.message, {k: list(v) for k, v in record.space.items()}, size({k: tuple(v) for k, v in record.space.items()}),
        record.start_variant_id, record.restarts, confirmation)
