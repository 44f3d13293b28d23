"""What running a job as a Ray task costs against running it as a local child process: the same short jobs
(tests/support/kinds.py's `test-sleep` with seconds=0, so a job's time is the executor's and the job process's
start-up) through a burst worker with each executor, in alternating rounds in the same run, so both see the same
minutes of the same machine.

    .venv/bin/python benchmarks/ray_executor_overhead.py [--jobs 20] [--rounds 2]

Starts a one-node Ray cluster on this machine (tests/support/ray_cluster.py) and stops it at the end. Per job it
reports the time from claim to the job's recorded end (the database's started_at and finished_at), and the
worker's wall time per job; the ratio is Ray over local. Connecting to the cluster is counted apart (once per
worker, not per job). Prints the CPU model and the machine's load, since a busy machine slows both.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def run_round(executor: str, jobs: int) -> tuple[list[float], float, float]:
    """Per-job seconds (claim to recorded end), the burst worker's wall seconds, and its start-up seconds."""
    from jobs.runner.submit import submit
    from jobs.runner.worker import Worker
    from storage import queue

    os.environ["WORKBENCH_EXECUTOR"] = executor
    submitted = [submit("test-sleep", {"seconds": 0}) for _ in range(jobs)]
    t0 = time.perf_counter()
    worker = Worker(burst=True, poll_interval=0.02)  # the Ray executor connects to the cluster here
    t1 = time.perf_counter()
    processed = worker.run()
    t2 = time.perf_counter()
    done = [queue.get_job(j.id) for j in submitted]
    if processed != jobs or any(j.status.value != "succeeded" for j in done):
        raise SystemExit(f"{executor}: not every job succeeded: {[(j.id, j.status.value, j.error) for j in done]}")
    return [(j.finished_at - j.started_at).total_seconds() for j in done], t2 - t1, t1 - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=20, help="jobs per executor (split over the rounds)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating local / ray rounds")
    args = parser.parse_args()

    os.environ.update({"WORKBENCH_HOME": tempfile.mkdtemp(prefix="ray-overhead-"), "WORKBENCH_MLFLOW": "off",
                       "WORKBENCH_PLUGINS": "tests.support.kinds", "WORKBENCH_RAY_CPUS": "1",
                       "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))})
    import psutil

    from jobs.runtimes.devices import cpu_info
    from storage import db
    from tests.support.ray_cluster import RayCluster

    db.upgrade()
    load_before = os.getloadavg()
    started = time.perf_counter()
    cluster = RayCluster(cpus_per_node=1).start(tier=1)
    cluster_start_s = time.perf_counter() - started
    os.environ["RAY_ADDRESS"] = cluster.address
    per_job: dict[str, list[float]] = {"local": [], "ray": []}
    wall: dict[str, float] = {"local": 0.0, "ray": 0.0}
    connect: list[float] = []
    psutil.cpu_percent()
    try:
        for _ in range(args.rounds):
            for executor in ("local", "ray"):
                durations, wall_s, startup_s = run_round(executor, args.jobs // args.rounds)
                per_job[executor] += durations
                wall[executor] += wall_s
                if executor == "ray":
                    connect.append(startup_s)
    finally:
        cluster.stop()
    busy = psutil.cpu_percent()
    info = cpu_info()
    count = {name: len(values) for name, values in per_job.items()}
    print(f"CPU: {info['cpu']} ({info['cpu_count']} cores); load average before {load_before[0]:.2f}, "
          f"after {os.getloadavg()[0]:.2f}; CPU busy {busy:.0f}% over the run")
    print(f"Ray cluster (1 node) started in {cluster_start_s:.1f} s; a worker connects to it in "
          f"{statistics.median(connect):.2f} s (median of {len(connect)})")
    for name in ("local", "ray"):
        values = per_job[name]
        print(f"{name:5}: per job, claim to recorded end: median {statistics.median(values):.3f} s, "
              f"p90 {statistics.quantiles(values, n=10)[-1]:.3f} s; worker wall time per job "
              f"{wall[name] / count[name]:.3f} s ({count[name]} jobs)")
    ratio = statistics.median(per_job["ray"]) / statistics.median(per_job["local"])
    wall_ratio = (wall["ray"] / count["ray"]) / (wall["local"] / count["local"])
    print(f"ratio ray / local: {ratio:.2f}x per job (median), {wall_ratio:.2f}x worker wall time per job")
    if os.getloadavg()[0] > (os.cpu_count() or 1) * 0.5 or load_before[0] > (os.cpu_count() or 1) * 0.5:
        print("note: the machine was busy with other work during the run; both executors were slowed")


if __name__ == "__main__":
    main()
