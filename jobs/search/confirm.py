"""The search's last step, a run-off: its best trial, the next fastest trials within the drop and the baseline
benchmarked once more in one job, interleaved at the goal's cell. The trials' speed-ups divide measurements taken
minutes apart (a machine that got busier or quieter in between moves every ratio); these share conditions.

The search's pick stays the pick unless a runner-up is faster in this job beyond doubt (the bootstrap 95 % interval of
the pick's p50 over the runner-up's, `jobs.decisions.compare.speedup_interval`, lies wholly above 1 plus the
benchmark's resolution), or is as fast and loses fewer points (`runoff_winner`). On the 2-core
AMD EPYC here a 60-minute search picked a half-depth student in PyTorch fp32 at 3.48x that measured 1.88x in the
same job as the baseline, while the full model in ONNX Runtime int8 (2.72x in the search) was never measured beside
it; the same-run timing afterwards put the two level. Measuring only the pick again can say the pick was flattered;
measuring the runners-up with it can also say which one is faster.

It runs after the search stopped, even when the budget is spent: one benchmark of a few variants at one cell, each
cell capped by the benchmark's max_seconds, so it overruns the budget by a minute or two. When the winner's or the
baseline's cell is unsound only by how it was measured (a busy machine, an unstable cell, too few samples), the search
runs it again, as it measures a trial again, at most REMEASURES more times; the newest job is the one read. On the
EPYC here the first run-off of a 60-minute search put the winner at 5.24x while the baseline's cell was unstable
(window medians 6 % apart, p95 67 ms against a p50 of 47): a figure the search rightly did not stand behind, and one
measured again has a chance to be sound.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jobs.decisions.compare import (
    DEFAULT_RESOLUTION,
    Rules,
    cell_problems,
    faster_beyond_resolution,
    resolution_of,
    speedup_interval,
)
from jobs.search.outcomes import cell_point
from jobs.search.record import SearchRecord
from storage import catalog, queue

RUNOFF_SIZE = 3  # the pick and up to two runners-up: a minute or two of benchmark after the budget
NOT_MEASURED = "not measured at the goal's cell"  # a failure of the cell, not noise: measuring again will not mend it


@dataclass(frozen=True)
class Entrant:
    """One trial's variant as the run-off measured it."""

    trial: int
    variant_id: int
    p50_ms: float | None = None
    speedup: float | None = None  # the baseline's p50 over its own, same job
    problems: tuple[str, ...] = ()
    drop_points: float | None = None  # accuracy points it loses against the baseline, as the search evaluated it


@dataclass(frozen=True)
class Confirmation:
    trial: int  # the search's pick
    state: str  # running, complete, failed
    job_id: int | None = None
    best_p50_ms: float | None = None  # of the winner
    baseline_p50_ms: float | None = None
    speedup: float | None = None  # the baseline's p50 over the winner's, from the same job
    problems: tuple[str, ...] = ()  # busy, unstable, too few samples: then the ratio is shown, not stood behind
    reason: str | None = None  # why it failed
    winner: int | None = None  # the run-off's pick: the search's unless a runner-up was faster beyond doubt
    entrants: tuple[Entrant, ...] = ()
    why: str = ""  # how the winner beat the search's pick, in words
    baseline_problems: tuple[str, ...] = ()
    runs: int = 1  # run-off jobs so far: more than one when an earlier one had a cell unsound by noise

    @property
    def sound(self) -> bool:
        return self.state == "complete" and self.speedup is not None and not self.problems

    @property
    def noise(self) -> tuple[str, ...]:
        """What makes any cell of this run-off unsound only by how it was measured, by entrant and baseline, for a
        report to print beside its ratios (the search measures again only for `problems`, the winner's and the
        baseline's: a runner-up's noise is not worth a job that could leave those unsound where they were sound)."""
        if self.state != "complete":
            return ()
        return tuple([f"trial {e.trial}: {p}" for e in self.entrants for p in e.problems if p != NOT_MEASURED]
                     + [f"baseline: {p}" for p in self.baseline_problems])

    @property
    def which_job(self) -> str:
        """' in run-off job 2 (the earlier had cells unsound by noise)' once it was measured again, else ''."""
        return f" in run-off job {self.runs} (the earlier had cells unsound by noise)" if self.runs > 1 else ""

    @property
    def picked(self) -> int:
        return self.winner if self.winner is not None else self.trial


def pipeline_name(search_job_id: int) -> str:
    return f"search-{search_job_id}-confirm"


def candidates(best: Any, within: Sequence[Any]) -> list[tuple[int, int]]:
    """(trial, variant) of the search's pick, then of the fastest other trials of `within` (eligible rows within the
    drop) by their p50 in the search, one per variant, RUNOFF_SIZE in all."""
    picked = [(best.number, best.variant_id)]
    for row in sorted(within, key=lambda r: r.p50_ms):
        if len(picked) >= RUNOFF_SIZE:
            break
        if row.variant_id is not None and row.variant_id not in {v for _, v in picked}:
            picked.append((row.number, row.variant_id))
    return picked


