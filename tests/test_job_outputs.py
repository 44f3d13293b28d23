"""What a job makes (measurements, evaluations, a new variant) is committed with its success, once.

A job whose run loses the finish race (swept as stale and re-queued while it was finishing) must leave nothing,
and its re-run must leave exactly one set of rows: the set of the run that won. The job process runs in this
process here (`jobs.runner.child.main`), so the race can be staged between the kind's return and its finish.
"""

from __future__ import annotations

import ast
import dataclasses
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from jobs.runner import child, registry
from jobs.runner.submit import submit
from storage import catalog, queue
from storage.db import session_scope
from storage.errors import InvalidInput
from storage.orm import JobStatus, SqlJob, utcnow
from tests.conftest import REPO
from tests.support.rows import placeholder_dataset, placeholder_model

FIRST, SECOND = "first-worker", "second-worker"


@pytest.fixture
def tiny_model(home, tmp_path, minilm_dir):
    """A tiny classifier ("tiny") and the toy sentiment dataset ("toy"); returns the model's root variant."""
    from jobs import api
    from tests.support.data import write_sentiment_csv
    from tests.support.tiny import tiny_classifier

    model = api.add_model(api.ModelRequest(str(tiny_classifier(tmp_path / "tiny", minilm_dir)), name="tiny")).model
    api.add_dataset(api.DatasetRequest(str(write_sentiment_csv(tmp_path / "toy.csv")), name="toy"))
    return catalog.root_variant(model.id)


def claim(job_id: int, worker_id: str):
    """Claim `job_id` as `worker_id`, with the real claim, after cancelling whatever else is queued (intake's
    inspection) so the claim cannot pick another job."""
    for other in queue.list_jobs(JobStatus.QUEUED):
        if other.id != job_id:
            queue.request_cancel(other.id)
    job = queue.claim_next(worker_id, ["cpu"])
    assert job is not None and job.id == job_id
    return job


def sweep_as_stale(job_id: int) -> None:
    """The job's worker stops heartbeating and the sweep re-queues the job, as it does for a dead worker."""
    with session_scope() as s:
        s.execute(update(SqlJob).where(SqlJob.id == job_id).values(heartbeat_at=utcnow() - timedelta(minutes=5)))
    assert dict(queue.sweep_stale(stale_after_s=30)) == {job_id: "requeued"}


def wrap_kind(monkeypatch, name: str, after_run) -> list:
    """Make the registered kind call `after_run(outcome)` between its run and its finish; returns the outcomes of
    every run, in order."""
    kind = registry.get_kind(name)
    outcomes = []

    def run(params, ctx):
        outcome = kind.run(params, ctx)
        outcomes.append(outcome)
        after_run(outcome)
        return outcome

    monkeypatch.setitem(registry._KINDS._items, name, dataclasses.replace(kind, run=run))
    return outcomes


@pytest.mark.slow
def test_a_benchmark_swept_while_finishing_leaves_nothing_and_its_rerun_one_set(tiny_model, monkeypatch):
    job = submit("benchmark", {"batch_sizes": [1], "seq_lens": [16], "warmup": 1, "window": 3, "min_samples": 3,
                               "max_seconds": 0.5, "threads": 1, "texts": 8}, variant=tiny_model.id, dataset="toy")

    def sweep_the_first_run(_outcome) -> None:
        if len(outcomes) == 1:  # swept after measuring, before finishing: its finish loses
            sweep_as_stale(job.id)

    outcomes = wrap_kind(monkeypatch, "benchmark", sweep_the_first_run)
    claim(job.id, FIRST)
    assert child.main([str(job.id)]) == 0
    assert queue.get_job(job.id).status is JobStatus.QUEUED
    assert catalog.list_measurements() == [], "a run whose finish lost left measurement rows"

    claim(job.id, SECOND)
    assert child.main([str(job.id)]) == 0
    done = queue.get_job(job.id)
    assert done.status is JobStatus.SUCCEEDED and done.worker_id == SECOND and done.attempts == 2, done.message
    rows = catalog.list_measurements()
    assert len(rows) == done.result["measurements"] == len(outcomes[1].measurements) == 1
    assert [r.samples_ms for r in rows] == [m["samples_ms"] for m in outcomes[1].measurements]  # the winner's
    assert all(r.job_id == job.id for r in rows) and done.result["fingerprint_hash"] == rows[0].fingerprint_hash


