"""The Ray executor on a real two-node Ray cluster started on this machine (tests/support/ray_cluster.py): node_a
advertises the custom resource (hardware class) node_a, node_b node_b. Real `workbench worker --executor ray`
processes claim from the queue and run real job processes as Ray tasks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile

import psutil
import pytest

from jobs import api
from jobs.runner.params import RAN_ON, parse_params
from jobs.runner.submit import submit
from storage import queue
from storage.errors import InvalidInput
from storage.orm import JobStatus
from tests.conftest import REPO, free_port, run_cli, wait_for
from tests.support.kinds import SleepParams
from tests.support.ray_cluster import RayCluster, ray_available
from workbench.cluster_view import cluster_text

RAY_MISSING = ray_available()


@pytest.fixture(scope="module")
def cluster():
    if RAY_MISSING:
        pytest.skip(RAY_MISSING)
    cluster = RayCluster(cpus_per_node=1).start(node_a=1)
    try:
        cluster.add_node(node_b=1)
        cluster.wait_for_nodes(2)
        yield cluster
    finally:
        cluster.stop()


def ray_worker(cluster: RayCluster, *args: str, env: dict | None = None) -> subprocess.Popen:
    output = tempfile.TemporaryFile()  # a file, not a pipe: a chatty worker never blocks on a full pipe
    worker = subprocess.Popen(
        [sys.executable, "-m", "workbench", "worker", "--executor", "ray", *args],
        cwd=REPO,
        env={**os.environ, "RAY_ADDRESS": cluster.address, "WORKBENCH_HEARTBEAT_S": "0.5", **(env or {})},
        stdout=output,
        stderr=subprocess.STDOUT,
    )
    worker.output = output
    return worker


def stop(worker: subprocess.Popen) -> str:
    """Stop the worker (if it still runs) and return what it printed."""
    if worker.poll() is None:
        worker.terminate()
    worker.wait(timeout=60)
    worker.output.seek(0)
    return worker.output.read().decode(errors="replace")


def burst(*workers: subprocess.Popen) -> None:
    """Wait for burst workers to empty the queue and exit cleanly; none outlives the test."""
    try:
        for worker in workers:
            worker.wait(timeout=300)
    finally:
        outputs = [stop(worker) for worker in workers]
    for worker, output in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, output


def finished(job_id: int, timeout: float = 90):
    return wait_for(lambda: (j := queue.get_job(job_id)).status.finished and j, timeout=timeout,
                    what=f"job {job_id} to finish")


def ran_on(job_id: int, other_than: int | None = None) -> dict:
    """Where the job's current run runs (its Ray task notes it), once its job process has made progress."""
    def placed():
        job = queue.get_job(job_id)
        where = job.params.get(RAN_ON)
        return where if where and where["pid"] != other_than and job.progress > 0 else None

    return wait_for(placed, timeout=90, what=f"job {job_id} to run on a node")


def job_process_of(where: dict) -> psutil.Process:
    """The job process a Ray worker process runs (`python -m jobs.runner.child ID ...`)."""
    return next(p for p in psutil.Process(where["pid"]).children() if "jobs.runner.child" in p.cmdline())


def cluster_status() -> dict:
    return json.loads(run_cli("cluster", "status", "--json").stdout)


def node_of(status: dict, hardware_class: str) -> str:
    return next(n["node_id"] for n in status["nodes"] if hardware_class in n["hardware_classes"])


def test_a_hardware_class_rides_with_any_kind_and_only_a_placing_worker_claims_it(home):
    job = submit("test-sleep", {"seconds": 0, "hardware_class": "node_a"})
    assert job.params["hardware_class"] == "node_a"
    assert parse_params(SleepParams, job.params) == SleepParams(seconds=0)  # the kind never sees it
    with pytest.raises(InvalidInput, match="is not a hardware class"):
        submit("test-sleep", {"hardware_class": "GPU"})
    with pytest.raises(InvalidInput, match="is not a hardware class"):
        submit("test-sleep", {"hardware_class": "two words"})
    plain = submit("test-sleep", {"seconds": 0})
    # a local worker cannot place a job on a hardware class: it takes the plain job and leaves the other queued
    assert queue.claim_next("local", ["cpu"]).id == plain.id
    assert queue.claim_next("local", ["cpu"]) is None
    assert queue.claim_next("ray", ["cpu"], hardware_classes=True).id == job.id


