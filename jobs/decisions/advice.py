"""Hardware-aware advice shown before a quantize, prune or benchmark job is launched.

Rules of thumb about known slow paths on the detected hardware, backed where possible by what this machine has
already measured (newest benchmark rows on its own fingerprint), so advice says "measured here" when it can.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jobs.runtimes.devices import detect, fast_bf16


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
    from jobs.bench.fingerprint import fingerprint, fingerprint_hash

    info = detect()
    cuda = "cuda" in info.get("devices", [])
    flags = set(info.get("cpu_flags", []))
    notes: list[str] = []
    method = str(params.get("method", ""))
    if kind == "quantize":
        if method == "fp16" and not cuda:
            notes.append("fp16 on this CPU goes through slow conversion paths; bf16 is the CPU half-precision"
                         + (" and this CPU has AMX bf16 tiles" if "amx_bf16" in flags else ""))
        if method == "bf16" and not fast_bf16("cpu") and not cuda:
            notes.append("this CPU has no AMX or AVX-512 BF16: bf16 may be slower than fp32 here")
        if method.startswith("ort-") and cuda:
            notes.append("int8 on ONNX Runtime's CUDA execution provider falls back to slow kernels for many ops; "
                         "on a GPU prefer fp16, or TensorRT int8 from an ort-static-int8 (int8-symmetric) variant")
        if method.endswith("int8") and not cuda and not flags & {"avx512_vnni", "amx_int8"}:
            notes.append("this CPU has no VNNI or AMX int8 instructions: int8 speedups will be small")
        if method.startswith("ort-") and not flags & {"avx512_vnni", "avx_vnni", "amx_int8"}:
            setting = params.get("reduce_range", "auto")
            if setting == "off":
                notes.append("reduce_range=off: without VNNI, ONNX Runtime's u8s8 int8 path (AVX2 VPMADDUBSW) can "
                             "saturate with full 8-bit weights and cost accuracy")
            elif setting == "auto" and params.get("activations") != "int8-symmetric":  # that one is for TensorRT
                notes.append("reduce_range is on by default here: without VNNI, ONNX Runtime's u8s8 int8 path (AVX2 "
                             "VPMADDUBSW) can saturate with full 8-bit weights, so weights get 7 bits, as ONNX "
                             "Runtime recommends for such CPUs (reduce_range=off keeps 8)")
    if kind == "prune" and method == "l1-unstructured":
        notes.append("zeros do not make a dense runtime faster: expect the same latency and size; "
                     "use structured pruning (or a sparse runtime) for speed")
    if kind in ("quantize", "benchmark", "prune"):
        measured = _measured_speedups(fingerprint_hash(fingerprint("cpu")))
        if measured:
            ranked = sorted(measured.items(), key=lambda kv: -kv[1].ratio)
            notes.append("measured on this machine (batch 1, vs PyTorch fp32; stable full benchmarks only): "
                         + ", ".join(f"{name} {m.cite()}" for name, m in ranked))
    return notes
