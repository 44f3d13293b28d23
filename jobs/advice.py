"""Hardware-aware advice shown before a quantize, prune or benchmark job is launched.

Rules of thumb about known slow paths on the detected hardware, backed where possible by what this machine has
already measured (newest benchmark rows on its own fingerprint), so advice says "measured here" when it can.
"""

from __future__ import annotations

from typing import Any

from jobs.devices import detect, fast_bf16


def _measured_speedups(fingerprint_hash: str, batch_size: int = 1) -> dict[str, float]:
    """'runtime precision' -> best p50 speedup over its nearest measured PyTorch fp32 ancestor at `batch_size`, at
    the same sequence length, from this machine's newest benchmark rows.

    The ancestor, not any fp32 variant: a distilled student is fp32 too, and measuring the full model's bf16
    child against the student's latency would understate bf16.
    """
    from storage import catalog

    rows = [m for m in catalog.list_measurements(fingerprint_hash=fingerprint_hash) if m.batch_size == batch_size]
    if not rows:
        return {}
    variants = {v.id: v for v in catalog.list_variants()}
    newest: dict[tuple[int, int], Any] = {}
    for m in rows:
        newest[(m.variant_id, m.seq_len)] = m

    def fp32_ancestor(variant_id: int, seq: int):
        parent_id = variants[variant_id].parent_id
        while parent_id is not None and parent_id in variants:
            parent = variants[parent_id]
            if (parent.runtime, parent.precision) == ("pytorch", "fp32") and (parent.id, seq) in newest:
                return newest[(parent.id, seq)]
            parent_id = parent.parent_id
        return None

    by_kind: dict[str, float] = {}
    for (vid, seq), m in newest.items():
        base = fp32_ancestor(vid, seq) if vid in variants else None
        if base is None:
            continue
        key = f"{variants[vid].runtime} {variants[vid].precision}"
        by_kind[key] = max(by_kind.get(key, 0.0), base.p50_ms / m.p50_ms)
    by_kind.pop("pytorch fp32", None)
    return by_kind


def measured_speedups(device: str = "cpu", batch_size: int = 1) -> dict[str, float]:
    """This machine's best measured speedups over PyTorch fp32 at a batch size, by 'runtime precision' (may be empty)."""
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
    if kind == "prune" and method == "l1-unstructured":
        notes.append("zeros do not make a dense runtime faster: expect the same latency and size; "
                     "use structured pruning (or a sparse runtime) for speed")
    if kind in ("quantize", "benchmark", "prune"):
        measured = _measured_speedups(fingerprint_hash(fingerprint("cpu")))
        if measured:
            ranked = sorted(measured.items(), key=lambda kv: -kv[1])
            notes.append("measured on this machine (batch 1, vs PyTorch fp32): "
                         + ", ".join(f"{name} {ratio:.1f}x" for name, ratio in ranked))
    return notes
