"""Entry point of the process that runs one job: `python -m jobs.runner.child JOB_ID`.

The worker starts one such process per job, so a crash, an out-of-memory kill or a segfault here ends this
process only; the worker sees the exit status and records why. On success everything the job made (a new
variant and the job that follows it, evaluations, measurements) and the job's final status are written in one
transaction, and nothing at all when the job is no longer running by then (cancelled, or swept and re-queued).
"""

from __future__ import annotations

import faulthandler
import sys
import traceback


def main(argv: list[str]) -> int:
    job_id = int(argv[0])
    if len(argv) > 1:
        from jobs.runner.lifeline import die_with_parent

        die_with_parent(int(argv[1]))  # an orphaned job must not run on beside its re-queued copy
    faulthandler.enable()  # a segfault still leaves a Python stack in the job log

    from jobs.runner.context import JobContext
    from storage import queue

    job = queue.get_job(job_id)
    ctx = JobContext(job)
    try:
        return _run(job, ctx)
    finally:
        # scratch files (exports, calibration data, half-written outputs) never outlive the job; results are in
        # the artifact store and the DB, the log in the job row
        import shutil

        from storage import settings

        shutil.rmtree(settings.job_dir(job_id), ignore_errors=True)


def _run(job, ctx) -> int:
    from jobs.runner.context import JobCancelled, JobResult
    from jobs.runner.params import parse_params
    from jobs.runner.registry import get_kind
    from storage import queue
    from storage.db import session_scope
    from storage.errors import WorkbenchError
    from storage.orm import JobStatus

    job_id = job.id
    try:
        kind = get_kind(job.kind)
        params = parse_params(kind.params_cls, job.params)
        ctx.fetch_inputs()
        outcome = kind.run(params, ctx) or JobResult()
        if isinstance(outcome, dict):
            outcome = JobResult(result=outcome)
        with session_scope() as s:
            variant_id, result = _insert_outputs(s, job, outcome)
            won = queue.finish(
                job_id,
                JobStatus.SUCCEEDED,
                message=outcome.message,
                result=result,
                produced_variant_id=variant_id,
                worker_id=job.worker_id,
                session=s,
            )
            if not won:  # cancelled or swept while finishing: keep nothing it made
                s.rollback()
                ctx.log("job was no longer running when it finished; its outputs were discarded")
                return 0
        return 0
    except JobCancelled:
        queue.finish(job_id, JobStatus.CANCELLED, message="cancelled by user", worker_id=job.worker_id)
        return 0
    except WorkbenchError as exc:
        ctx.log(f"error: {exc}")
        queue.finish(job_id, JobStatus.FAILED, message=f"failed: {exc}", error=str(exc), worker_id=job.worker_id)
        return 1
    except Exception as exc:
        tb = traceback.format_exc()
        ctx.log(tb)
        queue.finish(
            job_id, JobStatus.FAILED, message=f"failed: {type(exc).__name__}: {exc}", error=tb, worker_id=job.worker_id
        )
        return 1


def _insert_outputs(session, job, outcome) -> tuple[int | None, dict]:
    """Insert what the job made, in its final transaction: its new variant (with the job that follows it, from the
    registry), evaluations and measurements. Returns the new variant's id and the job's result, completed with the
    ids known only now (`evaluation_id`, which MLflow tracking reads)."""
    from jobs.runner.registry import new_variant_follow_up
    from storage import catalog

    variant_id = None
    if outcome.new_variant is not None:
        variant = catalog.create_variant(session=session, **outcome.new_variant)
        variant_id = variant.id
        follow_up = new_variant_follow_up()
        if follow_up is not None:
            follow_up.queue(session, job, variant)  # no variant without its accuracy
    evaluation_ids = [catalog.add_evaluation(session=session, **row).id for row in outcome.evaluations]
    if outcome.measurements:
        catalog.add_measurements(outcome.measurements, session=session)
    if outcome.load_tests:
        from storage.load_tests import add_load_tests

        add_load_tests(outcome.load_tests, session=session)
    ids: dict = {}
    if len(evaluation_ids) == 1:
        ids["evaluation_id"] = evaluation_ids[0]
    elif evaluation_ids:
        ids["evaluation_ids"] = evaluation_ids
    return variant_id, {**ids, **outcome.result}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