def runoff_winner(pick: Entrant, others: Sequence[Entrant], samples_ms: Mapping[int, Sequence[float]],
                  resolution: float = DEFAULT_RESOLUTION) -> tuple[Entrant, str]:
    """The run-off's winner, with how it beat the search's pick, or the pick and "". `samples_ms`: each entrant's
    latencies in the run-off's job, by trial; `resolution`: the benchmark's own (its `rel_spread`).

    One variant is faster than another beyond doubt when the bootstrap 95 % interval of the ratio of their p50s lies
    wholly above 1 + `resolution` (`jobs.decisions.compare.beyond_resolution`, which says why the interval alone is
    not enough).

    The fastest is the runner-up faster than the pick beyond doubt (the largest ratio), else the pick. Then a tie
    goes to accuracy: an entrant the fastest is not faster than beyond doubt, that loses fewer points, wins (the
    fewest), as Compare's sweet spot breaks ties. A cell with problems (busy, unstable, too few samples) neither
    wins nor is beaten: its figures are not stood behind."""
    if pick.problems or not samples_ms.get(pick.trial):
        return pick, ""
    sound = [e for e in others if not e.problems and samples_ms.get(e.trial)]
    beyond_noise = f"the benchmark's {resolution:.0%} resolution"
    fastest, how, best_ratio = pick, "", 1.0
    for other in sound:
        ratio, low, high = speedup_interval(samples_ms[pick.trial], samples_ms[other.trial])
        if faster_beyond_resolution(low, resolution) and ratio > best_ratio:
            fastest, best_ratio = other, ratio
            how = (f"trial {other.trial} ran {ratio:.2f}x as fast as trial {pick.trial} in the same job "
                   f"(95% interval {low:.2f}-{high:.2f}, beyond {beyond_noise})")
    level = []
    for entrant in [pick, *sound]:
        if entrant is fastest or entrant.drop_points is None or fastest.drop_points is None \
                or entrant.drop_points >= fastest.drop_points:
            continue
        ratio, low, high = speedup_interval(samples_ms[entrant.trial], samples_ms[fastest.trial])
        if not faster_beyond_resolution(low, resolution):
            level.append((entrant, ratio, low, high))
    if level:
        entrant, ratio, low, high = min(level, key=lambda e: e[0].drop_points)
        return entrant, (f"trial {entrant.trial} ran as fast as trial {fastest.trial} in the same job (trial "
                         f"{fastest.trial}: {ratio:.2f}x, 95% interval {low:.2f}-{high:.2f}, not beyond {beyond_noise}) "
                         f"and loses {entrant.drop_points:.2f} points, not {fastest.drop_points:.2f}")
    return fastest, how


def read_confirmation(record: SearchRecord, cell: tuple[int, int], rules: Rules,
                      drops: Mapping[int, float | None] | None = None) -> Confirmation | None:
    """The run-off the search asked for, as far as it has got; None when it asked for none. `drops`: the accuracy
    points each trial loses, by number (a tie in speed goes to the more accurate; unknown: no tie is broken)."""
    asked = record.confirmation
    if not asked:
        return None
    trial = int(asked["trial"])
    drops = drops or {}
    entered = [(int(t), int(v), drops.get(int(t))) for t, v in asked.get("runoff") or [(trial, asked["variant_id"])]]
    jobs = [j for j in queue.pipeline_jobs(asked["pipeline"]) if j.kind == "benchmark"]
    if not jobs or not jobs[-1].status.finished:
        return Confirmation(trial, "running", jobs[-1].id if jobs else None, runs=max(len(jobs), 1),
                            entrants=tuple(Entrant(t, v, drop_points=d) for t, v, d in entered))
    job = jobs[-1]
    if job.status.value != "succeeded":
        return Confirmation(trial, "failed", job.id, reason=f"its benchmark job {job.status.value}: {job.message}",
                            runs=len(jobs))
    baseline_id = int(asked["baseline_variant_id"])
    cells = {m.variant_id: m for m in catalog.list_measurements(variant_ids=[v for _, v, _ in entered] + [baseline_id])
             if m.job_id == job.id and (m.batch_size, m.seq_len) == cell}
    if entered[0][1] not in cells or baseline_id not in cells:
        return Confirmation(trial, "failed", job.id, runs=len(jobs),
                            reason="its benchmark measured nothing at the goal's cell for the best or the baseline; "
                                   "see its log")
    baseline = cells[baseline_id]
    entrants, samples = [], {}
    for number, variant_id, drop in entered:
        m = cells.get(variant_id)
        if m is None:
            entrants.append(Entrant(number, variant_id, problems=(NOT_MEASURED,), drop_points=drop))
            continue
        problems = tuple(cell_problems(cell_point(m, variant_id), rules))
        entrants.append(Entrant(number, variant_id, m.p50_ms, baseline.p50_ms / m.p50_ms, problems, drop))
        samples[number] = m.samples_ms or ()
    winner, why = runoff_winner(entrants[0], entrants[1:], samples, resolution_of(job))
    baseline_problems = tuple(cell_problems(cell_point(baseline, baseline_id), rules))
    problems = tuple([f"trial {winner.trial}: {p}" for p in winner.problems]
                     + [f"baseline: {p}" for p in baseline_problems])
    return Confirmation(trial, "complete", job.id, winner.p50_ms, baseline.p50_ms, winner.speedup, problems,
                        winner=winner.trial, entrants=tuple(entrants), why=why, baseline_problems=baseline_problems,
                        runs=len(jobs))
