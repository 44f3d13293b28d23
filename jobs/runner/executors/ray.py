"""The Ray executor: each claimed job runs as a Ray task on a node of an existing Ray cluster
(`WORKBENCH_EXECUTOR=ray`, `RAY_ADDRESS`; `ray` is imported only when this executor is chosen).

The task runs the same job process as the local executor (`python -m jobs.runner.child ID PARENT`), on the node
Ray picks for what the job needs: WORKBENCH_RAY_CPUS CPUs, one GPU for a cuda job, and, when the job names a
hardware class (params `hardware_class`), a sliver of the custom resource of that name. A node advertises its class
with `ray start --resources='{"avx512": 1}'`; asking HARDWARE_CLASS_SHARE of it pins the job there without
limiting how many jobs the node runs at once (its CPUs do that).

On the node the task writes the job's output into the job's log as it comes and notes the node in the job's params
(`ran_on`), so the worker needs no view of the node; the job process writes its progress and outcome itself. Both
therefore need the worker's database and data directory: the worker passes WORKBENCH_HOME, WORKBENCH_DB_URL and the
other workbench settings in the tasks' runtime environment (on a cluster of several machines that means
PostgreSQL and a shared WORKBENCH_HOME; SQLite works only where every node is this machine).

Retries are Ray's: when the task's worker process or node is lost (the job process dies with it, as it dies with
a local worker), Ray runs the task again up to WORKBENCH_RAY_MAX_RETRIES times, and after that the worker fails the
job with Ray's reason. A rerun cannot duplicate anything: the job process commits what it made in its final
transaction only while the job is still running for this worker (jobs/runner/child.py), and a task that finds the
job already ended (its earlier run committed just before the node was lost) runs nothing. Cancel is `ray.cancel`:
first politely (the task stops the job process), after the worker's grace period with force=True (Ray kills the
task's worker process, and the job process dies with it); Ray never retries a cancelled task.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import RayError, TaskCancelledError

from jobs.runner.executors import Executor, JobEnd
from jobs.runner.executors.local import (
    LOG_TAIL_LINES,
    READER_JOIN_S,
    RunningJob,
    describe_exit,
    oom_kills,
    spawn_child,
)
from jobs.runner.params import HARDWARE_CLASS
from storage import queue, settings
from storage.errors import InvalidInput
from storage.orm import JobStatus

NAMESPACE = "workbench"
CONNECT_TIMEOUT_S = 10.0
# how much of its hardware-class resource a job asks for: enough to need a node that has it, small enough that
# a node advertising 1 takes any number of such jobs at once
HARDWARE_CLASS_SHARE = 0.001
# how often the task moves the job process's output into the job's log (one insert per move, not per line)
LOG_FLUSH_S = 0.5
# after a polite cancel, how long the job process may take to stop before the task kills it
TERMINATE_WAIT_S = 5.0
# settings that stay on the worker's machine: accounts and API keys are no business of a cluster node
PRIVATE_SETTINGS = {"WORKBENCH_AUTH", "WORKBENCH_VIEWERS", "WORKBENCH_SERVING_API_KEYS", "RAY_ADDRESS"}
# what else a job process needs to find the same code and offline caches as it would on the worker's machine
FORWARDED_ENV = ("PYTHONPATH", "HF_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def connect(address: str, **init_args: Any) -> None:
    """Connect this process to the Ray cluster at `address` ("host:port" of its head, or "auto": one started on
    this machine), or raise InvalidInput saying why not. Nothing listening there fails at once, where ray.init
    would keep retrying for minutes."""
    if address != "auto":
        host, _, port = address.split("://")[-1].rpartition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S):
                pass
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"no Ray cluster answers at {address} ({exc}): start one with `ray start --head` "
                               "and set RAY_ADDRESS to the address it prints") from None
    try:
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=False, logging_level=logging.WARNING,
                 **init_args)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
        raise InvalidInput(f"no Ray cluster at {address} ({describe_ray_error(exc)}): start one with "
                           "`ray start --head` and set RAY_ADDRESS to the address it prints") from None


def job_environment() -> dict[str, str]:
    """The variables a job needs on any node: the workbench settings set here, with the data directory and the
    database made absolute (a node's working directory is not the worker's)."""
    env = {name: os.environ[name] for name in settings.SETTINGS if name in os.environ and name not in PRIVATE_SETTINGS}
    env.update({name: os.environ[name] for name in FORWARDED_ENV if name in os.environ})
    env["WORKBENCH_HOME"] = str(settings.home())
    env["WORKBENCH_DB_URL"] = settings.db_url()
    return env


# ---- on the node ------------------------------------------------------------------------------------------------


def run_on_node(job_id: int, worker_id: str) -> dict[str, Any]:
    """The Ray task: run job `job_id` for worker `worker_id` in a job process on this node and say how it ended.

    A plain module-level function, so Ray ships it by reference and a node imports this module to run it.
    """
    job = queue.get_job(job_id)
    # a rerun after the job ended (its final transaction committed, then the node was lost) or after another
    # worker took it over runs nothing
    if job.status is not JobStatus.RUNNING or job.worker_id != worker_id:
        return _not_run(job)
    context = ray.get_runtime_context()
    where = {
        "executor": "ray",
        "node_id": context.get_node_id(),
        "node_ip": ray.util.get_node_ip_address(),
        "hostname": socket.gethostname(),
        "pid": os.getpid(),  # the Ray worker process; the job process is its child and dies with it
        "task_id": context.get_task_id(),
    }
    if job.params.get(HARDWARE_CLASS):
        where[HARDWARE_CLASS] = job.params[HARDWARE_CLASS]
    if not queue.record_ran_on(job_id, worker_id, where):  # it ended or changed hands a moment ago
        return _not_run(queue.get_job(job_id))
    queue.append_log(job_id, f"[ray] running on node {where['node_id'][:12]} ({where['node_ip']}, "
                             f"{where['hostname']}) in Ray worker process {os.getpid()}\n")
    oom_at_start = oom_kills()
    # it dies with this Ray worker process (ray.cancel(force=True), a lost worker process)
    process = spawn_child(job_id)
    output = RunningJob(job_id, process)
    output.start_reader()
    try:
        while True:
            try:
                returncode = process.wait(timeout=LOG_FLUSH_S)
                break
            except subprocess.TimeoutExpired:
                queue.append_log(job_id, output.drain())
    except BaseException:  # ray.cancel (KeyboardInterrupt in this task): stop the job process, then let Ray end
        _stop(process)
        _last_output(job_id, output)
        raise
    _last_output(job_id, output)
    return {"exit_status": returncode, "reason": describe_exit(returncode, oom_at_start, oom_kills()),
            "log_tail": "".join(output.tail).strip()}


def _not_run(job) -> dict[str, Any]:
    held = f" (held by worker {job.worker_id})" if job.status is JobStatus.RUNNING else ""
    return {"exit_status": 0, "reason": f"not run again: the job is {job.status.value}{held}", "log_tail": ""}


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=TERMINATE_WAIT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _last_output(job_id: int, output: RunningJob) -> None:
    if output.reader is not None:
        output.reader.join(timeout=READER_JOIN_S)
    queue.append_log(job_id, output.drain())


# ---- on the worker -----------------------------------------------------------------------------------------------


@dataclass
class RayJob:
    """A job's Ray task: the Ray executor's handle."""

    job_id: int
    task: ray.ObjectRef | None  # None when it could not be placed at all (`ended` says why)
    hardware_class: str | None = None
    ended: JobEnd | None = None

    @property
    def pid(self) -> None:
        return None  # its processes are on a cluster node: the task records them in the job's `ran_on`

    @property
    def where(self) -> str:
        on = f"on a node of hardware class {self.hardware_class}" if self.hardware_class else "on any node"
        return f"Ray task workbench-job-{self.job_id} {on}"


def describe_ray_error(exc: BaseException) -> str:
    """Ray's reason in one line: the exception's name and the first line of what it says."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


