"""The durable job queue: enqueue, atomic claim, progress, log, heartbeat, finish, cancel, stale sweep.

Claiming is a compare-and-set (`UPDATE ... WHERE id = :id AND status = 'queued'`): exactly one worker sees a
row count of 1, on SQLite and on any other database, without a table lock. On PostgreSQL a worker instead locks the
first runnable row nobody else holds (`SELECT ... FOR UPDATE SKIP LOCKED`) and takes it in the same transaction, so
many workers claiming at once each get a different job without queueing behind one another's row locks.

A job's log is a series of chunks, one row per append, so appending costs one insert however long the log is;
readers take all of it, the chunks after one they have seen (to follow a running job), or its tail.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Iterable

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session, aliased

from storage.catalog import MAX_ID
from storage.db import session_scope
from storage.entities import Job, LogTail, Worker, from_row
from storage.errors import Conflict, NotFound
from storage.orm import JobStatus, SqlJob, SqlJobLogChunk, SqlWorker, utcnow

CLAIM_CANDIDATES = 20
LOG_PAGE_CHUNKS = 500
LOG_OMITTED_MARK = "[... earlier log lines omitted ...]\n"


def enqueue(
    kind: str,
    params: dict[str, Any],
    *,
    device: str = "cpu",
    model_id: int | None = None,
    variant_id: int | None = None,
    dataset_id: int | None = None,
    depends_on_id: int | None = None,
    max_attempts: int = 2,
    pipeline: str | None = None,
    priority: int = 0,
    evaluation: dict[str, Any] | None = None,
    session: Session | None = None,
) -> Job:
    row = SqlJob(
        kind=kind,
        params=params,
        status=JobStatus.QUEUED,
        device=device,
        model_id=model_id,
        variant_id=variant_id,
        dataset_id=dataset_id,
        depends_on_id=depends_on_id,
        max_attempts=max_attempts,
        pipeline=pipeline,
        priority=priority,
        evaluation=evaluation,
        message="queued",
        result={},
    )
    def insert(s: Session) -> Job:
        if depends_on_id is not None:
            parent = s.get(SqlJob, depends_on_id)
            if parent is None:
                raise NotFound(f"no job {depends_on_id} to depend on")
            if parent.status in (JobStatus.FAILED, JobStatus.CANCELLED):  # it would wait forever
                reason = _dependency_reason(depends_on_id, parent.status)
                row.status, row.finished_at, row.message, row.error = JobStatus.CANCELLED, utcnow(), reason, reason
        s.add(row)
        s.flush()
        return from_row(Job, row)

    if session is not None:
        return insert(session)
    with session_scope() as s:
        return insert(s)


def get_job(job_id: int | str) -> Job:
    with session_scope() as s:
        ref = str(job_id).strip()
        row = s.get(SqlJob, int(ref)) if ref.isascii() and ref.isdigit() and int(ref) <= MAX_ID else None
        if row is None:
            raise NotFound(f"no job {job_id!r}", what="job")
        return from_row(Job, row)


def list_jobs(status: JobStatus | None = None, limit: int = 200, kind: str | None = None) -> list[Job]:
    with session_scope() as s:
        q = select(SqlJob).order_by(SqlJob.id.desc()).limit(limit)
        if status is not None:
            q = q.where(SqlJob.status == status)
        if kind is not None:
            q = q.where(SqlJob.kind == kind)
        return [from_row(Job, r) for r in s.scalars(q)]


def _require_job(s: Session, job_id: int) -> None:
    if not 0 <= int(job_id) <= MAX_ID or s.scalar(select(SqlJob.id).where(SqlJob.id == int(job_id))) is None:
        raise NotFound(f"no job {job_id!r}", what="job")


def job_log(job_id: int, max_chars: int | None = None) -> str:
    """The whole log; with `max_chars`, only its end (the end says why a job stopped), marked as cut."""
    if max_chars is not None:
        tail = log_tail(job_id, max_chars)
        return (LOG_OMITTED_MARK if tail.omitted else "") + tail.text
    with session_scope() as s:
        _require_job(s, job_id)
        texts = s.scalars(select(SqlJobLogChunk.text).where(SqlJobLogChunk.job_id == int(job_id)).order_by(SqlJobLogChunk.id))
        return "".join(texts)


def log_chunks(job_id: int, after_id: int = 0, limit: int = LOG_PAGE_CHUNKS) -> list[tuple[int, str]]:
    """Up to `limit` chunks (id, text) appended after chunk `after_id`, oldest first: pass the last id to follow.

    Ids grow in append order: one job's log is written by the worker running it, one append at a time.
    """
    with session_scope() as s:
        rows = s.execute(
            select(SqlJobLogChunk.id, SqlJobLogChunk.text)
            .where(SqlJobLogChunk.job_id == int(job_id), SqlJobLogChunk.id > after_id)
            .order_by(SqlJobLogChunk.id)
            .limit(limit)
        )
        return [(chunk_id, text) for chunk_id, text in rows]


def log_tail(job_id: int, max_chars: int) -> LogTail:
    """The last `max_chars` characters of a log, reading chunks from the newest back only as far as needed."""
    if max_chars <= 0:
        raise ValueError(f"max_chars must be positive, not {max_chars}")
    with session_scope() as s:
        _require_job(s, job_id)
        newest_first = s.execute(
            select(SqlJobLogChunk.text)
            .where(SqlJobLogChunk.job_id == int(job_id))
            .order_by(SqlJobLogChunk.id.desc())
            .execution_options(yield_per=LOG_PAGE_CHUNKS)
        ).scalars()
        parts: list[str] = []
        size = 0
        omitted = False
        for text in newest_first:
            if size >= max_chars:  # one chunk more than the tail needs: something earlier is left out
                omitted = True
                break
            parts.append(text)
            size += len(text)
        newest_first.close()
    text = "".join(reversed(parts))
    if len(text) > max_chars:
        text, omitted = text[-max_chars:], True
    return LogTail(text=text, omitted=omitted)


def _runnable(devices: list[str], hardware_classes: bool = False, pipeline: str | None = None):
    """Ids of the queued jobs a worker with `devices` may run now (no parent, or a parent that succeeded), in the
    order they are claimed: highest priority, then oldest. Jobs that name a hardware class (params
    `hardware_class`) are left to workers that can place them (`hardware_classes`: a Ray executor's). With
    `pipeline`, only that pipeline's jobs (a search runs its own trials' jobs this way)."""
    parent = aliased(SqlJob)
    query = (
        select(SqlJob.id)
        .outerjoin(parent, SqlJob.depends_on_id == parent.id)
        .where(
            SqlJob.status == JobStatus.QUEUED,
            SqlJob.device.in_(devices),
            or_(SqlJob.depends_on_id.is_(None), parent.status == JobStatus.SUCCEEDED),
        )
        .order_by(SqlJob.priority.desc(), SqlJob.id)
    )
    if pipeline is not None:
        query = query.where(SqlJob.pipeline == pipeline)
    return query if hardware_classes else query.where(SqlJob.params["hardware_class"].as_string().is_(None))


def _claimed(worker_id: str) -> dict[str, Any]:
    now = utcnow()
    return dict(status=JobStatus.RUNNING, worker_id=worker_id, started_at=now, heartbeat_at=now,
                attempts=SqlJob.attempts + 1, message="starting", progress=0.0)


def claim_next(worker_id: str, devices: Iterable[str], hardware_classes: bool = False,
               pipeline: str | None = None) -> Job | None:
    """Atomically move the next runnable queued job (highest priority, then oldest) to running, or return None.
    With `hardware_classes`, jobs that name a hardware class are claimed too (the worker can place them); with
    `pipeline`, only jobs of that pipeline."""
    devices = list(devices) + ["any"]
    with session_scope() as s:
        if s.get_bind().dialect.name == "postgresql":
            return _claim_skip_locked(s, worker_id, devices, hardware_classes, pipeline)
        candidates = s.scalars(_runnable(devices, hardware_classes, pipeline).limit(CLAIM_CANDIDATES)).all()
    for job_id in candidates:
        with session_scope() as s:
            won = s.execute(
                update(SqlJob).where(SqlJob.id == job_id, SqlJob.status == JobStatus.QUEUED).values(**_claimed(worker_id))
            ).rowcount
        if won == 1:
            return get_job(job_id)
    return None


def _claim_skip_locked(s: Session, worker_id: str, devices: list[str], hardware_classes: bool = False,
                       pipeline: str | None = None) -> Job | None:
    """PostgreSQL: lock the first runnable row no other worker holds (`FOR UPDATE SKIP LOCKED`) and take it in the
    same transaction. Racing workers each lock a different row instead of all updating the same candidate and
    waiting on each other's row lock; a row another worker took meanwhile fails the re-check under the lock."""
    job_id = s.scalar(_runnable(devices, hardware_classes, pipeline).limit(1).with_for_update(skip_locked=True, of=SqlJob))
    if job_id is None:
        return None
    row = s.scalars(
        update(SqlJob)
        .where(SqlJob.id == job_id, SqlJob.status == JobStatus.QUEUED)
        .values(**_claimed(worker_id))
        .returning(SqlJob)
    ).one()
    return from_row(Job, row)


