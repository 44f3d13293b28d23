"""The search's last step: its best trial and the baseline benchmarked once more in one job, interleaved at the
goal's cell, so the speed-up it reports is also a same-run ratio. The trials' speed-ups divide measurements taken
minutes apart (a machine that got busier or quieter in between moves every ratio); this one shares conditions.

It runs after the search stopped, even when the budget is spent: one benchmark of two variants at one cell, each
cell capped by the benchmark's max_seconds, so it overruns the budget by tens of seconds at most.
"""

from __future__ import annotations

from dataclasses import dataclass

from jobs.decisions.compare import Rules, cell_problems
from jobs.search.outcomes import cell_point
from jobs.search.record import SearchRecord
from storage import catalog, queue


@dataclass(frozen=True)
class Confirmation:
    trial: int
    state: str  # running, complete, failed
    job_id: int | None = None
    best_p50_ms: float | None = None
    baseline_p50_ms: float | None = None
    speedup: float | None = None  # the baseline's p50 over the best's, from the same job
    problems: tuple[str, ...] = ()  # busy, unstable, too few samples: then the ratio is shown, not stood behind
    reason: str | None = None  # why it failed

    @property
    def sound(self) -> bool:
        return self.state == "complete" and self.speedup is not None and not self.problems


def pipeline_name(search_job_id: int) -> str:
    return f"search-{search_job_id}-confirm"


def read_confirmation(record: SearchRecord, cell: tuple[int, int], rules: Rules) -> Confirmation | None:
    """The confirmation the search asked for, as far as it has got; None when it asked for none."""
    asked = record.confirmation
    if not asked:
        return None
    trial = int(asked["trial"])
    jobs = [j for j in queue.pipeline_jobs(asked["pipeline"]) if j.kind == "benchmark"]
    if not jobs or not jobs[-1].status.finished:
        return Confirmation(trial, "running", jobs[-1].id if jobs else None)
    job = jobs[-1]
    if job.status.value != "succeeded":
        return Confirmation(trial, "failed", job.id, reason=f"its benchmark job {job.status.value}: {job.message}")
    best_id, baseline_id = int(asked["variant_id"]), int(asked["baseline_variant_id"])
    cells = {m.variant_id: m for m in catalog.list_measurements(variant_ids=[best_id, baseline_id])
             if m.job_id == job.id and (m.batch_size, m.seq_len) == cell}
    if best_id not in cells or baseline_id not in cells:
        return Confirmation(trial, "failed", job.id, reason="its benchmark measured nothing at the goal's cell for "
                                                            "one of the two variants; see its log")
    best, baseline = cells[best_id], cells[baseline_id]
    problems = tuple([f"trial {trial}: {p}" for p in cell_problems(cell_point(best, best_id), rules)]
                     + [f"baseline: {p}" for p in cell_problems(cell_point(baseline, baseline_id), rules)])
    return Confirmation(trial, "complete", job.id, best.p50_ms, baseline.p50_ms, baseline.p50_ms / best.p50_ms,
                        problems)
