"""What a search keeps in its job's result: when it started, its space, and each trial's point, recipe and pipeline.

This is the only state a search has besides the queue: the trials' jobs, variants, evaluations and measurements
are ordinary rows found by pipeline name. A restarted search job reads this record back (a re-queued job keeps
its partial result), rebuilds the Optuna study from it, re-attaches a trial whose pipeline is still running and
continues; nothing is kept in a second store that could disagree with the database.

A trial is recorded before its jobs are queued (and its pipeline name is fixed by the search and the trial number),
so a restart between the two finds a recorded trial without jobs and queues them, never a second copy.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

RESULT_KEY = "search"
STATES = ("running", "complete", "pruned", "failed")
CUT_BY_BUDGET = "budget spent before it finished"  # a pruned trial's reason when the budget stopped its jobs


def pipeline_name(search_job_id: int, trial: int | None) -> str:
    """`search-17-t3` for trial 3 of search job 17; `search-17-base` for its baseline."""
    return f"search-{search_job_id}-{'base' if trial is None else f't{trial}'}"


def reused_whole(reused: dict[str, int] | None, steps: list[dict[str, Any]]) -> bool:
    """Every step was an earlier trial's: the trial's pipeline only evaluates and benchmarks that trial's variant
    (or holds nothing when that trial's evaluation of it already rules it out)."""
    return bool(reused) and reused["steps"] == len(steps)


def made_by(reused: dict[str, Any]) -> str:
    """Who made a trial's reused steps: 'trial 2', or 'job 283, outside this search'."""
    return f"trial {reused['trial']}" if reused.get("trial") is not None else f"job {reused['job']}, outside this search"


@dataclass
class TrialRecord:
    number: int
    params: dict[str, str]  # the point in the space
    steps: list[dict[str, Any]]  # [{"kind", "params"}]: the recipe, re-runnable from the start variant
    pipeline: str
    started_s: float  # seconds after the search's first start
    state: str = "running"
    finished_s: float | None = None
    reason: str | None = None  # why it was pruned or failed
    # {"trial", "steps", "variant_id", "pipeline"}: its first `steps` steps (possibly all) were an earlier trial's (or
    # jobs' outside this search: "trial" None, "job" the last), whose variant it started from (its pipeline holds only
    # the steps after them); "pipeline": where that variant was made (absent in records of older versions)
    reused: dict[str, Any] | None = None

    @property
    def duration_s(self) -> float | None:
        return None if self.finished_s is None else self.finished_s - self.started_s

    @property
    def reused_whole(self) -> bool:
        return reused_whole(self.reused, self.steps)

    @property
    def start_variant_id(self) -> int | None:
        """The variant its pipeline starts from when that is not the search's baseline (see `reused`)."""
        return self.reused["variant_id"] if self.reused else None


@dataclass
class SearchRecord:
    started_at: float  # epoch seconds of the first start: the budget counts from here, across restarts
    goal: dict[str, Any]
    space: dict[str, list[str]]
    quick: bool
    seed: int
    start_variant_id: int  # what the search was given (fine-tuned in the baseline pipeline when it has no head)
    baseline_pipeline: str
    baseline_state: str = "running"
    baseline_started_s: float = 0.0
    baseline_finished_s: float | None = None
    baseline_reason: str | None = None
    trials: list[TrialRecord] = field(default_factory=list)
    stop_reason: str | None = None
    elapsed_s: float = 0.0  # as of the last save
    best: int | None = None
    front: list[int] = field(default_factory=list)
    restarts: int = 0
    # {"trial", "variant_id", "baseline_variant_id", "pipeline"}: the same-job check of the best against the baseline
    confirmation: dict[str, Any] | None = None

    def to_result(self) -> dict[str, Any]:
        return {RESULT_KEY: dataclasses.asdict(self)}

    @classmethod
    def from_result(cls, result: dict[str, Any] | None) -> SearchRecord | None:
        data = (result or {}).get(RESULT_KEY)
        if not isinstance(data, dict):
            return None
        data = dict(data)
        data["trials"] = [TrialRecord(**t) for t in data.get("trials", [])]
        return cls(**data)

    def trial(self, number: int) -> TrialRecord:
        return next(t for t in self.trials if t.number == number)