def set_input_variant(job_id: int, variant_id: int) -> None:
    """Record the input of a pipeline step once its parent job has produced it."""
    with session_scope() as s:
        s.execute(update(SqlJob).where(SqlJob.id == job_id, SqlJob.variant_id.is_(None)).values(variant_id=variant_id))


def set_pid(job_id: int, pid: int) -> None:
    with session_scope() as s:
        s.execute(update(SqlJob).where(SqlJob.id == job_id).values(pid=pid))


def record_ran_on(job_id: int, worker_id: str, where: dict[str, Any]) -> bool:
    """Note in the job's params (key `ran_on`, which no kind reads) where this run of it runs: a cluster node, say.
    Only while `worker_id` holds it running; False otherwise (it ended, or another worker took it over)."""
    with session_scope() as s:
        row = s.get(SqlJob, job_id)
        if row is None or row.status is not JobStatus.RUNNING or row.worker_id != worker_id:
            return False
        row.params = {**row.params, "ran_on": where}
        return True


def set_progress(job_id: int, fraction: float, message: str) -> None:
    fraction = min(max(float(fraction), 0.0), 1.0)
    with session_scope() as s:
        s.execute(
            update(SqlJob)
            .where(SqlJob.id == job_id, SqlJob.status == JobStatus.RUNNING)
            .values(progress=fraction, message=message[:1000])
        )


