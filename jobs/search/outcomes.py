"""What a trial's (or the baseline's) pipeline has produced so far, read from the queue and the catalog: the
variant it made, that variant's evaluation, and the benchmark measurement at the goal's cell."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from jobs.decisions.compare import Point, point_of
from storage import catalog, queue
from storage.entities import Evaluation, Job, Measurement

MAKE_KINDS_EXCLUDED = ("evaluate", "benchmark")


@dataclass(frozen=True)
class Outcome:
    jobs: list[Job]
    variant_id: int | None  # the variant the pipeline's last making step produced (or the one it started from)
    evaluation: Evaluation | None  # of that variant, by this pipeline's evaluation job
    benchmark: Job | None
    measurement: Measurement | None  # that variant at the goal's cell, by this pipeline's benchmark job
    failed: str | None = None  # "step 2 (quantize) failed: ..." when a making step did not succeed
    job_ids: list[int] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return bool(self.jobs) and all(j.status.finished for j in self.jobs)

    def unfinished(self) -> list[Job]:
        return [j for j in self.jobs if not j.status.finished]


def making_steps(jobs: list[Job]) -> list[Job]:
    return [j for j in jobs if j.kind not in MAKE_KINDS_EXCLUDED]


def read(pipeline: str, start_variant_id: int | None, cell: tuple[int, int]) -> Outcome:
    """The pipeline's outcome so far. `start_variant_id`: the variant when the pipeline makes none (the baseline
    of a fine-tuned start variant is evaluated and benchmarked as it is)."""
    jobs = queue.pipeline_jobs(pipeline)
    steps = making_steps(jobs)
    failed = None
    for number, job in enumerate(steps, start=1):
        if job.status.value in ("failed", "cancelled"):
            failed = f"step {number} ({job.kind}) {job.status.value}: {job.message}"
            break
    variant_id = steps[-1].produced_variant_id if steps else start_variant_id
    evaluation = evaluation_in(jobs, variant_id)
    # the newest benchmark that succeeded (a measurement again that the budget cut keeps the one before), else the newest
    benchmarks = [j for j in jobs if j.kind == "benchmark"]
    succeeded = [j for j in benchmarks if j.status.value == "succeeded"]
    benchmark = (succeeded or benchmarks or [None])[-1]
    measurement = None
    if benchmark is not None and benchmark.status.value == "succeeded" and variant_id:
        measurement = next((m for m in catalog.list_measurements(variant_ids=[variant_id])
                            if m.job_id == benchmark.id and (m.batch_size, m.seq_len) == cell), None)
    return Outcome(jobs, variant_id, evaluation, benchmark, measurement, failed, [j.id for j in jobs])


def evaluation_in(jobs: list[Job], variant_id: int | None) -> Evaluation | None:
    """The evaluation of `variant_id` by one of `jobs` (a pipeline's), when it has succeeded."""
    done = [job for job in jobs if job.kind == "evaluate" and job.variant_id == variant_id
            and job.status.value == "succeeded"]
    if not variant_id or not done:
        return None
    wanted = done[-1].result.get("evaluation_id")  # the newest; the catalog is read once, not once per job
    return next((e for e in catalog.list_evaluations(variant_id) if e.id == wanted), None)


def evaluation_failed(outcome: Outcome) -> str | None:
    """Why the variant has no evaluation although its pipeline's making steps are done, if so."""
    for job in outcome.jobs:
        if job.kind == "evaluate" and job.variant_id == outcome.variant_id and job.status.value in ("failed", "cancelled"):
            return f"its evaluation (job {job.id}) {job.status.value}: {job.message}"
    return None


def cell_point(m: Measurement, variant_id: int, accuracy: float | None = None) -> Point:
    """A measurement as the decision rules read it (jobs.decisions.compare): figures, samples, stability, load."""
    return dataclasses.replace(point_of(m, accuracy=accuracy), variant_id=variant_id)