@pytest.mark.slow
def test_an_evaluation_rerun_that_wins_the_race_is_the_only_one_recorded(tiny_model, monkeypatch):
    """The first run is swept while finishing; its re-run wins first, then the first run's finish loses."""
    job = submit("evaluate", {"max_examples": 12}, variant=tiny_model.id, dataset="toy")

    def rerun_before_finishing(_outcome) -> None:
        if len(outcomes) == 1:  # only the first run: it stalls here while a second worker re-runs the job
            sweep_as_stale(job.id)
            claim(job.id, SECOND)
            assert child.main([str(job.id)]) == 0

    outcomes = wrap_kind(monkeypatch, "evaluate", rerun_before_finishing)
    claim(job.id, FIRST)
    assert child.main([str(job.id)]) == 0

    assert len(outcomes) == 2
    done = queue.get_job(job.id)
    assert done.status is JobStatus.SUCCEEDED and done.worker_id == SECOND and done.attempts == 2
    evaluations = catalog.list_evaluations(tiny_model.id)
    assert [e.id for e in evaluations] == [done.result["evaluation_id"]]
    assert evaluations[0].job_id == job.id and evaluations[0].num_examples == done.result["num_examples"] == 12
    assert evaluations[0].accuracy == done.result["accuracy"]


@pytest.fixture
def stored_rows(home):
    """A model (its root variant) and a dataset as bare rows, for a job's outputs to point at."""
    _, root = placeholder_model()
    dataset = placeholder_dataset()
    return root, dataset


def every_output(job_id: int, root, dataset):
    """A JobResult with one of everything a kind can make: a variant, an evaluation and a measurement."""
    from jobs.runner.context import JobResult

    variant = dict(model_id=root.model_id, parent_id=root.id, name=f"m > step {job_id}", artifact_dir="/nonexistent",
                   runtime="pytorch", precision="fp32", recipe={}, files=[], sha256="v", size_bytes=1,
                   dataset_id=dataset.id, info={})
    evaluation = dict(variant_id=root.id, dataset_id=dataset.id, job_id=job_id, split="test", num_examples=2,
                      accuracy=0.5, macro_f1=0.5, confusion={}, predictions=[0, 1])
    measurement = dict(variant_id=root.id, job_id=job_id, dataset_id=dataset.id, device="cpu", batch_size=1, seq_len=8,
                       samples=3, p50_ms=1.0, p90_ms=1.0, p95_ms=1.0, p99_ms=1.0, mean_ms=1.0, std_ms=0.0,
                       throughput_sps=1000.0, tokens_per_s=8000.0, fingerprint={}, fingerprint_hash="f")
    return JobResult(result={"made": "everything"}, new_variant=variant, evaluations=[evaluation],
                     measurements=[measurement])


def test_a_run_whose_finish_loses_writes_no_variant_evaluation_measurement_or_follow_up(stored_rows, monkeypatch):
    root, dataset = stored_rows
    job = submit("test-sleep", {"seconds": 0})
    losing = [True]

    def run(_params, _ctx):
        if losing[0]:
            sweep_as_stale(job.id)  # the finish that follows loses
        return every_output(job.id, root, dataset)

    monkeypatch.setitem(registry._KINDS._items, "test-sleep", dataclasses.replace(registry.get_kind("test-sleep"), run=run))
    claim(job.id, FIRST)
    assert child.main([str(job.id)]) == 0
    assert queue.get_job(job.id).status is JobStatus.QUEUED
    assert [v.id for v in catalog.list_variants()] == [root.id]
    assert catalog.list_evaluations() == [] and catalog.list_measurements() == []
    assert queue.list_jobs(kind="evaluate") == []  # nor the evaluation of the variant it did not make

    losing[0] = False
    claim(job.id, SECOND)
    assert child.main([str(job.id)]) == 0
    done = queue.get_job(job.id)
    assert done.status is JobStatus.SUCCEEDED and done.worker_id == SECOND
    made = [v for v in catalog.list_variants() if v.id != root.id]
    assert [v.id for v in made] == [done.produced_variant_id]
    [evaluation] = catalog.list_evaluations()
    assert done.result == {"evaluation_id": evaluation.id, "made": "everything"}
    assert len(catalog.list_measurements()) == 1
    [follow_up] = queue.list_jobs(kind="evaluate")
    assert follow_up.variant_id == made[0].id and follow_up.status is JobStatus.QUEUED


def test_the_follow_up_of_a_new_variant_comes_from_the_registry(home):
    follow_up = registry.new_variant_follow_up()
    assert follow_up is not None and follow_up.kind == "evaluate"
    with pytest.raises(InvalidInput, match="max_examples"):
        submit("test-sleep", {}, evaluation={"max_examples": -1})
    job = submit("test-sleep", {}, evaluation={"max_examples": "5"})
    assert job.evaluation["max_examples"] == 5  # parsed with the follow-up kind's params


def test_the_runner_imports_no_kind():
    """The runner knows no kind by name: what follows a kind is declared to the registry."""
    offenders = []
    for path in sorted((REPO / "jobs" / "runner").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{Path(path).relative_to(REPO)}: {n}" for n in names if n.startswith("jobs.kinds")]
    assert not offenders