def set_partial_result(job_id: int, result: dict[str, Any]) -> None:
    """What a running job has found so far (e.g. per-epoch metrics); its final result replaces it."""
    with session_scope() as s:
        s.execute(update(SqlJob).where(SqlJob.id == job_id, SqlJob.status == JobStatus.RUNNING).values(result=result))


def append_log(job_id: int, text: str) -> None:
    """Add one chunk to a job's log: one insert, however long the log already is. An unknown job takes nothing."""
    if not text:
        return
    with session_scope() as s:
        if s.scalar(select(SqlJob.id).where(SqlJob.id == job_id)) is not None:
            s.add(SqlJobLogChunk(job_id=job_id, text=text))


def heartbeat(worker_id: str, job_ids: Iterable[int]) -> None:
    now = utcnow()
    job_ids = list(job_ids)
    with session_scope() as s:
        s.execute(update(SqlWorker).where(SqlWorker.id == worker_id).values(heartbeat_at=now))
        if job_ids:
            s.execute(
                update(SqlJob)
                .where(SqlJob.id.in_(job_ids), SqlJob.worker_id == worker_id, SqlJob.status == JobStatus.RUNNING)
                .values(heartbeat_at=now)
            )


def finish(
    job_id: int,
    status: JobStatus,
    *,
    message: str | None = None,
    error: str | None = None,
    result: dict[str, Any] | None = None,
    produced_variant_id: int | None = None,
    worker_id: str | None = None,
    session: Session | None = None,
) -> bool:
    """Move a running job to a final status. Returns False if it was no longer running (someone else won).

    With `worker_id`, only that worker's attempt is finished: a worker that stalled past the stale sweep cannot
    overwrite the attempt of the worker that took the job over.
    """
    assert status.finished
    values: dict[str, Any] = {"status": status, "finished_at": utcnow(), "error": error}
    if status is JobStatus.SUCCEEDED:
        values["progress"] = 1.0
    if message is not None:
        values["message"] = message[:1000]
    if result is not None:
        values["result"] = result
    if produced_variant_id is not None:
        values["produced_variant_id"] = produced_variant_id

    def apply(s: Session) -> bool:
        where = [SqlJob.id == job_id, SqlJob.status == JobStatus.RUNNING]
        if worker_id is not None:
            where.append(SqlJob.worker_id == worker_id)
        done = s.execute(update(SqlJob).where(*where).values(**values)).rowcount
        if done and status is not JobStatus.SUCCEEDED:
            _cancel_dependents(s, job_id, status)
        return bool(done)

    if session is not None:
        return apply(session)
    with session_scope() as s:
        return apply(s)


