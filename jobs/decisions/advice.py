"""Hardware-aware advice shown before a job is launched (today: quantize, prune and benchmark).

Rules of thumb about known slow paths on the detected hardware, declared by each kind (its `advice` hook in the
registry), backed where possible by what this machine has already measured (newest benchmark rows on its own
fingerprint), so advice says "measured here" when it can.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jobs.runtimes.devices import detect


@dataclass(frozen=True)
class MeasuredSpeedup:
    """A speedup this machine measured, with the benchmark job and date it comes from (advice cites both)."""

    ratio: float
    job_id: int | None
    measured_at: datetime
    batch_size: int

    def cite(self) -> str:
        return f"{self.ratio:.1f}x (job {self.job_id}, {self.measured_at:%Y-%m-%d})"


def sound_cell(m: Any, rules: Any) -> bool:
    """A full (not quick-trial) cell that passes the comparison rules: enough samples, stable, machine not busy."""
    from jobs.decisions.compare import Point, cell_problems

    point = Point(m.variant_id, "", m.p95_ms, None, m.p50_ms, samples=m.samples, stable=m.stable, spread=m.spread,
                  other_cpu_fraction=m.load.get("other_cpu_fraction"), steal_fraction=m.load.get("steal_fraction"),
                  samples_ms=tuple(m.samples_ms) if m.samples_ms else None)
    return not m.rough and not cell_problems(point, rules)


def _measured_speedups(fingerprint_hash: str, batch_size: int = 1) -> dict[str, MeasuredSpeedup]:
    """'runtime precision' -> best p50 speedup over its nearest measured PyTorch fp32 ancestor at `batch_size`, at
    the same sequence length and in the same benchmark job, from this machine's newest job that measured it.

    Only sound cells count: never a quick trial's, an unstable one, one with too few samples or one measured while
    the machine was busy, and never a ratio between two jobs (their load differed). The ancestor, not any fp32
    variant: a distilled student is fp32 too, and measuring the full model's bf16 child against the student's
    latency would understate bf16.
    """
    from jobs.decisions.compare import Rules
    from storage import catalog

    rules = Rules.from_settings()
    rows = [m for m in catalog.list_measurements(fingerprint_hash=fingerprint_hash)
            if m.batch_size == batch_size and sound_cell(m, rules)]
    if not rows:
        return {}
    variants = {v.id: v for v in catalog.list_variants()}
    by_job: dict[int | None, dict[tuple[int, int], Any]] = {}
    for m in rows:  # oldest first: within a job, the last row of a cell wins
        # a real-traffic row has seq_len 0 (jobs.bench.traffic), so it only pairs with real traffic of the same job
        by_job.setdefault(m.job_id, {})[(m.variant_id, m.seq_len)] = m

    def fp32_ancestor(cells: dict[tuple[int, int], Any], variant_id: int, seq: int):
        parent_id = variants[variant_id].parent_id
        while parent_id is not None and parent_id in variants:
            parent = variants[parent_id]
            if (parent.runtime, parent.precision) == ("pytorch", "fp32") and (parent.id, seq) in cells:
                return cells[(parent.id, seq)]
            parent_id = parent.parent_id
        return None

    by_kind: dict[str, MeasuredSpeedup] = {}
    for job_id, cells in sorted(by_job.items(), key=lambda kv: max(m.id for m in kv[1].values())):
        in_job: dict[str, MeasuredSpeedup] = {}
        for (vid, seq), m in cells.items():
            base = fp32_ancestor(cells, vid, seq) if vid in variants else None
            if base is None:
                continue
            key = f"{variants[vid].runtime} {variants[vid].precision}"
            ratio = base.p50_ms / m.p50_ms
            if key not in in_job or ratio > in_job[key].ratio:
                in_job[key] = MeasuredSpeedup(ratio, job_id, m.created_at, batch_size)
        by_kind.update(in_job)  # a newer job's figure replaces an older one's
    by_kind.pop("pytorch fp32", None)
    return by_kind


def measured_speedups(device: str = "cpu", batch_size: int = 1) -> dict[str, MeasuredSpeedup]:
    """This machine's measured speedups over PyTorch fp32 at a batch size, by 'runtime precision' (may be empty)."""
    from jobs.bench.fingerprint import fingerprint, fingerprint_hash

    return _measured_speedups(fingerprint_hash(fingerprint(device)), batch_size)


def advice(kind: str, params: dict[str, Any]) -> list[str]:
    """Notes for a job about to be launched: the kind's own rules (its `advice` hook, given this machine's
    hardware), then, for kinds that declare `cites_measured_speedups`, what this machine has measured."""
    from jobs.bench.fingerprint import fingerprint, fingerprint_hash
    from jobs.runner.registry import get_kind
    from storage.errors import InvalidInput

    try:
        declared = get_kind(kind)
    except InvalidInput:  # a kind this installation does not know has nothing to advise
        return []
    notes: list[str] = list(declared.advice(params, detect())) if declared.advice else []
    if declared.cites_measured_speedups:
        measured = _measured_speedups(fingerprint_hash(fingerprint("cpu")))
        if measured:
            ranked = sorted(measured.items(), key=lambda kv: -kv[1].ratio)
            notes.append("measured on this machine (batch 1, vs PyTorch fp32; stable full benchmarks only): "
                         + ", ".join(f"{name} {m.cite()}" for name, m in ranked))
    return notes