class RayExecutor(Executor[RayJob]):
    """Runs each job as a Ray task on the cluster at RAY_ADDRESS; this process is the tasks' Ray driver."""

    places_hardware_classes = True

    def __init__(self) -> None:
        self.address = settings.get("RAY_ADDRESS") or "auto"
        self.max_retries = settings.get("WORKBENCH_RAY_MAX_RETRIES")
        self.cpus = settings.get("WORKBENCH_RAY_CPUS")
        if self.max_retries < 0 or self.cpus <= 0:
            raise InvalidInput("WORKBENCH_RAY_MAX_RETRIES must be at least 0 and WORKBENCH_RAY_CPUS above 0")
        self._connected_here = False
        if not ray.is_initialized():
            connect(self.address, runtime_env={"env_vars": job_environment()})
            self._connected_here = True
        self._task = ray.remote(run_on_node)

    def claimable_devices(self, local_devices: list[str]) -> list[str]:
        return ["cpu", "cuda"] if ray.cluster_resources().get("GPU", 0) >= 1 else ["cpu"]

    def _unplaceable(self, hardware_class: str | None, gpus: int) -> str | None:
        """Why no node of the cluster can take the job now, or None. Checked first, because Ray would keep a task
        no node can take pending for ever (the job would look running)."""
        offered = ray.cluster_resources()
        if hardware_class and offered.get(hardware_class, 0) < HARDWARE_CLASS_SHARE:
            custom = sorted(k for k in offered if k not in ("CPU", "GPU", "memory", "object_store_memory")
                            and not k.startswith(("node:", "accelerator_type:")))
            return (f"no node of the Ray cluster at {self.address} has hardware class {hardware_class!r} "
                    f"(classes there: {', '.join(custom) or 'none'}); a node offers one with "
                    f"`ray start --resources='{{\"{hardware_class}\": 1}}'`")
        if gpus and offered.get("GPU", 0) < gpus:
            return f"no node of the Ray cluster at {self.address} has a GPU for this cuda job"
        if offered.get("CPU", 0) < self.cpus:
            return f"no node of the Ray cluster at {self.address} has {self.cpus:g} CPUs (WORKBENCH_RAY_CPUS)"
        return None

    def start(self, job_id: int) -> RayJob:
        job = queue.get_job(job_id)
        hardware_class = job.params.get(HARDWARE_CLASS) or None
        gpus = 1 if job.device == "cuda" else 0
        why_not = self._unplaceable(hardware_class, gpus)
        if why_not is not None:
            return RayJob(job_id, None, hardware_class, ended=JobEnd(1, why_not))
        task = self._task.options(
            name=f"workbench-job-{job_id}",
            num_cpus=self.cpus,
            num_gpus=gpus,
            resources={hardware_class: HARDWARE_CLASS_SHARE} if hardware_class else {},
            max_retries=self.max_retries,
            retry_exceptions=False,  # a job's own errors are recorded by its job process, never rerun
        ).remote(job_id, job.worker_id)
        return RayJob(job_id, task, hardware_class)

    def wait(self, handle: RayJob, timeout: float | None) -> JobEnd | None:
        if handle.ended is not None:
            return handle.ended
        ready, _ = ray.wait([handle.task], timeout=timeout)
        if not ready:
            return None
        try:
            outcome = ray.get(handle.task)
        except TaskCancelledError:
            handle.ended = JobEnd(1, "its Ray task was cancelled")
        except RayError as exc:
            retried = f" after {self.max_retries} {'retry' if self.max_retries == 1 else 'retries'}" \
                if self.max_retries else ""
            tail = queue.log_tail(handle.job_id, 4000).text.splitlines()[-LOG_TAIL_LINES:]
            handle.ended = JobEnd(1, f"its Ray task failed{retried}: {describe_ray_error(exc)}", "\n".join(tail))
        else:
            handle.ended = JobEnd(outcome["exit_status"], outcome["reason"], outcome["log_tail"])
        return handle.ended

    def drain(self, handle: RayJob) -> str:
        return ""  # the task writes the job's output into its log itself, from the node

    def cancel(self, handle: RayJob) -> None:
        if handle.task is not None and handle.ended is None:
            ray.cancel(handle.task, force=False)

    def kill(self, handle: RayJob) -> None:
        if handle.task is not None and handle.ended is None:
            ray.cancel(handle.task, force=True)

    def close(self) -> None:
        if self._connected_here:
            ray.shutdown()
            self._connected_here = False
