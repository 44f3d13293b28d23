"""What the Ray cluster that a ray executor uses holds and runs: its nodes, their resources, and the workbench
jobs running on each (from the `ran_on` note each job's Ray task writes into the job's params).

Read by `workbench cluster status`; `ray` is imported only here, when asked.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from jobs.runner.params import RAN_ON
from storage import queue, settings
from storage.entities import Job
from storage.orm import JobStatus

# resources Ray counts on every node by itself, shown by name; any other (but Ray's own node:/accelerator_type:
# markers) is a custom resource such as a hardware class
BUILTIN_RESOURCES = ("CPU", "GPU", "memory", "object_store_memory")
RAY_MARKERS = ("node:", "accelerator_type:")


@dataclass(frozen=True)
class ClusterNode:
    node_id: str
    ip: str
    hostname: str
    alive: bool
    head: bool
    resources: dict[str, float]  # CPU, GPU, memory and object_store_memory (bytes), custom resources
    jobs: list[Job] = field(default_factory=list)  # workbench jobs running there now

    @property
    def hardware_classes(self) -> list[str]:
        return sorted(k for k in self.resources if k not in BUILTIN_RESOURCES)


@dataclass(frozen=True)
class ClusterStatus:
    address: str
    nodes: list[ClusterNode]
    elsewhere: list[Job]  # running jobs on no node of this cluster (not started yet, or run by a local worker)


def _public_resources(resources: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in sorted(resources.items()) if not k.startswith(RAY_MARKERS)}


def cluster_status(address: str | None = None) -> ClusterStatus:
    """The cluster at `address` (default RAY_ADDRESS, else one started on this machine) and what runs where."""
    import ray

    address = address or settings.get("RAY_ADDRESS") or "auto"
    from jobs.runner.executors.ray import connect

    connected_here = not ray.is_initialized()
    if connected_here:
        connect(address)
    try:
        nodes = ray.nodes()
    finally:
        if connected_here:
            ray.shutdown()
    running = queue.list_jobs(JobStatus.RUNNING, limit=10_000)
    by_node: dict[str, list[Job]] = {}
    for job in running:
        node_id = (job.params.get(RAN_ON) or {}).get("node_id")
        by_node.setdefault(node_id, []).append(job)
    listed = [
        ClusterNode(
            node_id=n["NodeID"],
            ip=n.get("NodeManagerAddress", ""),
            hostname=n.get("NodeManagerHostname", ""),
            alive=bool(n.get("Alive")),
            head="node:__internal_head__" in n.get("Resources", {}),
            resources=_public_resources(n.get("Resources", {})),
            jobs=by_node.pop(n["NodeID"], []),
        )
        for n in sorted(nodes, key=lambda n: (not n.get("Alive"), n["NodeID"]))
    ]
    elsewhere = [job for jobs in by_node.values() for job in jobs]
    return ClusterStatus(address=address, nodes=listed, elsewhere=sorted(elsewhere, key=lambda j: j.id))
