"""The wizard's pipeline end to end through the Ray executor, on a one-node Ray cluster and then on a two-node one,
in the same run: the quick trial of the built-in MiniLM on the built-in tweet sentiment (as benchmarks/
wizard_trial.py launches it), one `workbench worker --executor ray --concurrency 2` per cluster.

    .venv/bin/python benchmarks/ray_wizard_pipeline.py [--home DIR] [--order 1,2]

Both clusters are started on this machine by the script (tests/support/ray_cluster.py: loopback traffic, free
ports, stopped by process id at the end). Every node offers 1 CPU and each job asks for 1 (WORKBENCH_RAY_CPUS), so
one node runs one job at a time and two nodes run two. The worker claims up to two jobs either way; on one node
the second waits in Ray for the first to end.

What this can show, and what it cannot: on a machine with two cores, two "nodes" are two slots on the same two
cores, not more hardware. The gain it can show is the pipeline's parallel branches (the baseline's evaluation
beside the fine-tune, a variant's evaluation beside the next step) running at once instead of one after the
other; steps that depend on each other take as long on two nodes as on one, and two jobs at once share the same
cores and memory bandwidth. Ray gives a task with 1 CPU OMP_NUM_THREADS=1 unless it is set, so each job computes
on one thread either way; what a second real machine would add (its own cores, its own memory) is not measured.
Prints the CPU model and flags, the load before, during and after, per-run wall time, each job's node and time
span, and the ratio (one node over two).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TIMEOUT_S = 1800  # one pipeline; the quick trial takes minutes here


def cpu_line() -> str:
    from jobs.runtimes.devices import cpu_info

    info = cpu_info()
    return f"{info['cpu']}, {info['cpu_count']} cores, flags: {' '.join(info['cpu_flags']) or 'none of interest'}"


def launch(model_id: int, dataset_id: int):
    from jobs import api

    recipe = api.recommend_recipe(model_id, dataset_id, speedup=2.0, quick=True)
    return recipe, api.launch_recipe(recipe)


def fresh_home(root: Path, nodes: int) -> tuple[int, int]:
    """A new data directory with the built-in model and dataset: each run starts as a new user's would (in one
    directory the wizard would start the second run from the first run's fine-tuned variant)."""
    from jobs import api
    from storage import db

    os.environ["WORKBENCH_HOME"] = str(root / f"{nodes}-nodes")
    db.dispose_all()
    db.upgrade()
    api.add_model(api.ModelRequest("builtin:minilm-l6"))
    api.add_dataset(api.DatasetRequest("builtin:tweet-sentiment"))
    return api.list_models()[-1].id, api.list_datasets()[-1].id


def run_on(nodes: int, root: Path) -> dict:
    """Start a cluster of `nodes` one-CPU nodes, run the quick trial through a Ray worker, stop the cluster."""
    import psutil

    from jobs import api
    from storage import queue
    from tests.support.ray_cluster import RayCluster

    model_id, dataset_id = fresh_home(root, nodes)
    started = time.perf_counter()
    cluster = RayCluster(cpus_per_node=1).start(node1=1)
    try:
        for n in range(2, nodes + 1):
            cluster.add_node(**{f"node{n}": 1})
        cluster.wait_for_nodes(nodes)
        cluster_s = time.perf_counter() - started
        load_before = os.getloadavg()[0]
        psutil.cpu_percent()
        t0 = time.perf_counter()
        recipe, launched = launch(model_id, dataset_id)
        worker = subprocess.run(
            [sys.executable, "-m", "workbench", "worker", "--executor", "ray", "--burst", "--concurrency", "2"],
            cwd=REPO, env={**os.environ, "RAY_ADDRESS": cluster.address}, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, timeout=TIMEOUT_S)
        wall_s = time.perf_counter() - t0
        busy = psutil.cpu_percent()
        load_after = os.getloadavg()[0]
    finally:
        cluster.stop()
    jobs = queue.pipeline_jobs(launched.pipeline)
    if worker.returncode != 0 or any(j.status.value != "succeeded" for j in jobs):
        print(worker.stdout[-3000:])
        raise SystemExit(f"{nodes} node(s): not every job succeeded: "
                         f"{[(j.id, j.kind, j.status.value, (j.error or '')[-300:]) for j in jobs]}")
    first = min(j.started_at for j in jobs)
    span_s = (max(j.finished_at for j in jobs) - first).total_seconds()
    progress = api.wizard_progress(launched.pipeline, launched.goal)
    return {"nodes": nodes, "cluster_s": cluster_s, "wall_s": wall_s, "span_s": span_s, "jobs": jobs,
            "first": first, "load": (load_before, load_after), "busy": busy, "verdict": progress.message,
            "steps": " -> ".join(s.kind for s in recipe.steps)}


def report(run: dict) -> None:
    from jobs.runner.params import RAN_ON

    before, after = run["load"]
    print(f"\n{run['nodes']} node(s): wall {run['wall_s']:.0f} s (launch to the worker's exit), first job start to "
          f"last job end {run['span_s']:.0f} s; cluster started in {run['cluster_s']:.0f} s (not counted); load "
          f"average {before:.2f} -> {after:.2f}, CPU busy {run['busy']:.0f}% over the run")
    print(f"  recipe: {run['steps']} (and the evaluations it queues); {run['verdict']}")
    print("  (a job is claimed when a slot may be free; on one node a claimed job can wait in Ray for the node)")
    nodes: dict[str, str] = {}
    for job in run["jobs"]:
        node = (job.params.get(RAN_ON) or {}).get("node_id", "?")
        name = nodes.setdefault(node, f"node {len(nodes) + 1}")
        start = (job.started_at - run["first"]).total_seconds()
        print(f"  job {job.id:3d} {job.kind:10s} on {name}: claimed at {start:6.1f} s, ended at "
              f"{start + job.duration_s:6.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", help="folder for the runs' data directories (default: a new temporary one)")
    parser.add_argument("--order", default="1,2", help="node counts in the order they run (default 1,2)")
    args = parser.parse_args()
    root = Path(args.home or tempfile.mkdtemp(prefix="ray-wizard-"))
    os.environ.update({"WORKBENCH_MLFLOW": "off", "WORKBENCH_RAY_CPUS": "1",
                       "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))})
    os.environ.pop("RAY_ADDRESS", None)
    print(f"CPU: {cpu_line()}; load average now {' '.join(f'{x:.2f}' for x in os.getloadavg())}; data under {root}")
    runs = [run_on(int(n), root) for n in args.order.split(",")]
    for run in runs:
        report(run)
    by_nodes = {r["nodes"]: r for r in runs}
    if 1 in by_nodes and 2 in by_nodes:
        one, two = by_nodes[1], by_nodes[2]
        print(f"\nratio one node / two nodes: {one['wall_s'] / two['wall_s']:.2f}x wall, "
              f"{one['span_s'] / two['span_s']:.2f}x first start to last end")
    print("Two nodes here are two job slots on the same cores: only the pipeline's parallel branches can gain; "
          "what a second machine's own cores and memory would add is not measured.")
    if max(max(r["load"]) for r in runs) > (os.cpu_count() or 1) * 0.5:
        print("note: the machine was busy with other work during the runs; both were slowed, not equally")


if __name__ == "__main__":
    main()
