"""What the fork server saves per job: the same evaluate jobs (the built-in MiniLM, fine-tuned briefly, on 32 texts of
a toy dataset) run
by a burst worker with WORKBENCH_FORK_SERVER off and on, in alternating rounds in the same run, so both see the same
minutes of the same machine.

    .venv/bin/python benchmarks/job_start.py [--jobs 6] [--rounds 2]

Per job it reports the time from claim to the job's recorded end (the database's started_at and finished_at), for
jobs started the plain way (`python -m jobs.runner.child`, which imports torch and transformers itself) and jobs
forked from the fork server; with the server on, a round's first job starts the plain way while the server
imports, and is counted with the plain ones. Prints the CPU model and the machine's load, since a busy machine slows
both.
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


def run_round(fork_server: str, jobs: int, variant_id: int) -> tuple[list[tuple[bool, float]], float]:
    """(forked?, claim-to-end seconds) per job, and the burst worker's wall seconds."""
    from jobs.runner.executors.local import LocalExecutor
    from jobs.runner.fork_server import ForkedProcess
    from jobs.runner.submit import submit
    from jobs.runner.worker import Worker
    from storage import queue

    os.environ["WORKBENCH_FORK_SERVER"] = fork_server
    submitted = [submit("evaluate", {"max_examples": 32}, variant=variant_id, dataset="toy") for _ in range(jobs)]
    worker = Worker(burst=True, poll_interval=0.02)
    assert isinstance(worker.executor, LocalExecutor)
    forked: dict[int, bool] = {}
    start = worker.executor.start

    def noting_start(job_id: int):
        handle = start(job_id)
        forked[job_id] = isinstance(handle.process, ForkedProcess)
        return handle

    worker.executor.start = noting_start
    t0 = time.perf_counter()
    processed = worker.run()
    wall = time.perf_counter() - t0
    done = [queue.get_job(j.id) for j in submitted]
    if processed != jobs or any(j.status.value != "succeeded" for j in done):
        raise SystemExit(f"fork server {fork_server}: not every job succeeded: "
                         f"{[(j.id, j.status.value, j.error) for j in done]}")
    return [(forked[j.id], (j.finished_at - j.started_at).total_seconds()) for j in done], wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=6, help="evaluate jobs per round")
    parser.add_argument("--rounds", type=int, default=2, help="alternating off / on rounds")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="job-start-"))
    os.environ.update({"WORKBENCH_HOME": str(root / "home"), "WORKBENCH_MLFLOW": "off", "HF_HUB_OFFLINE": "1",
                       "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))})
    import psutil

    from jobs import api
    from jobs.runtimes.devices import cpu_info
    from storage import db
    from tests.support.data import write_sentiment_csv

    db.upgrade()
    api.add_model(api.ModelRequest("builtin:minilm-l6"))
    api.add_dataset(api.DatasetRequest(str(write_sentiment_csv(root / "toy.csv")), name="toy"))
    from jobs.runner.worker import Worker
    from storage import queue

    # a head to evaluate: one short fine-tune (and whatever intake queued), run before any round is timed
    tuned = api.submit("finetune", {"epochs": 1, "max_length": 16, "max_val_examples": 20}, model="minilm-l6",
                       dataset="toy")
    os.environ["WORKBENCH_FORK_SERVER"] = "off"
    Worker(burst=True, poll_interval=0.02).run()
    variant_id = queue.get_job(tuned.id).produced_variant_id
    if variant_id is None:
        raise SystemExit(f"the fine-tune did not make a variant: {queue.get_job(tuned.id).error}")
    load_before = os.getloadavg()
    psutil.cpu_percent()
    times: dict[str, list[float]] = {"plain": [], "forked": []}
    wall: dict[str, list[float]] = {"off": [], "on": []}
    for _ in range(args.rounds):
        for setting in ("off", "on"):
            per_job, wall_s = run_round(setting, args.jobs, variant_id)
            wall[setting].append(wall_s)
            for forked, seconds in per_job:
                times["forked" if forked else "plain"].append(seconds)
    busy = psutil.cpu_percent()
    info = cpu_info()
    print(f"CPU: {info['cpu']} ({info['cpu_count']} cores, flags: {' '.join(info['cpu_flags']) or 'none of interest'}); "
          f"load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}; CPU busy {busy:.0f}% over the run "
          "(its own jobs included)")
    print(f"model: the built-in MiniLM (builtin:minilm-l6); {args.jobs} evaluate jobs per round "
          f"(32 texts each), {args.rounds} rounds of each setting")
    for name, values in times.items():
        if values:
            print(f"{name:6}: per job, claim to recorded end: median {statistics.median(values):.2f} s, "
                  f"min {min(values):.2f} s, max {max(values):.2f} s ({len(values)} jobs)")
    for setting, values in wall.items():
        print(f"fork server {setting:3}: burst worker wall time per round: median {statistics.median(values):.1f} s")
    if times["forked"] and times["plain"]:
        print(f"ratio plain / forked: {statistics.median(times['plain']) / statistics.median(times['forked']):.2f}x "
              f"per job (medians); per round {statistics.median(wall['off']) / statistics.median(wall['on']):.2f}x "
              f"(off / on)")


if __name__ == "__main__":
    main()
