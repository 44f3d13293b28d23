"""The same variants measured on each kind of machine: one column per machine, side by side.

A column is a hardware class (the Ray custom resource the benchmark job named, `params.hardware_class`, or
none) together with a hardware/library fingerprint. Both, because neither alone is honest:
- the fingerprint alone cannot tell two nodes apart when they are the same hardware (two Ray nodes on one
  machine, or two boxes of one model): the hash is a fact about what the measuring process saw (CPU model, its
  flags, core count, libraries), and a node's class is not in it;
- the class alone would mix two different machines an operator gave the same class (a node replaced by a newer
  CPU, a library upgraded on one node), which the fingerprint does tell apart.
The class is not folded into the hash: that would split the same hardware's older rows (measured before it had a
class) from its newer ones in the Compare tab, and hide that two columns are the same hardware. Where two columns
share a fingerprint the view says so: their differences are run-to-run variation, not hardware.

Each column shows one benchmark run (the newest one there that measured the cell), so its ratios compare
latencies from one job on one machine only; across columns the absolute figures stand side by side and no ratio
is computed. A cell that is busy, unstable or has too few samples is kept with its problems, never shown as fact.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from jobs.decisions.compare import (
    DEFAULT_RESOLUTION,
    Rules,
    cell_label,
    cell_problems,
    not_comparable,
    point_of,
    resolution_of,
    speedup,
)

NO_CLASS = "no hardware class"


@dataclass(frozen=True)
class MachineColumn:
    key: str  # "<hardware class or ''>/<fingerprint hash>": what the UI and tests address a column by
    hardware_class: str | None  # None: measured by a job that named none (a local worker, or any Ray node)
    fingerprint_hash: str
    description: str  # the fingerprint in one line (jobs.bench.fingerprint.describe)
    job_id: int | None  # the benchmark run shown in this column
    node: str  # where that run ran: "node 1a2b3c4d5e6f (host)" from its Ray task's `ran_on`, or "a local worker"
    other_runs: int = 0  # older runs in this column that measured the cell too (not shown)

    @property
    def name(self) -> str:
        """Short and unique among columns: the class and the start of the fingerprint hash."""
        return f"{self.hardware_class or NO_CLASS} [{self.fingerprint_hash[:8]}]"

    @property
    def title(self) -> str:
        return f"{self.hardware_class or NO_CLASS} · {self.description}"


@dataclass(frozen=True)
class MachineCell:
    """One variant in one column: its figures, why they are not fact (if so), and its ratio within the column."""

    variant_id: int
    label: str
    column: str
    p50_ms: float
    p95_ms: float
    throughput_sps: float
    samples: int
    measurement_id: int
    problems: tuple[str, ...]  # empty: sound (stable, enough samples, a machine not busy)
    speedup: dict[str, float] | None = None  # over the column's baseline, only within the column's run
    no_speedup: str | None = None  # why there is none, when the cell has figures but no ratio

    @property
    def sound(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class AcrossMachines:
    batch_size: int | None
    seq_len: int | None
    cells: list[tuple[int, int]]  # every (batch, seq) measured on the dataset, for the picker
    columns: list[MachineColumn]
    variants: list[tuple[int, str]]  # (id, label), rows of the table, in id order
    baseline_id: int | None
    values: dict[tuple[int, str], MachineCell] = field(default_factory=dict)  # (variant id, column key) -> cell
    notes: list[str] = field(default_factory=list)

    def cell(self, variant_id: int, column: str) -> MachineCell | None:
        return self.values.get((variant_id, column))


def column_key(hardware_class: str | None, fingerprint_hash: str) -> str:
    return f"{hardware_class or ''}/{fingerprint_hash}"


def _where(job) -> tuple[str | None, str | None]:
    """(hardware class, node) of a benchmark job: the class it named, and the node its Ray task noted."""
    from jobs.runner.params import HARDWARE_CLASS, RAN_ON

    if job is None:
        return None, None
    ran_on = job.params.get(RAN_ON) or {}
    hardware_class = job.params.get(HARDWARE_CLASS) or ran_on.get(HARDWARE_CLASS)
    node = (f"node {ran_on['node_id'][:12]} ({ran_on.get('hostname') or ran_on.get('node_ip', '?')})"
            if ran_on.get("node_id") else None)
    return hardware_class, node


def across_machines(dataset_id: int | None = None, batch_size: int | None = None, seq_len: int | None = None,
                    baseline_id: int | None = None, rules: Rules | None = None) -> AcrossMachines:
    """The cell (batch_size x seq_len; default: the one measured in the most columns) on every machine: one
    column per (hardware class, fingerprint), each from its newest run there; speedups over `baseline_id`
    (default: the lowest variant id measured, usually the original) only within a column."""
    from jobs.bench.fingerprint import describe
    from storage import catalog, queue

    rules = rules or Rules.from_settings()
    measurements = catalog.list_measurements(dataset_id=dataset_id)
    jobs = {j: queue.get_job(j) for j in {m.job_id for m in measurements if m.job_id is not None}}
    where = {j: _where(job) for j, job in jobs.items()}
    resolutions = {j: resolution_of(job) for j, job in jobs.items()}
    keyed = [(column_key(where.get(m.job_id, (None, None))[0], m.fingerprint_hash), m) for m in measurements]
    cells = sorted({(m.batch_size, m.seq_len) for m in measurements})
    if not cells:
        return AcrossMachines(None, None, [], [], [], None, notes=["No measurements yet: run a benchmark job, "
                                                                  "naming a hardware_class to place it on a node."])
    if (batch_size, seq_len) not in cells:
        columns_at = {c: len({k for k, m in keyed if (m.batch_size, m.seq_len) == c}) for c in cells}
        batch_size, seq_len = max(cells, key=lambda c: (columns_at[c], -cells.index(c)))
    at_cell = [(k, m) for k, m in keyed if (m.batch_size, m.seq_len) == (batch_size, seq_len)]
    runs: dict[str, dict[int | None, list[Any]]] = {}
    for key, m in at_cell:
        runs.setdefault(key, {}).setdefault(m.job_id, []).append(m)
    labels = {v.id: f"#{v.id} {v.name.rsplit(' > ', 1)[-1]}" for v in catalog.list_variants()}
    columns: list[MachineColumn] = []
    shown: dict[str, list[Any]] = {}
    for key, by_job in runs.items():
        newest_job = max(by_job, key=lambda j: max(m.id for m in by_job[j]))
        rows = by_job[newest_job]
        hardware_class, node = where.get(newest_job, (None, None))
        node = node or ("a local worker" if newest_job is not None else "not recorded")
        columns.append(MachineColumn(key, hardware_class, rows[0].fingerprint_hash, describe(rows[0].fingerprint),
                                     newest_job, node, len(by_job) - 1))
        shown[key] = [m for m in rows if m.variant_id in labels]
    columns.sort(key=lambda c: (c.hardware_class or "~", c.fingerprint_hash))
    variant_ids = sorted({m.variant_id for rows in shown.values() for m in rows})
    if baseline_id not in variant_ids:
        baseline_id = variant_ids[0] if variant_ids else None
    values: dict[tuple[int, str], MachineCell] = {}
    for column in columns:
        points = {m.variant_id: (m, point_of(m, labels[m.variant_id],
                                             resolution=resolutions.get(m.job_id, DEFAULT_RESOLUTION)))
                  for m in shown[column.key]}
        base = points.get(baseline_id)
        for variant_id, (m, p) in points.items():
            ratio, why_not = None, None
            if base is None:
                why_not = "the baseline was not measured in this column's run"
            else:
                why_not = not_comparable(base[1], p, rules)
                if why_not is None:
                    ratio = speedup(base[1], p)
            values[(variant_id, column.key)] = MachineCell(
                variant_id, p.label, column.key, m.p50_ms, m.p95_ms, m.throughput_sps, m.samples, m.id,
                tuple(cell_problems(p, rules)), ratio, why_not)
    notes = [f"{cell_label(batch_size, seq_len)} on {len(columns)} machine(s). Figures side by side; a speedup "
             "only within one column (one run on one machine), never across columns."]
    by_hash: dict[str, list[MachineColumn]] = {}
    for column in columns:
        by_hash.setdefault(column.fingerprint_hash, []).append(column)
    for same in (cols for cols in by_hash.values() if len(cols) > 1):
        names = " and ".join(c.hardware_class or NO_CLASS for c in same)
        notes.append(f"{names} have the same hardware/library fingerprint ({same[0].fingerprint_hash}): the same "
                     "kind of machine, perhaps the same machine, so their differences are run-to-run variation, "
                     "not hardware.")
    unsound = sum(not c.sound for c in values.values())
    if unsound:
        notes.append(f"{unsound} cell(s) are busy, unstable or short of samples: shown in brackets, not as fact.")
    return AcrossMachines(batch_size, seq_len, cells, columns, [(v, labels[v]) for v in variant_ids], baseline_id,
                          values, notes)
