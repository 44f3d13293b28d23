"""Where jobs run, for the Jobs tab's line: the live workers by executor (each worker records its executor and,
for Ray, the cluster's address when it registers), and for a Ray cluster its nodes, their resources and the
running jobs on each (from the `ran_on` note a job's Ray task writes).

Reading a Ray cluster's nodes means connecting a Ray driver to it, which can take seconds or, for a cluster that
is half there, much longer. The UI must never wait on that, nor import ray at all when jobs run locally. So the
nodes are read by this module run as a child process (`python -m jobs.runner.executor_status ADDRESS`, which
prints them as JSON) under a time limit, in a background thread, at most every REFRESH_S; the line shows the last
answer at once ("checking" before the first). What runs where is read from the database on every call.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from jobs.runner.params import RAN_ON
from storage import queue, settings
from storage.entities import Job, Worker
from storage.orm import JobStatus

PROBE_TIMEOUT_S = 30.0  # a child that has not answered by then: the cluster is called unreachable
REFRESH_S = 60.0  # nodes and resources change rarely; running jobs are read from the database every time
REASON_CHARS = 200


@dataclass(frozen=True)
class NodesProbe:
    """A Ray cluster's nodes as a child process read them, or why it could not."""

    address: str
    nodes: list[dict[str, Any]] | None  # node_id, ip, hostname, alive, head, resources, hardware_classes
    unreachable: str | None
    checked_at: float  # time.time()


@dataclass(frozen=True)
class RayPart:
    address: str
    workers: list[Worker]
    probe: NodesProbe | None  # None: not read yet (a child is reading it now)
    jobs_by_node: dict[str, list[Job]] = field(default_factory=dict)  # node id -> its running workbench jobs


@dataclass(frozen=True)
class ExecutorStatus:
    local_workers: list[Worker]
    ray: list[RayPart]  # one per cluster address the live workers use
    configured: str  # this process's WORKBENCH_EXECUTOR, said when no worker runs


def read_nodes(address: str, timeout: float = PROBE_TIMEOUT_S) -> NodesProbe:
    """The nodes of the cluster at `address`, read in a child process within `timeout` seconds."""
    try:
        done = subprocess.run([sys.executable, "-m", "jobs.runner.executor_status", address], capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return NodesProbe(address, None, f"no answer within {timeout:g} s", time.time())
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        reason = lines[-1].strip() if lines else f"exit status {done.returncode}"
        return NodesProbe(address, None, reason[:REASON_CHARS], time.time())
    return NodesProbe(address, json.loads(done.stdout), None, time.time())


class _NodesCache:
    """The last probe per address; a stale or missing one is refreshed by one background thread per address."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._probes: dict[str, NodesProbe] = {}
        self._reading: set[str] = set()

    def get(self, address: str) -> NodesProbe | None:
        with self._lock:
            probe = self._probes.get(address)
            stale = probe is None or time.time() - probe.checked_at > REFRESH_S
            if stale and address not in self._reading:
                self._reading.add(address)
                threading.Thread(target=self._read, args=(address,), daemon=True,
                                 name=f"ray-nodes-{address}").start()
        return probe

    def _read(self, address: str) -> None:
        try:
            probe = read_nodes(address)
        except Exception as exc:  # noqa: BLE001 - a probe must never take the tab down; it says why instead
            probe = NodesProbe(address, None, f"{type(exc).__name__}: {exc}"[:REASON_CHARS], time.time())
        with self._lock:
            self._probes[address] = probe
            self._reading.discard(address)


NODES = _NodesCache()


def executor_status() -> ExecutorStatus:
    """The live workers by executor and, for Ray, the cluster's nodes (last read) and what runs on each now."""
    workers = queue.live_workers(settings.get("WORKBENCH_STALE_AFTER_S"))
    local = [w for w in workers if w.device_info.get("executor", "local") == "local"]
    by_address: dict[str, list[Worker]] = {}
    for w in workers:
        if w.device_info.get("executor") == "ray":
            by_address.setdefault(w.device_info.get("ray_address") or "auto", []).append(w)
    parts = []
    if by_address:
        running = queue.list_jobs(JobStatus.RUNNING, limit=10_000)
        jobs_by_node: dict[str, list[Job]] = {}
        for job in running:
            node_id = (job.params.get(RAN_ON) or {}).get("node_id")
            if node_id:
                jobs_by_node.setdefault(node_id, []).append(job)
        parts = [RayPart(address, ws, NODES.get(address), jobs_by_node) for address, ws in by_address.items()]
    return ExecutorStatus(local, parts, settings.get("WORKBENCH_EXECUTOR"))


def main(address: str) -> None:
    """Print the nodes of the cluster at `address` as JSON (run as a child process by `read_nodes`)."""
    from jobs.runner.cluster import cluster_status

    status = cluster_status(address)
    print(json.dumps([{"node_id": n.node_id, "ip": n.ip, "hostname": n.hostname, "alive": n.alive, "head": n.head,
                       "resources": n.resources, "hardware_classes": n.hardware_classes} for n in status.nodes]))


if __name__ == "__main__":
    from storage.errors import WorkbenchError

    try:
        main(sys.argv[1])
    except WorkbenchError as exc:  # "no Ray cluster answers at ...": the one line the tab shows
        print(exc, file=sys.stderr)
        sys.exit(2)
