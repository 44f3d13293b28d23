"""The local executor's fork server: job processes forked from a server that imported torch once, run by a real
worker, ending the way a job process started directly ends (success, a raise, a segfault, an exit code, a kill, a
cancel), each with its own environment, directory and random seed; and the plain start where a fork could differ.
"""

from __future__ import annotations

import os
import signal

import psutil
import pytest

from jobs.runner.executors.local import LocalExecutor
from jobs.runner.fork_server import ForkedProcess, import_time_env
from storage import queue
from storage.orm import JobStatus
from tests.conftest import wait_for
from tests.test_worker import finished, sleep_job, worker_in_thread

SERVER_READY_S = 300  # it imports torch and transformers: seconds here, longer on a loaded machine


def _running_forked(worker, job_id: int) -> int:
    """The pid of the job's process once it runs, checked to be a fork server's child."""
    wait_for(lambda: queue.get_job(job_id).progress > 0, what=f"job {job_id} to run")
    handle = worker.running.get(job_id)
    assert handle is not None and isinstance(handle.process, ForkedProcess)
    return queue.get_job(job_id).pid


def _ready_server(worker):
    return wait_for(lambda: worker.executor.fork_server is not None and worker.executor.fork_server.ready
                    and worker.executor.fork_server, timeout=SERVER_READY_S, what="the fork server to be ready")


def test_jobs_fork_from_a_server_with_torch_imported_and_end_as_processes_do(home, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    first = sleep_job(seconds=0)
    with worker_in_thread() as worker:
        assert isinstance(worker.executor, LocalExecutor)
        done = finished(first.id, timeout=120)
        # the first job did not wait for the server: it ran in a process of its own, importing what it needed
        assert done.status is JobStatus.SUCCEEDED and done.result["parent"] == os.getpid()
        assert not done.result["torch_imported"]
        server = _ready_server(worker)

        monkeypatch.setenv("WORKBENCH_TEST_MARK", "set after the server started")  # a run-time setting
        ok, again = sleep_job(seconds=0.2), sleep_job(seconds=0.2)
        raised, crashed, exited = (sleep_job(seconds=0, outcome=o) for o in ("raise", "segfault", "exit"))
        ends = {job.id: finished(job.id) for job in (ok, again, raised, crashed, exited)}

        for job in (ok, again):
            result = ends[job.id].result
            assert ends[job.id].status is JobStatus.SUCCEEDED, ends[job.id]
            assert result["parent"] == server.process.pid and result["torch_imported"]  # forked, torch imported
            assert result["cwd"] == str(tmp_path) and result["mark"] == "set after the server started"
            assert "step 4/4" in queue.job_log(job.id)  # its output reached the log through its pipe
        assert ends[ok.id].result["draw"] != ends[again.id].result["draw"]  # each fork draws its own seed
        assert "RuntimeError: this job was asked to fail" in ends[raised.id].error
        assert "SIGSEGV" in ends[crashed.id].error
        assert "Segmentation fault" in ends[crashed.id].error  # faulthandler wrote to the job's own stderr
        assert "exited with code 3" in ends[exited.id].error

        # kill -9 and a cancel reach the forked process itself, and the worker reports each as before
        killed = sleep_job(seconds=60)
        killed_pid = _running_forked(worker, killed.id)
        assert psutil.Process(killed_pid).ppid() == server.process.pid
        os.kill(killed_pid, signal.SIGKILL)
        assert "killed by SIGKILL" in finished(killed.id).error
        cancelled = sleep_job(seconds=60)
        cancelled_pid = _running_forked(worker, cancelled.id)
        queue.request_cancel(cancelled.id)
        assert finished(cancelled.id, timeout=30).status is JobStatus.CANCELLED
        assert not psutil.pid_exists(cancelled_pid) or psutil.Process(cancelled_pid).status() == psutil.STATUS_ZOMBIE

        # an environment that could change what an import did: that job starts the plain way, and is right
        name, before = "HF_HUB_DISABLE_TELEMETRY", os.environ.get("HF_HUB_DISABLE_TELEMETRY")
        monkeypatch.setenv(name, "0" if before == "1" else "1")
        assert import_time_env({**os.environ}) != import_time_env(server.env)
        plain = finished(sleep_job(seconds=0).id)
        assert plain.status is JobStatus.SUCCEEDED and plain.result["parent"] == os.getpid()
        assert not plain.result["torch_imported"]
        if before is None:
            monkeypatch.delenv(name)
        else:
            monkeypatch.setenv(name, before)

        # a server that dies takes its running job with it (as a worker's death does), and the next one is started
        running = sleep_job(seconds=60)
        _running_forked(worker, running.id)
        server.process.kill()
        assert "killed by SIGKILL" in finished(running.id).error
        after = finished(sleep_job(seconds=0).id)
        assert after.status is JobStatus.SUCCEEDED and after.result["parent"] == os.getpid()
        assert worker.executor.fork_server is not server and worker.executor.fork_server is not None
        replacement = worker.executor.fork_server.process
    # the worker's stop ends its server
    assert replacement.wait(timeout=30) is not None


def test_the_fork_server_can_be_turned_off_and_a_wrong_setting_stops_the_worker_at_start(home, monkeypatch):
    from jobs.runner.worker import Worker
    from storage.errors import InvalidInput

    monkeypatch.setenv("WORKBENCH_FORK_SERVER", "off")
    jobs = [sleep_job(seconds=0) for _ in range(2)]
    worker = Worker(burst=True, poll_interval=0.05)
    assert worker.run() == 2 and worker.executor.fork_server is None
    for job in jobs:
        result = queue.get_job(job.id).result
        assert result["parent"] == os.getpid() and not result["torch_imported"]
    monkeypatch.setenv("WORKBENCH_FORK_SERVER", "sometimes")
    with pytest.raises(InvalidInput, match="WORKBENCH_FORK_SERVER='sometimes': use on or off"):
        Worker(burst=True)


def test_a_long_running_worker_starts_its_fork_server_before_its_first_job(home):
    """`workbench worker` (and the worker `serve` starts) waits for jobs: its fork server starts with it, so even
    its first job is forked once the server has imported; a burst worker starts one only with its first job."""
    from tests.test_worker import start_worker_process

    worker = start_worker_process()
    try:
        process = psutil.Process(worker.pid)

        def fork_server() -> psutil.Process | None:
            return next((p for p in process.children() if "jobs.runner.fork_server" in " ".join(p.cmdline())), None)

        server = wait_for(fork_server, timeout=60, what="the worker's fork server, before any job is queued")

        def forked_job():  # jobs claimed while it imports start the plain way; then they fork from it
            result = finished(sleep_job(seconds=0).id, timeout=120).result
            return result if result["parent"] != worker.pid else None

        result = wait_for(forked_job, timeout=SERVER_READY_S, what="a job forked from the warm server")
        assert result["parent"] == server.pid and result["torch_imported"]
    finally:
        worker.terminate()
        worker.wait(timeout=60)
    assert not psutil.pid_exists(server.pid) or server.status() == psutil.STATUS_ZOMBIE