@pytest.mark.skipif(RAY_MISSING is not None, reason=str(RAY_MISSING))
def test_a_ray_task_rerun_after_the_job_ended_or_changed_hands_runs_nothing(home, tmp_path):
    """What makes Ray's retries safe beside the final-transaction rule: a rerun of a task whose job already
    committed its outcome (or was swept and taken by another worker) starts no job process."""
    from jobs.runner.executors.ray import run_on_node

    marker = tmp_path / "runs"
    marker.mkdir()
    job = submit("test-sleep", {"seconds": 0, "marker": str(marker)})
    queue.claim_next("ray-worker", ["cpu"])
    assert queue.finish(job.id, JobStatus.SUCCEEDED, worker_id="ray-worker")
    assert run_on_node(job.id, "ray-worker")["reason"] == "not run again: the job is succeeded"
    other = submit("test-sleep", {"seconds": 0, "marker": str(marker)})
    queue.claim_next("another-worker", ["cpu"])
    assert run_on_node(other.id, "ray-worker")["reason"] == \
        "not run again: the job is running (held by worker another-worker)"
    assert list(marker.iterdir()) == [] and queue.job_log(job.id) == "" and RAN_ON not in queue.get_job(other.id).params


@pytest.mark.skipif(RAY_MISSING is not None, reason=str(RAY_MISSING))
def test_a_ray_worker_without_a_cluster_says_so_at_once(home, monkeypatch):
    from jobs.runner.worker import Worker

    monkeypatch.setenv("WORKBENCH_EXECUTOR", "ray")
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{free_port()}")  # nothing listens there
    with pytest.raises(InvalidInput, match=r"no Ray cluster answers at 127\.0\.0\.1:\d+ .*`ray start --head`"):
        Worker()


def test_jobs_land_on_the_node_of_the_hardware_class_they_name(home, cluster, tmp_path):
    marker = tmp_path / "runs"
    marker.mkdir()
    named = {cls: [submit("test-sleep", {"seconds": 0.2, "marker": str(marker), "hardware_class": cls})
                   for _ in range(2)] for cls in ("node_a", "node_b")}
    nowhere = submit("test-sleep", {"seconds": 0, "hardware_class": "node_c"})
    needs_gpu = queue.enqueue("test-sleep", {}, device="cuda")
    burst(ray_worker(cluster, "--burst", "--concurrency", "2"))
    assert queue.get_job(needs_gpu.id).status is JobStatus.QUEUED  # no node has a GPU: left for a cluster with one
    status = cluster_status()
    assert {cls for n in status["nodes"] for cls in n["hardware_classes"]} == {"node_a", "node_b"}
    assert all(n["alive"] and n["resources"]["CPU"] == 1 for n in status["nodes"])
    for cls, jobs in named.items():
        for job in jobs:
            done = queue.get_job(job.id)
            assert done.status is JobStatus.SUCCEEDED, done.error
            assert done.params[RAN_ON]["node_id"] == node_of(status, cls)
            assert done.params[RAN_ON]["hardware_class"] == cls
            log = queue.job_log(job.id)
            assert "[ray] running on node" in log and "step 4/4" in log  # its output reached its log
    assert len(list(marker.iterdir())) == 4
    failed = queue.get_job(nowhere.id)
    # Ray would keep a task no node can take pending for ever: the job fails at once, saying why
    assert failed.status is JobStatus.FAILED
    assert "has hardware class 'node_c' (classes there: node_a, node_b)" in failed.error