def _dependency_reason(parent_id: int, parent_status: JobStatus) -> str:
    return f"cancelled because job {parent_id}, which it depends on, {parent_status.value}"


def _cancel_dependents(s: Session, job_id: int, status: JobStatus) -> None:
    """Cancel the queued jobs that wait on `job_id` (which ended `status`), and theirs, with the reason."""
    reason = _dependency_reason(job_id, status)
    pending = [job_id]
    while pending:
        parent_id = pending.pop()
        children = s.scalars(
            select(SqlJob.id).where(SqlJob.depends_on_id == parent_id, SqlJob.status == JobStatus.QUEUED)
        ).all()
        if children:
            s.execute(
                update(SqlJob)
                .where(SqlJob.id.in_(children), SqlJob.status == JobStatus.QUEUED)
                .values(status=JobStatus.CANCELLED, finished_at=utcnow(), message=reason, error=reason)
            )
            pending.extend(children)


def request_cancel(job_id: int | str) -> Job:
    """Queued jobs are cancelled at once; running ones are flagged and their worker stops the job process."""
    job = get_job(job_id)
    if job.status.finished:
        raise Conflict(f"job {job.id} already {job.status.value}; nothing to cancel")
    with session_scope() as s:
        cancelled_now = s.execute(
            update(SqlJob)
            .where(SqlJob.id == job.id, SqlJob.status == JobStatus.QUEUED)
            .values(status=JobStatus.CANCELLED, finished_at=utcnow(), message="cancelled by user", cancel_requested=True)
        ).rowcount
        if cancelled_now:
            _cancel_dependents(s, job.id, JobStatus.CANCELLED)
        else:
            s.execute(
                update(SqlJob)
                .where(SqlJob.id == job.id, SqlJob.status == JobStatus.RUNNING)
                .values(cancel_requested=True, message="cancelling")
            )
    return get_job(job.id)


def cancel_requested(job_ids: Iterable[int]) -> set[int]:
    job_ids = list(job_ids)
    if not job_ids:
        return set()
    with session_scope() as s:
        return set(s.scalars(select(SqlJob.id).where(SqlJob.id.in_(job_ids), SqlJob.cancel_requested.is_(True))))


def sweep_stale(stale_after_s: float) -> list[tuple[int, str]]:
    """Running jobs whose worker stopped heartbeating: re-queue while attempts remain, else fail with the reason."""
    cutoff = utcnow() - timedelta(seconds=stale_after_s)
    actions: list[tuple[int, str]] = []
    with session_scope() as s:
        stale = s.scalars(
            select(SqlJob).where(
                SqlJob.status == JobStatus.RUNNING,
                or_(SqlJob.heartbeat_at.is_(None), SqlJob.heartbeat_at < cutoff),
            )
        ).all()
        for row in stale:
            last = row.heartbeat_at.isoformat(timespec="seconds") + "Z" if row.heartbeat_at else "never"
            reason = f"worker {row.worker_id} stopped heartbeating (last heartbeat {last})"
            if row.cancel_requested:
                values = dict(status=JobStatus.CANCELLED, finished_at=utcnow(), message="cancelled by user")
                action = "cancelled"
            elif row.attempts < row.max_attempts:
                values = dict(status=JobStatus.QUEUED, worker_id=None, pid=None, message=f"re-queued: {reason}")
                action = "requeued"
            else:
                values = dict(status=JobStatus.FAILED, finished_at=utcnow(), message="failed: worker lost", error=reason)
                action = "failed"
            done = s.execute(
                update(SqlJob)
                .where(SqlJob.id == row.id, SqlJob.status == JobStatus.RUNNING, SqlJob.heartbeat_at == row.heartbeat_at)
                .values(**values)
            ).rowcount
            if done:
                if values["status"] is not JobStatus.QUEUED:
                    _cancel_dependents(s, row.id, values["status"])
                actions.append((row.id, action))
    return actions


