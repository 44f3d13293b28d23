"""A Ray cluster's status as text (for `workbench cluster status`) and as plain data (its --json)."""

from __future__ import annotations

from typing import Any

GIB = 1024 ** 3


def resource_text(name: str, amount: float) -> str:
    if name in ("memory", "object_store_memory"):
        return f"{name} {amount / GIB:.1f} GiB"
    return f"{name} {amount:g}"


def cluster_text(status) -> str:
    alive = [n for n in status.nodes if n.alive]
    cpus = sum(n.resources.get("CPU", 0) for n in alive)
    gpus = sum(n.resources.get("GPU", 0) for n in alive)
    lines = [f"Ray cluster at {status.address}: {len(alive)} node(s) alive, {cpus:g} CPUs, {gpus:g} GPUs"]
    for node in status.nodes:
        state = ("head, " if node.head else "") + ("alive" if node.alive else "dead")
        shown = [resource_text(k, node.resources.get(k, 0)) for k in ("CPU", "GPU", "memory")]  # 0 GPUs too
        classes = node.hardware_classes
        lines.append(f"node {node.node_id[:12]} ({node.ip}, {node.hostname}) {state}: {', '.join(shown)}"
                     + (f"; hardware classes: {', '.join(classes)}" if classes else ""))
        for job in node.jobs:
            lines.append(f"  job {job.id} {job.kind}: {job.progress:.0%} {job.message}")
        if not node.jobs:
            lines.append("  (no workbench job)")
    if status.elsewhere:
        lines.append("running on no node of this cluster (waiting for one, or run by a local worker):")
        lines += [f"  job {job.id} {job.kind}: {job.message}" for job in status.elsewhere]
    return "\n".join(lines)


def cluster_data(status) -> dict[str, Any]:
    return {
        "address": status.address,
        "nodes": [
            {"node_id": n.node_id, "ip": n.ip, "hostname": n.hostname, "alive": n.alive, "head": n.head,
             "resources": n.resources, "hardware_classes": n.hardware_classes, "jobs": [j.id for j in n.jobs]}
            for n in status.nodes
        ],
        "elsewhere": [j.id for j in status.elsewhere],
    }


def _node_text(node: dict[str, Any], jobs) -> str:
    shown = ", ".join(resource_text(k, node["resources"].get(k, 0)) for k in ("CPU", "GPU"))
    classes = f", {'/'.join(node['hardware_classes'])}" if node["hardware_classes"] else ""
    running = ", ".join(f"job {j.id} {j.kind}" for j in jobs) or "idle"
    state = ("head, " if node["head"] else "") + ("" if node["alive"] else "dead, ")
    return f"node {node['node_id'][:8]} ({state}{shown}{classes}): {running}"


def executor_text(status) -> str:
    """The Jobs tab's one line on where jobs run (jobs.runner.executor_status.ExecutorStatus)."""
    parts = []
    if status.local_workers:
        slots = sum(w.concurrency for w in status.local_workers)
        parts.append(f"local ({len(status.local_workers)} worker(s), up to {slots} job(s) at once, as child "
                     "processes on the workers' machines)")
    for ray_part in status.ray:
        workers = f"{len(ray_part.workers)} worker(s)"
        probe = ray_part.probe
        if probe is None:
            parts.append(f"Ray cluster at {ray_part.address} ({workers}): checking its nodes…")
        elif probe.unreachable:
            parts.append(f"Ray cluster at {ray_part.address} ({workers}): unreachable: {probe.unreachable}")
        else:
            alive = [n for n in probe.nodes if n["alive"]]
            nodes = "; ".join(_node_text(n, ray_part.jobs_by_node.get(n["node_id"], [])) for n in probe.nodes)
            parts.append(f"Ray cluster at {ray_part.address} ({workers}), {len(alive)} node(s) alive: {nodes}")
    if not parts:
        return f"**Executor:** {status.configured} (no worker running)"
    return "**Executor:** " + " · ".join(parts)
