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