# ---- workers ------------------------------------------------------------------------------------------------


def register_worker(worker_id: str, hostname: str, pid: int, devices: list[str], device_info: dict, concurrency: int) -> Worker:
    with session_scope() as s:
        row = SqlWorker(
            id=worker_id, hostname=hostname, pid=pid, devices=devices, device_info=device_info, concurrency=concurrency
        )
        s.add(row)
        s.flush()
        return from_row(Worker, row)


def worker_stopped(worker_id: str) -> None:
    with session_scope() as s:
        s.execute(update(SqlWorker).where(SqlWorker.id == worker_id).values(stopped_at=utcnow()))


def live_workers(stale_after_s: float) -> list[Worker]:
    cutoff = utcnow() - timedelta(seconds=stale_after_s)
    with session_scope() as s:
        rows = s.scalars(
            select(SqlWorker)
            .where(SqlWorker.stopped_at.is_(None), SqlWorker.heartbeat_at >= cutoff)
            .order_by(SqlWorker.started_at)
        )
        return [from_row(Worker, r) for r in rows]


def count_by_status() -> dict[str, int]:
    with session_scope() as s:
        rows = s.execute(select(SqlJob.status, func.count()).group_by(SqlJob.status)).all()
        return {status.value: n for status, n in rows}


def requeue(job_id: int, worker_id: str, reason: str) -> bool:
    """Give a running job back to the queue (its worker is shutting down). Cancelled ones are closed instead."""
    with session_scope() as s:
        row = s.get(SqlJob, job_id)
        if row is None or row.status is not JobStatus.RUNNING or row.worker_id != worker_id:
            return False
        if row.cancel_requested:
            values = dict(status=JobStatus.CANCELLED, finished_at=utcnow(), message="cancelled by user")
        else:
            values = dict(status=JobStatus.QUEUED, worker_id=None, pid=None, message=reason)
        return bool(
            s.execute(
                update(SqlJob)
                .where(SqlJob.id == job_id, SqlJob.status == JobStatus.RUNNING, SqlJob.worker_id == worker_id)
                .values(**values)
            ).rowcount
        )


def latest_by_variant(kind: str) -> dict[int, tuple[JobStatus, str]]:
    """Status and message of the newest job of `kind` for each variant, reading no logs or params."""
    newest = select(func.max(SqlJob.id)).where(SqlJob.kind == kind).group_by(SqlJob.variant_id)
    with session_scope() as s:
        rows = s.execute(select(SqlJob.variant_id, SqlJob.status, SqlJob.message).where(SqlJob.id.in_(newest)))
        return {variant_id: (status, message) for variant_id, status, message in rows if variant_id is not None}


def pipeline_jobs(pipeline: str) -> list[Job]:
    """Every job queued with one pipeline tag (its steps and the evaluations of what they made), oldest first."""
    with session_scope() as s:
        return [from_row(Job, r) for r in s.scalars(select(SqlJob).where(SqlJob.pipeline == pipeline).order_by(SqlJob.id))]


def made_from(kind: str, variant_id: int, dataset_id: int | None) -> list[Job]:
    """Succeeded jobs of `kind` that took `variant_id` (and `dataset_id`) and made a variant still in the catalog,
    newest first: what a step with the same params would make again."""
    with session_scope() as s:
        q = (select(SqlJob).where(SqlJob.kind == kind, SqlJob.variant_id == variant_id,
                                  SqlJob.status == JobStatus.SUCCEEDED, SqlJob.produced_variant_id.is_not(None),
                                  SqlJob.dataset_id.is_(None) if dataset_id is None else SqlJob.dataset_id == dataset_id)
             .order_by(SqlJob.id.desc()))
        return [from_row(Job, r) for r in s.scalars(q)]
