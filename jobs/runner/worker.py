"""The worker: claims queued jobs and has its executor run each one (see jobs/runner/executors).

One loop, no threads touching the DB: reap finished jobs, stop cancelled ones, heartbeat, sweep stale jobs of
dead workers, claim new work up to `concurrency`, write what the running jobs printed to their logs. How a job
runs (a local child process today) is the executor's business; what its end means for the queue is the worker's.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
import uuid

from sqlalchemy.exc import OperationalError

from jobs.runner.executors import Executor, JobHandle, get_executor
from jobs.runtimes.devices import detect
from jobs.tracking.runs import Tracker
from storage import queue, settings
from storage.errors import InvalidInput
from storage.orm import JobStatus

# how long a cancelled (or, at shutdown, stopped) job may take to end before its executor is told to force it
TERMINATE_GRACE_S = 5.0
# `workbench serve` names itself here when it starts its worker: the worker stops when that process is gone
PARENT_PID_ENV = "WORKBENCH_WORKER_PARENT_PID"
ERROR_BACKOFF_S = 2.0
PAUSE_STEP_S = 0.1  # how soon a paused loop sees a signal's stop flag


class Worker:
    def __init__(self, concurrency: int = 1, burst: bool = False, poll_interval: float = 0.5,
                 parent_pid: int | None = None, pipeline: str | None = None, executor: Executor | None = None,
                 tracker: Tracker | None = None):
        if concurrency < 1:
            raise InvalidInput(f"concurrency must be at least 1, not {concurrency}", inputs=("concurrency",))
        self.concurrency = concurrency
        self.burst = burst
        self.poll_interval = poll_interval
        self.parent_pid = parent_pid  # the server that started this worker; None for a standalone worker
        self.pipeline = pipeline  # claim only this pipeline's jobs (a search job runs its trials this way)
        self.server_lost = False
        self.id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        # an executor or tracker given is shared with other workers (a search's, one per trial) and closed by its owner
        self.owns_executor, self.owns_tracker = executor is None, tracker is None
        self.executor: Executor = executor or get_executor(settings.get("WORKBENCH_EXECUTOR"))
        self.running: dict[int, JobHandle] = {}
        self.cancel_sent_at: dict[int, float] = {}  # when each cancelled job was asked to stop (monotonic)
        self.heartbeat_s = settings.get("WORKBENCH_HEARTBEAT_S")
        self.stale_after_s = settings.get("WORKBENCH_STALE_AFTER_S")
        self._stop = threading.Event()  # stop() from another thread (a search's pipeline watcher) wakes the loop
        self._signalled = False  # SIGTERM/SIGINT: a plain flag, see on_signal
        self.info = detect()
        # the devices it claims jobs for: this machine's, or (Ray) those of the cluster its executor runs jobs on
        self.devices = self.executor.claimable_devices(self.info["devices"])
        self.tracker = tracker or Tracker()  # logs each ended job as an MLflow run, in its own process

    # ---- lifecycle ----------------------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    def on_signal(self, *_args) -> None:
        """SIGTERM/SIGINT. Only a flag: the handler runs in the main thread between two bytecodes, possibly while
        that thread holds the stop Event's lock inside wait(), and Event.set() would then wait on it forever (a
        sigkilled `serve` left its worker hung that way). The loop sees the flag within one PAUSE_STEP_S."""
        self._signalled = True

    def stopping(self) -> bool:
        return self._signalled or self._stop.is_set()

    def _pause(self, seconds: float) -> None:
        """Wait `seconds`, or less once stopped (by stop() at once; by a signal within one step)."""
        deadline = time.monotonic() + seconds
        while not self.stopping():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._stop.wait(min(left, PAUSE_STEP_S))

    def _parent_died(self) -> bool:
        return self.parent_pid is not None and os.getppid() != self.parent_pid

    def parent_gone(self) -> bool:
        """The server that started this worker has died (we were re-parented): stop with it.

        PR_SET_PDEATHSIG (set by `serve` when it starts us) normally sends SIGTERM first; this covers a server that
        died before that took effect, and systems without prctl.
        """
        if not self._parent_died():
            return False
        if not self.stopping():
            self._log(f"its server (process {self.parent_pid}) is gone; stopping")
            self._stop.set()
        self.server_lost = True
        return True

    def run(self) -> int:
        """Run until stopped (or, in burst mode, until nothing is left to claim). Returns jobs processed."""
        if self.parent_gone():
            return 0
        # with the executor it runs jobs through and, for Ray, the cluster's address: what the Jobs tab's line says
        where = {"executor": settings.get("WORKBENCH_EXECUTOR"), "ray_address": getattr(self.executor, "address", None)}
        queue.register_worker(
            self.id, socket.gethostname(), os.getpid(), self.devices, {**self.info, **where}, self.concurrency
        )
        self._log(f"worker {self.id} started; devices: {', '.join(self.devices)}; concurrency {self.concurrency}")
        self._sweep()
        processed = 0
        last_beat = last_sweep = time.monotonic()
        try:
            while not self.stopping() and not self.parent_gone():
                try:
                    processed += self._reap()
                    self._stop_cancelled()
                    now = time.monotonic()
                    if now - last_beat >= self.heartbeat_s:
                        queue.heartbeat(self.id, self.running)
                        last_beat = now
                    if now - last_sweep >= max(self.stale_after_s / 2, 1.0):
                        self._sweep()
                        last_sweep = now
                    claimed = self._claim()
                    if self.burst and not self.running and not claimed:
                        break
                    self._flush_logs()
                except OperationalError as exc:  # e.g. "database is locked" past the busy timeout: try again
                    self._log(f"database error, retrying: {str(exc).splitlines()[0]}")
                    self._pause(ERROR_BACKOFF_S)
                self._pause(self.poll_interval)
        finally:
            self._shutdown()
        return processed

    # ---- steps --------------------------------------------------------------------------------------------

    def _claim(self) -> bool:
        claimed = False
        while len(self.running) < self.concurrency and not self.stopping():
            job = queue.claim_next(self.id, self.devices, self.executor.places_hardware_classes, pipeline=self.pipeline)
            if job is None:
                break
            self._start(job.id)
            claimed = True
        return claimed

    def _start(self, job_id: int) -> None:
        handle = self.executor.start(job_id)
        self.running[job_id] = handle
        if handle.pid is not None:
            queue.set_pid(job_id, handle.pid)
        self._log(f"job {job_id}: started in {handle.where}")
        self.tracker.start()  # imports MLflow while the job runs

    def _reap(self) -> int:
        done = 0
        for job_id, handle in list(self.running.items()):
            end = self.executor.poll(handle)
            if end is None:
                continue
            queue.append_log(job_id, self.executor.drain(handle))
            job = queue.get_job(job_id)
            if job.status is JobStatus.RUNNING:  # the job did not record an outcome itself
                if job.cancel_requested:
                    queue.finish(job_id, JobStatus.CANCELLED, message="cancelled by user", worker_id=self.id)
                else:
                    queue.append_log(job_id, f"\n{end.reason}\n")
                    queue.finish(
                        job_id,
                        JobStatus.FAILED,
                        message=f"failed: {end.reason}",
                        error=f"{end.reason}\n{end.log_tail}".strip(),
                        worker_id=self.id,
                    )
            final = queue.get_job(job_id)
            self._log(f"job {job_id}: {final.status.value}")
            if final.status.finished:
                self.tracker.submit(job_id)
            del self.running[job_id]
            self.cancel_sent_at.pop(job_id, None)
            done += 1
        return done

    def _stop_cancelled(self) -> None:
        for job_id in queue.cancel_requested(self.running):
            handle = self.running[job_id]
            now = time.monotonic()
            sent_at = self.cancel_sent_at.get(job_id)
            if sent_at is None:
                self.executor.cancel(handle)
                self.cancel_sent_at[job_id] = now
            elif now - sent_at > TERMINATE_GRACE_S:
                self.executor.kill(handle)

    def _sweep(self) -> None:
        for job_id, action in queue.sweep_stale(self.stale_after_s):
            self._log(f"job {job_id}: its worker stopped heartbeating; {action}")

    def _flush_logs(self) -> None:
        for job_id, handle in self.running.items():
            queue.append_log(job_id, self.executor.drain(handle))

    def _shutdown(self) -> None:
        """Stop running jobs and put them back in the queue, so a restart picks them up again."""
        for handle in self.running.values():
            self.executor.cancel(handle)
        deadline = time.monotonic() + TERMINATE_GRACE_S  # one grace period for all of them, not one each
        for job_id, handle in list(self.running.items()):
            if self.executor.wait(handle, max(deadline - time.monotonic(), 0.1)) is None:
                self.executor.kill(handle)
                self.executor.wait(handle, None)
            queue.append_log(job_id, self.executor.drain(handle))
            why = "its server stopped" if self.server_lost or self._parent_died() else "it shut down"
            queue.requeue(job_id, self.id, f"worker {self.id} stopped while the job ran ({why}); re-queued")
        self.running.clear()
        self.cancel_sent_at.clear()
        if self.owns_executor:
            self.executor.close()
        if self.owns_tracker:
            self.tracker.close()  # let it log the jobs it was given
        queue.worker_stopped(self.id)
        self._log(f"worker {self.id} stopped")

    def _log(self, message: str) -> None:
        print(f"[worker] {message}", file=sys.stderr, flush=True)


def run_worker(concurrency: int = 1, burst: bool = False, poll_interval: float = 0.5) -> int:
    parent = os.environ.pop(PARENT_PID_ENV, "")  # not passed on to job processes
    worker = Worker(concurrency=concurrency, burst=burst, poll_interval=poll_interval,
                    parent_pid=int(parent) if parent.isdigit() else None)
    signal.signal(signal.SIGTERM, worker.on_signal)
    signal.signal(signal.SIGINT, worker.on_signal)
    if not burst:  # it waits for jobs: its first one should not wait for what the executor can prepare
        worker.executor.warm_up()
    return worker.run()
