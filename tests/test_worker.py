"""The queue and the worker, with real worker processes and real job processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import psutil
import pytest
from sqlalchemy import update

from jobs.runner import worker as worker_module
from jobs.runner.executors import EXECUTORS, Executor, JobEnd
from jobs.runner.executors.local import LocalExecutor, describe_exit, oom_kills
from jobs.runner.submit import submit
from jobs.runner.worker import Worker
from storage import queue
from storage.db import session_scope
from storage.errors import InvalidInput
from storage.orm import JobStatus, SqlJob, utcnow
from tests.conftest import REPO, wait_for


def sleep_job(**params):
    return submit("test-sleep", params)


def start_worker_process(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "workbench", "worker", *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def test_burst_mode_runs_the_queue_to_empty(home):
    jobs = [sleep_job(seconds=0.1) for _ in range(3)]
    processed = Worker(burst=True, poll_interval=0.05).run()
    assert processed == 3
    for job in jobs:
        done = queue.get_job(job.id)
        assert done.status is JobStatus.SUCCEEDED and done.progress == 1.0 and done.attempts == 1
        assert done.result["slept"] == 0.1 and done.result["pid"] != os.getpid()  # ran in its own process
        assert "step" in queue.job_log(job.id)


def test_a_job_that_raises_fails_with_its_traceback(home):
    job = sleep_job(seconds=0, outcome="raise")
    Worker(burst=True, poll_interval=0.05).run()
    done = queue.get_job(job.id)
    assert done.status is JobStatus.FAILED
    assert "RuntimeError: this job was asked to fail" in done.error and "Traceback" in done.error
    assert "this job was asked to fail" in done.message


@pytest.mark.parametrize("outcome, reason", [("segfault", "SIGSEGV"), ("exit", "exited with code 3")])
def test_a_crashing_job_process_fails_the_job_not_the_worker(home, outcome, reason):
    crashing = sleep_job(seconds=0, outcome=outcome)
    after = sleep_job(seconds=0)
    Worker(burst=True, poll_interval=0.05).run()
    assert reason in queue.get_job(crashing.id).error
    assert queue.get_job(crashing.id).status is JobStatus.FAILED
    assert queue.get_job(after.id).status is JobStatus.SUCCEEDED


@contextmanager
def worker_in_thread():
    worker = Worker(poll_interval=0.05)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(30)


def finished(job_id: int, timeout: float = 60):
    return wait_for(lambda: (j := queue.get_job(job_id)).status.finished and j, timeout=timeout, what=f"job {job_id} to finish")


def test_a_job_killed_with_sigkill_ends_failed_with_the_reason(home):
    job = sleep_job(seconds=30)
    with worker_in_thread():
        pid = wait_for(lambda: queue.get_job(job.id).pid, what="job process")
        wait_for(lambda: queue.get_job(job.id).progress > 0, what="progress")
        os.kill(pid, signal.SIGKILL)
        done = finished(job.id)
    assert done.status is JobStatus.FAILED
    assert "killed by SIGKILL" in done.error
    # a person's kill -9 is not blamed on memory where the kernel's OOM-kill counters can be read
    if oom_kills() is not None:
        assert "by another process; the out-of-memory killer did not act" in done.error
        assert "ran out of memory" not in done.error
    else:
        assert "by another process or the out-of-memory killer" in done.error
    assert "killed by SIGKILL" in queue.job_log(job.id)


def test_sigkill_is_blamed_on_memory_only_when_the_oom_killer_acted():
    assert describe_exit(-9, 3, 4).endswith("(the out-of-memory killer acted while it ran: it most likely ran out of memory)")
    assert "another process; the out-of-memory killer did not act" in describe_exit(-9, 3, 3)
    assert "ran out of memory" not in describe_exit(-9, 3, 3)
    assert describe_exit(-9, None, None).endswith("(by another process or the out-of-memory killer)")
    assert describe_exit(-15, 0, 1) == "job process was killed by SIGTERM (signal 15)"
    assert describe_exit(3) == "job process exited with code 3 without recording a result"
    if os.path.exists("/proc/vmstat"):  # Linux >= 4.13 counts OOM kills there
        assert isinstance(oom_kills(), int)


def test_cancel_stops_a_running_job_process(home):
    job = sleep_job(seconds=60)
    with worker_in_thread():
        pid = wait_for(lambda: queue.get_job(job.id).pid, what="job process")
        queue.request_cancel(job.id)
        done = finished(job.id, timeout=30)
    assert done.status is JobStatus.CANCELLED
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_cancel_of_a_queued_job_is_immediate_and_cascades_to_dependents(home):
    first = sleep_job()
    child = submit("test-sleep", {}, depends_on=first.id)
    assert queue.request_cancel(first.id).status is JobStatus.CANCELLED
    assert queue.get_job(child.id).status is JobStatus.CANCELLED
    assert f"job {first.id}" in queue.get_job(child.id).message


def test_dependents_wait_for_their_parent_and_are_cancelled_when_it_fails(home):
    ok_parent = sleep_job(seconds=0)
    ok_child = submit("test-sleep", {"seconds": 0}, depends_on=ok_parent.id)
    bad_parent = sleep_job(seconds=0, outcome="raise")
    bad_child = submit("test-sleep", {"seconds": 0}, depends_on=bad_parent.id)
    Worker(burst=True, poll_interval=0.05).run()
    assert queue.get_job(ok_child.id).status is JobStatus.SUCCEEDED
    assert queue.get_job(ok_child.id).started_at >= queue.get_job(ok_parent.id).finished_at
    assert queue.get_job(bad_child.id).status is JobStatus.CANCELLED
    assert "failed" in queue.get_job(bad_child.id).error


def test_claim_is_atomic_under_racing_threads(home):
    job = sleep_job()
    barrier = threading.Barrier(8)
    winners = []

    def claim(i):
        barrier.wait()
        got = queue.claim_next(f"w{i}", ["cpu"])
        if got:
            winners.append(got.worker_id)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1
    assert queue.get_job(job.id).worker_id == winners[0]


def test_many_workers_claiming_at_once_take_every_job_exactly_once(home):
    jobs = [queue.enqueue("test-sleep", {}) for _ in range(40)]
    workers = 8
    barrier = threading.Barrier(workers)
    claimed: dict[str, list[int]] = {f"w{i}": [] for i in range(workers)}
    errors = []

    def drain(worker_id):
        try:
            barrier.wait()
            while (job := queue.claim_next(worker_id, ["cpu"])) is not None:
                claimed[worker_id].append(job.id)
        except Exception as exc:  # surfaced below: a thread's exception would otherwise only be printed
            errors.append(exc)

    threads = [threading.Thread(target=drain, args=(worker_id,)) for worker_id in claimed]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    taken = [job_id for ids in claimed.values() for job_id in ids]
    assert sorted(taken) == [j.id for j in jobs]  # every job claimed, none twice
    assert sum(1 for ids in claimed.values() if ids) > 1, claimed  # the workers really did claim side by side
    for worker_id, ids in claimed.items():
        for job_id in ids:
            job = queue.get_job(job_id)
            assert (job.status, job.worker_id, job.attempts) == (JobStatus.RUNNING, worker_id, 1)


@pytest.mark.postgresql
def test_a_claim_on_postgresql_skips_a_job_another_transaction_holds_instead_of_waiting(home):
    from sqlalchemy import select

    first, second = sleep_job(), sleep_job()
    with session_scope() as holder:  # another worker, mid-claim, holding the first job's row lock
        holder.execute(select(SqlJob.id).where(SqlJob.id == first.id).with_for_update())
        taken = queue.claim_next("w1", ["cpu"])
        assert taken is not None and taken.id == second.id
        assert queue.claim_next("w2", ["cpu"]) is None  # the only job left is locked: skipped, not waited for
    assert queue.claim_next("w2", ["cpu"]).id == first.id  # free again once the lock is released


def test_two_worker_processes_never_run_the_same_job(home, tmp_path):
    marker = tmp_path / "runs"
    marker.mkdir()
    jobs = [sleep_job(seconds=0.05, marker=str(marker)) for _ in range(8)]
    workers = [start_worker_process("--burst", "--concurrency", "2") for _ in range(2)]
    for w in workers:
        w.wait(timeout=300)
    runs = sorted(p.name.split("-")[0] for p in marker.iterdir())
    assert runs == sorted(f"job{j.id}" for j in jobs)  # each job ran exactly once
    finished = [queue.get_job(j.id) for j in jobs]
    assert all(j.status is JobStatus.SUCCEEDED and j.attempts == 1 for j in finished)


def test_jobs_needing_a_gpu_are_left_for_a_gpu_worker(home):
    gpu_job = queue.enqueue("test-sleep", {}, device="cuda")
    assert queue.claim_next("cpu-only", ["cpu"]) is None
    assert queue.claim_next("gpu-box", ["cpu", "cuda"]).id == gpu_job.id


def _make_stale(job_id: int, attempts: int):
    with session_scope() as s:
        s.execute(
            update(SqlJob).where(SqlJob.id == job_id).values(
                status=JobStatus.RUNNING, worker_id="gone", attempts=attempts, heartbeat_at=utcnow() - timedelta(minutes=5)
            )
        )


def test_sweep_requeues_jobs_of_a_dead_worker_then_fails_them(home):
    retry = sleep_job()
    exhausted = sleep_job()
    fresh = sleep_job()
    _make_stale(retry.id, attempts=1)
    _make_stale(exhausted.id, attempts=2)
    queue.claim_next("alive", ["cpu"])  # `fresh` is running with a current heartbeat
    assert queue.get_job(fresh.id).status is JobStatus.RUNNING

    actions = dict(queue.sweep_stale(stale_after_s=30))
    assert actions == {retry.id: "requeued", exhausted.id: "failed"}
    assert queue.get_job(retry.id).status is JobStatus.QUEUED
    failed = queue.get_job(exhausted.id)
    assert failed.status is JobStatus.FAILED and "worker gone stopped heartbeating" in failed.error
    assert queue.get_job(fresh.id).status is JobStatus.RUNNING


def test_a_worker_killed_mid_job_is_swept_and_its_job_rerun(home):
    env = {"WORKBENCH_STALE_AFTER_S": "2", "WORKBENCH_HEARTBEAT_S": "0.5"}
    job = sleep_job(seconds=20)
    first = start_worker_process(env=env)
    child_pid = wait_for(lambda: queue.get_job(job.id).pid, what="job process")
    first.kill()  # SIGKILL: no clean shutdown, no re-queue by the worker itself
    first.wait()
    # The job process dies with its worker (PR_SET_PDEATHSIG), so it cannot run on beside a re-run.
    wait_for(lambda: not _alive(child_pid), timeout=10, what="orphaned job process to die")
    assert queue.get_job(job.id).status is JobStatus.RUNNING  # until a sweep notices

    second = start_worker_process(env=env)
    try:
        rerun = wait_for(lambda: (j := queue.get_job(job.id)).attempts == 2 and j.status is JobStatus.RUNNING and j,
                         timeout=30, what="re-queued job to run again")
        assert "re-queued" in rerun.message or rerun.pid != child_pid
    finally:
        second.terminate()
        second.wait(30)
    # A clean shutdown hands the job back to the queue instead of leaving it running.
    assert queue.get_job(job.id).status is JobStatus.QUEUED


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); read its state
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_a_sigkilled_serve_takes_its_worker_and_job_with_it(home, tmp_path):
    """No orphan worker runs jobs without a server (and beside the next server's worker): it stops with serve,
    its job process stops with it, and the job goes back to the queue for the next worker."""
    marker = tmp_path / "runs"
    marker.mkdir()
    env = {"WORKBENCH_STALE_AFTER_S": "3", "WORKBENCH_HEARTBEAT_S": "0.5"}
    from tests.support.browser import start_serve

    server, _ = start_serve(home, env, timeout=180)
    try:
        job = sleep_job(seconds=6, marker=str(marker))
        job_pid = wait_for(lambda: queue.get_job(job.id).pid, what="job process")
        wait_for(lambda: queue.get_job(job.id).progress > 0, what="progress")
        workers = [p for p in psutil.Process(server.pid).children() if "worker" in p.cmdline()]
        assert len(workers) == 1, workers
        worker = workers[0]
        server.kill()
        server.wait(30)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(30)
    # it stops its job (one grace period) and lets its tracker drain: on a loaded machine importing MLflow alone
    # can take seconds, so the bound is what the worker allows itself, not a speed (what is tested is that it goes)
    from jobs.tracking.runs import TRACKER_DRAIN_S

    gone, alive = psutil.wait_procs([worker], timeout=worker_module.TERMINATE_GRACE_S + TRACKER_DRAIN_S + 10)
    assert not alive, f"worker {worker.pid} outlived its server"
    wait_for(lambda: not _alive(job_pid), timeout=10, what="the job process to die with its worker")
    stopped = queue.get_job(job.id)
    # the worker stopped cleanly (SIGTERM from PR_SET_PDEATHSIG) and handed the job back; whether it saw itself
    # re-parented yet when the signal arrived is a race, so the wording may be either
    assert stopped.status is JobStatus.QUEUED and "re-queued" in stopped.message, stopped
    assert "its server stopped" in stopped.message or "it shut down" in stopped.message

    # the next worker sweeps or picks it up and runs it once more, alone
    second = start_worker_process("--burst", env=env)
    try:
        assert second.wait(timeout=180) == 0
    finally:
        if second.poll() is None:
            second.kill()
    done = queue.get_job(job.id)
    assert done.status is JobStatus.SUCCEEDED and done.attempts == 2, done
    assert len(list(marker.iterdir())) == 2


def test_a_signal_stops_the_worker_without_waiting_on_a_lock_its_thread_holds(home):
    """A signal handler runs in the main thread between two bytecodes, possibly inside the loop's Event.wait(),
    which holds the Event's lock. The handler setting that Event waited on it forever: CI saw a sigkilled serve's
    worker hang so (its stack: Worker.stop -> Event.set -> Condition.__enter__ under Event.wait)."""
    worker = Worker(poll_interval=0.05)
    handled = threading.Event()

    def signal_inside_wait() -> None:
        with worker._stop._cond:  # what the main thread holds inside Event.wait (CPython's Event)
            worker.on_signal()
        handled.set()

    threading.Thread(target=signal_inside_wait, daemon=True).start()
    assert handled.wait(10), "the signal handler waited on the lock its own thread holds"
    assert worker.stopping()
    started = time.monotonic()
    worker._pause(30)  # a paused loop sees the flag at once
    assert time.monotonic() - started < 5


def test_a_worker_whose_server_is_gone_stops(home):
    """The fallback beside PR_SET_PDEATHSIG: a worker told to live with a server that is not its parent
    (it was re-parented) stops at once without claiming anything."""
    from jobs.runner.worker import PARENT_PID_ENV

    job = sleep_job(seconds=0)
    proc = start_worker_process(env={PARENT_PID_ENV: str(os.getpid() + 10_000_000)})
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0
    assert b"is gone; stopping" in out
    assert queue.get_job(job.id).status is JobStatus.QUEUED


def test_a_job_depending_on_a_failed_job_is_cancelled_at_once(home):
    parent = sleep_job(seconds=0, outcome="raise")
    Worker(burst=True, poll_interval=0.05).run()
    child = submit("test-sleep", {}, depends_on=parent.id)
    assert child.status is JobStatus.CANCELLED and f"job {parent.id}" in child.message


def test_only_the_worker_holding_a_job_can_finish_or_requeue_it(home):
    job = sleep_job()
    queue.claim_next("holder", ["cpu"])
    assert not queue.finish(job.id, JobStatus.FAILED, error="stale", worker_id="someone-else")
    assert not queue.requeue(job.id, "someone-else", "shutting down")
    assert queue.get_job(job.id).status is JobStatus.RUNNING
    assert queue.finish(job.id, JobStatus.SUCCEEDED, worker_id="holder")


def test_sweep_closes_a_cancel_requested_job_as_cancelled(home):
    job = sleep_job()
    dependent = submit("test-sleep", {}, depends_on=job.id)
    _make_stale(job.id, attempts=1)
    queue.request_cancel(job.id)
    assert dict(queue.sweep_stale(stale_after_s=30)) == {job.id: "cancelled"}
    assert queue.get_job(job.id).status is JobStatus.CANCELLED
    closed = queue.get_job(dependent.id)
    assert closed.status is JobStatus.CANCELLED and closed.message.endswith(f"job {job.id}, which it depends on, cancelled")


# ---- what reaches a job's log --------------------------------------------------------------------------------


@pytest.mark.parametrize("raw, clean", [
    ("\x1b[31mERROR\x1b[0m disk full\n", "ERROR disk full\n"),  # colour (CSI SGR)
    ("\x1b[1;32;40mok\x1b[K done\n", "ok done\n"),  # several parameters, erase to end of line
    ("see \x1b]8;;https://example.org\x07the docs\x1b]8;;\x07\n", "see the docs\n"),  # OSC 8 hyperlink, BEL-ended
    ("\x1b]0;title\x1b\\step 3\n", "step 3\n"),  # OSC ended by ESC \
    ("\x1b[?25lhidden cursor\x1b[?25h\x1b(B\n", "hidden cursor\n"),  # private CSI, charset selection
    ("no escapes: 100% [====>   ] \\x1b\n", "no escapes: 100% [====>   ] \\x1b\n"),
])
def test_strip_ansi(raw, clean):
    from jobs.runner.executors import strip_ansi

    assert strip_ansi(raw) == clean


def test_child_output_reaches_the_log_without_terminal_escapes():
    """The worker's reader strips escapes as lines arrive, so the log and the failure tail are both clean."""
    from jobs.runner.executors.local import RunningJob

    script = "print('\\x1b[31mred\\x1b[0m and \\x1b]8;;https://x.org\\x07a link\\x1b]8;;\\x07'); print('plain')"
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    entry = RunningJob(0, process)
    entry.start_reader()
    process.wait(timeout=30)
    entry.reader.join(timeout=30)
    assert entry.drain() == "red and a link\nplain\n"
    assert "".join(entry.tail) == "red and a link\nplain\n"


# ---- the executor seam ----------------------------------------------------------------------------------------


class RecordingExecutor(LocalExecutor):
    """The local executor, noting which jobs it was asked to start."""

    started: list[int] = []

    def start(self, job_id):
        RecordingExecutor.started.append(job_id)
        return super().start(job_id)


@dataclass
class FakeHandle:
    job_id: int
    pid: int | None = None
    where: str = "a fake cluster"
    killed: bool = False


class IgnoresCancelExecutor(Executor[FakeHandle]):
    """Runs nothing; each job ignores a polite cancel and ends only when killed, the way a remote job may."""

    calls: list[str] = []

    def start(self, job_id):
        self.calls.append("start")
        queue.request_cancel(job_id)  # the job is now running: a person cancels it at once
        return FakeHandle(job_id)

    def wait(self, handle, timeout):
        return JobEnd(-9, "killed on the fake cluster") if handle.killed else None

    def drain(self, handle):
        return ""

    def cancel(self, handle):
        self.calls.append("cancel")

    def kill(self, handle):
        self.calls.append("kill")
        handle.killed = True


class LostNodeExecutor(Executor[FakeHandle]):
    """Runs nothing; each job ends at once as lost, with a line of output and no process id."""

    def start(self, job_id):
        return FakeHandle(job_id)

    def wait(self, handle, timeout):
        return JobEnd(1, "the node running the job was lost", log_tail="loading model")

    def drain(self, handle):
        return "loading model\n"

    def cancel(self, handle):
        pass

    def kill(self, handle):
        pass


def use_executor(monkeypatch, name: str, cls: type) -> None:
    monkeypatch.setitem(EXECUTORS, name, f"{__name__}:{cls.__name__}")
    monkeypatch.setenv("WORKBENCH_EXECUTOR", name)
    monkeypatch.setenv("WORKBENCH_MLFLOW", "off")


def test_the_worker_runs_jobs_through_the_executor_named_in_the_setting(home, monkeypatch):
    use_executor(monkeypatch, "recording", RecordingExecutor)
    RecordingExecutor.started = []
    jobs = [sleep_job(seconds=0) for _ in range(2)]
    worker = Worker(burst=True, poll_interval=0.05)
    assert isinstance(worker.executor, RecordingExecutor)
    assert worker.run() == 2
    assert sorted(RecordingExecutor.started) == [j.id for j in jobs]
    assert all(queue.get_job(j.id).status is JobStatus.SUCCEEDED for j in jobs)


def test_the_local_executor_is_the_default(monkeypatch):
    monkeypatch.delenv("WORKBENCH_EXECUTOR", raising=False)
    monkeypatch.setenv("WORKBENCH_MLFLOW", "off")
    assert type(Worker().executor) is LocalExecutor


def test_an_unknown_executor_is_refused_naming_the_known_ones(monkeypatch):
    monkeypatch.setenv("WORKBENCH_EXECUTOR", "carrier-pigeon")
    with pytest.raises(InvalidInput, match=r"unknown executor 'carrier-pigeon'; known executors: local\b"):
        Worker()


def test_a_job_that_ends_without_an_outcome_fails_with_its_executors_reason(home, monkeypatch):
    """Nothing in the worker assumes a local process: no pid to record, the reason and output come from the
    executor."""
    use_executor(monkeypatch, "lost-node", LostNodeExecutor)
    job = sleep_job(seconds=0)
    assert Worker(burst=True, poll_interval=0.05).run() == 1
    done = queue.get_job(job.id)
    assert done.status is JobStatus.FAILED and done.pid is None
    assert done.message == "failed: the node running the job was lost"
    assert done.error == "the node running the job was lost\nloading model"
    assert queue.job_log(job.id).startswith("loading model\n")
    assert "the node running the job was lost" in queue.job_log(job.id)


def test_a_cancelled_job_that_ignores_the_cancel_is_killed_after_the_grace_period(home, monkeypatch):
    use_executor(monkeypatch, "ignores-cancel", IgnoresCancelExecutor)
    monkeypatch.setattr(worker_module, "TERMINATE_GRACE_S", 0.0)
    IgnoresCancelExecutor.calls = []
    job = sleep_job(seconds=0)
    assert Worker(burst=True, poll_interval=0.05).run() == 1
    assert IgnoresCancelExecutor.calls == ["start", "cancel", "kill"]
    assert queue.get_job(job.id).status is JobStatus.CANCELLED
