"""Running a trial's pipeline from inside the search job: a burst `Worker` that claims only that pipeline's jobs.

The search job holds a worker slot while it waits for its trials; with one slot (the default concurrency) no other
worker would run them and the search would wait forever. So the search's own process runs them, through the same
Worker (child processes, heartbeats, logs, cancellation) restricted to the pipeline; free workers elsewhere may
claim the same jobs too, so when the burst worker finds nothing to claim while jobs still run elsewhere, this waits.

A watcher thread stops the pipeline when the search must stop: the budget is spent or the search is cancelled
(its unfinished jobs are cancelled), or its worker is shutting down (the burst worker stops and re-queues what it
ran, so the restarted search re-attaches to it).
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from jobs.runner.executors import Executor
from jobs.runner.worker import Worker
from jobs.tracking.runs import Tracker
from storage import queue
from storage.errors import Conflict

WATCH_S = 0.5
ELSEWHERE_POLL_S = 1.0
IDLE_POLL_S = 3.0


class ShuttingDown(BaseException):
    """The search's worker is stopping (SIGTERM without a cancel): the job is left running so it is re-queued.
    A BaseException, so no `except Exception` on the way marks the job failed."""


def cancel_pipeline(pipeline: str) -> None:
    for job in queue.pipeline_jobs(pipeline):
        if not job.status.finished:
            try:
                queue.request_cancel(job.id)
            except Conflict:  # it finished meanwhile
                pass


def run_pipeline(pipeline: str, *, out_of_time: Callable[[], bool], cancelled: Callable[[], bool],
                 shutting_down: Callable[[], bool], hopeless: Callable[[], str | None] | None = None,
                 executor: Executor | None = None, tracker: Tracker | None = None) -> str | None:
    """Run the pipeline's jobs until all are finished. Returns None, or why it was stopped early ("budget spent",
    "cancelled", or what `hopeless` said: a trial that can no longer be within the goal); raises ShuttingDown when
    the worker running the search stops. `executor` and `tracker`: the search's, shared by the workers of all its
    pipelines, so the local executor's fork server and the MLflow tracker each import once per search, not once per
    trial (a pipeline whose first job is a benchmark, a re-measure or the run-off, would be timed beside that
    import); None: each worker starts its own."""
    stopped: list[str] = []

    def check() -> None:
        why = "cancelled" if cancelled() else "budget spent" if out_of_time() else hopeless() if hopeless else None
        if why and not stopped:
            stopped.append(why)
            cancel_pipeline(pipeline)

    while True:
        check()
        if not stopped and shutting_down():
            raise ShuttingDown()
        if all(j.status.finished for j in queue.pipeline_jobs(pipeline)):
            return stopped[0] if stopped else None
        worker = Worker(concurrency=1, burst=True, poll_interval=0.3, pipeline=pipeline, executor=executor,
                        tracker=tracker)
        done = threading.Event()

        def watch(worker: Worker = worker, done: threading.Event = done) -> None:
            while not done.wait(WATCH_S):
                check()
                if not stopped and shutting_down():
                    worker.stop()
                    return

        watcher = threading.Thread(target=watch, name=f"watch-{pipeline}", daemon=True)
        watcher.start()
        try:
            processed = worker.run()
        finally:
            done.set()
            watcher.join()
        if not stopped and shutting_down():
            raise ShuttingDown()
        if stopped:
            cancel_pipeline(pipeline)  # what another worker still runs, or what was queued after the watcher acted
        if not all(j.status.finished for j in queue.pipeline_jobs(pipeline)):
            # claimed by another worker (or for a device this one lacks): wait for it
            time.sleep(ELSEWHERE_POLL_S if processed else IDLE_POLL_S)