def test_cancel_stops_the_ray_task_and_cluster_status_shows_what_runs_where(home, cluster):
    job = submit("test-sleep", {"seconds": 60, "hardware_class": "node_b"})
    worker = ray_worker(cluster)
    try:
        where = ran_on(job.id)
        job_process = job_process_of(where)
        status = api.cluster_status(cluster.address)  # what `workbench cluster status` prints (tested above)
        node = next(n for n in status.nodes if n.node_id == where["node_id"])
        assert node.hardware_classes == ["node_b"] and [j.id for j in node.jobs] == [job.id]
        text = cluster_text(status)
        assert "2 node(s) alive, 2 CPUs, 0 GPUs" in text
        assert f"node {node.node_id[:12]} ({node.ip}, {node.hostname}) alive: CPU 1, GPU 0, memory " in text
        assert f"hardware classes: node_b\n  job {job.id} test-sleep: " in text
        queue.request_cancel(job.id)
        done = finished(job.id, timeout=30)
        assert done.status is JobStatus.CANCELLED
        psutil.wait_procs([job_process], timeout=10)
        assert not job_process.is_running() or job_process.status() == psutil.STATUS_ZOMBIE
        assert done.duration_s < 30  # stopped, not run to its end
    finally:
        stop(worker)


def test_a_lost_ray_worker_is_retried_then_the_job_succeeds_or_fails_with_rays_reason(home, cluster, tmp_path):
    marker = tmp_path / "runs"
    marker.mkdir()
    survives = submit("test-sleep", {"seconds": 3, "marker": str(marker), "hardware_class": "node_a"})
    lost = submit("test-sleep", {"seconds": 60, "hardware_class": "node_b"})
    worker = ray_worker(cluster, "--concurrency", "2", env={"WORKBENCH_RAY_MAX_RETRIES": "1"})
    try:
        first_a, first_b = ran_on(survives.id), ran_on(lost.id)
        first_job_process = job_process_of(first_a)
        os.kill(first_a["pid"], signal.SIGKILL)  # the Ray worker process running the job
        os.kill(first_b["pid"], signal.SIGKILL)
        second_b = ran_on(lost.id, other_than=first_b["pid"])  # Ray's one retry
        os.kill(second_b["pid"], signal.SIGKILL)
        done = finished(survives.id)
        failed = finished(lost.id)
    finally:
        stop(worker)
    # the job process died with its Ray worker, and the retry ran the job again to its end, once more
    assert not first_job_process.is_running() or first_job_process.status() == psutil.STATUS_ZOMBIE
    assert done.status is JobStatus.SUCCEEDED and done.attempts == 1, done.error
    assert len(list(marker.iterdir())) == 2
    assert queue.job_log(survives.id).count("[ray] running on node") == 2
    # out of retries: failed with Ray's reason, not left running
    assert failed.status is JobStatus.FAILED
    assert "its Ray task failed after 1 retry: WorkerCrashedError" in failed.error
    assert failed.message.startswith("failed: its Ray task failed")


def test_twenty_jobs_and_two_ray_workers_run_each_job_exactly_once(home, cluster, tmp_path):
    marker = tmp_path / "runs"
    marker.mkdir()
    jobs = [submit("test-sleep", {"seconds": 0.05, "marker": str(marker)}) for _ in range(20)]
    # each worker holds two jobs at once, more than the cluster's two CPUs run: the workers race for the queue
    burst(*[ray_worker(cluster, "--burst", "--concurrency", "2") for _ in range(2)])
    runs = sorted(p.name.split("-")[0] for p in marker.iterdir())
    assert runs == sorted(f"job{j.id}" for j in jobs)  # each job ran exactly once
    done = [queue.get_job(j.id) for j in jobs]
    assert all(j.status is JobStatus.SUCCEEDED and j.attempts == 1 for j in done)
    assert all(j.params[RAN_ON]["executor"] == "ray" for j in done)
