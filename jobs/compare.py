"""Decisions from measurements: Pareto frontier, speedup over a baseline, the sweet spot, cost per prediction.

Pure functions over plain rows, so they are unit-tested on known points and shared by the Compare tab, the
report and the benchmark script.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence


@dataclass(frozen=True)
class Point:
    """One variant at one cell: what the decision needs."""

    variant_id: int
    label: str
    latency_ms: float  # p95 by convention
    accuracy: float | None
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    throughput_sps: float = 0.0


def pareto_front(points: Sequence[Point]) -> list[Point]:
    """Points no other point beats on both lower latency and higher accuracy, sorted by latency."""
    scored = [p for p in points if p.accuracy is not None]
    front: list[Point] = []
    best_accuracy = float("-inf")
    for p in sorted(scored, key=lambda p: (p.latency_ms, -(p.accuracy or 0))):
        if p.accuracy > best_accuracy:  # strictly better than everything faster
            front.append(p)
            best_accuracy = p.accuracy
    return front


def speedup(baseline: Point, candidate: Point) -> dict[str, float]:
    """p50 ratio, with a range from the p90s: slow-case candidate vs typical baseline, and the reverse."""
    return {
        "speedup": baseline.p50_ms / candidate.p50_ms,
        "low": baseline.p50_ms / candidate.p90_ms if candidate.p90_ms else baseline.p50_ms / candidate.p50_ms,
        "high": baseline.p90_ms / candidate.p50_ms if baseline.p90_ms else baseline.p50_ms / candidate.p50_ms,
    }


def sweet_spot(points: Sequence[Point], baseline_accuracy: float | None, max_drop_points: float,
               slo_ms: float | None) -> Point | None:
    """The fastest point within the latency SLO (None = no SLO) and within `max_drop_points` of the baseline."""
    eligible = [
        p for p in points
        if p.accuracy is not None
        and (baseline_accuracy is None or (baseline_accuracy - p.accuracy) * 100 <= max_drop_points + 1e-9)
        and (slo_ms is None or p.latency_ms <= slo_ms)
    ]
    return min(eligible, key=lambda p: p.latency_ms, default=None)


def cost_per_million(throughput_sps: float, hourly_price: float) -> float | None:
    """Dollars (or any currency) per million predictions at the measured throughput, running flat out."""
    if throughput_sps <= 0 or hourly_price < 0:
        return None
    return hourly_price / (throughput_sps * 3600) * 1_000_000


# ---- the comparison the Compare tab, the report and `workbench report` show -----------------------------------


@dataclass(frozen=True)
class Fingerprint:
    hash: str
    description: str
    rows: int


@dataclass(frozen=True)
class Comparison:
    fingerprints: list[Fingerprint]  # every fingerprint with rows (after the dataset filter), newest first
    fingerprint: Fingerprint | None  # the one shown: results from different machines are never mixed
    rows: list[dict[str, Any]]  # newest measurement per variant and cell, joined with variant facts and accuracy
    note: str


def build_comparison(dataset_id: int | None = None, fingerprint_hash: str | None = None) -> Comparison:
    from jobs.bench.fingerprint import describe
    from storage import catalog

    measurements = catalog.list_measurements(dataset_id=dataset_id)
    counts: dict[str, int] = {}
    descriptions: dict[str, str] = {}
    for m in reversed(measurements):  # newest first
        counts[m.fingerprint_hash] = counts.get(m.fingerprint_hash, 0) + 1
        descriptions.setdefault(m.fingerprint_hash, describe(m.fingerprint))
    fingerprints = [Fingerprint(h, descriptions[h], n) for h, n in counts.items()]
    if not fingerprints:
        return Comparison([], None, [], "No measurements yet: run a benchmark job on some variants.")
    chosen = next((f for f in fingerprints if f.hash == fingerprint_hash), fingerprints[0])
    note = ""
    if len(fingerprints) > 1:
        note = (f"{len(fingerprints)} hardware/library fingerprints have results; showing {chosen.description} "
                f"only (pick another to see its results; they are never mixed).")
    newest: dict[tuple[int, int, int], Any] = {}
    for m in measurements:
        if m.fingerprint_hash == chosen.hash:
            newest[(m.variant_id, m.batch_size, m.seq_len)] = m
    latest_eval = catalog.latest_evaluations()
    variants = {v.id: v for v in catalog.list_variants()}
    rows = []
    for (variant_id, _, _), m in sorted(newest.items()):
        v = variants.get(variant_id)
        ev = latest_eval.get(variant_id)
        if v is None:
            continue
        rows.append({
            "variant_id": v.id, "variant": v.name, "label": f"#{v.id} {v.name.rsplit(' > ', 1)[-1]}",
            "runtime": v.runtime, "precision": v.precision, "size_mb": round(v.size_bytes / 1e6, 1),
            "accuracy": ev.accuracy if ev else None, "flagged": bool(ev and ev.flagged),
            "batch_size": m.batch_size, "seq_len": m.seq_len, "samples": m.samples,
            "p50_ms": m.p50_ms, "p90_ms": m.p90_ms, "p95_ms": m.p95_ms, "p99_ms": m.p99_ms,
            "mean_ms": m.mean_ms, "std_ms": m.std_ms, "throughput_sps": m.throughput_sps, "tokens_per_s": m.tokens_per_s,
            "peak_rss_mb": round(m.peak_rss_bytes / 1e6, 1) if m.peak_rss_bytes else None,
            "gpu_peak_mb": round(m.gpu_peak_bytes / 1e6, 1) if m.gpu_peak_bytes else None,
            "load_time_s": m.load_time_s, "threads": m.threads, "stable": m.stable, "device": m.device,
            "fingerprint": chosen.hash, "measured_at": m.created_at.isoformat(timespec="seconds"),
        })
    return Comparison(fingerprints, chosen, rows, note)


def cell_points(rows: Sequence[dict[str, Any]], batch_size: int, seq_len: int) -> list[Point]:
    return [Point(r["variant_id"], r["label"], r["p95_ms"], r["accuracy"], r["p50_ms"], r["p90_ms"], r["throughput_sps"])
            for r in rows if r["batch_size"] == batch_size and r["seq_len"] == seq_len]


@dataclass(frozen=True)
class Decision:
    """Everything the charts need for one cell: points, the frontier, speedups, the sweet spot, costs."""

    batch_size: int
    seq_len: int
    points: list[Point]
    front: list[Point]
    baseline: Point | None
    ratios: dict[int, dict[str, float]]
    sweet: Point | None
    costs: dict[int, float | None]


def decide(rows: Sequence[dict[str, Any]], batch_size: int, seq_len: int, baseline_id: int | None = None,
           slo_ms: float | None = None, max_drop_points: float = 1.0, hourly_price: float = 0.0) -> Decision:
    points = cell_points(rows, batch_size, seq_len)
    baseline = next((p for p in points if p.variant_id == baseline_id), None)
    if baseline is None and points:  # default: the slowest variant, usually the fp32 original
        baseline = max(points, key=lambda p: p.p50_ms)
    ratios = {p.variant_id: speedup(baseline, p) for p in points} if baseline else {}
    sweet = sweet_spot(points, baseline.accuracy if baseline else None, max_drop_points, slo_ms)
    costs = {p.variant_id: cost_per_million(p.throughput_sps, hourly_price) for p in points} if hourly_price else {}
    return Decision(batch_size, seq_len, points, pareto_front(points), baseline, ratios, sweet, costs)


def decision_table(decision: Decision) -> list[dict[str, Any]]:
    """One row per variant at the decision's cell: speedup with its range, accuracy, cost, frontier and sweet spot."""
    front = {p.variant_id for p in decision.front}
    out = []
    for p in sorted(decision.points, key=lambda p: p.p50_ms):
        ratio = decision.ratios.get(p.variant_id)
        cost = decision.costs.get(p.variant_id)
        out.append({
            "variant": p.label, "p50 ms": round(p.p50_ms, 2), "p95 ms": round(p.latency_ms, 2),
            "samples/s": round(p.throughput_sps, 1),
            "speedup": f"{ratio['speedup']:.2f}x ({ratio['low']:.2f}-{ratio['high']:.2f})" if ratio else "",
            "accuracy": f"{p.accuracy:.2%}" if p.accuracy is not None else "not evaluated",
            "cost / 1M": f"{cost:.3f}" if cost is not None else "",
            "Pareto": "yes" if p.variant_id in front else "",
            "sweet spot": "★" if decision.sweet and p.variant_id == decision.sweet.variant_id else "",
        })
    return out


def focus_variants(decision: Decision, limit: int = 12) -> list[int]:
    """The variants a decision is about, most important first: sweet spot, baseline, frontier, then the fastest."""
    ordered = ([decision.sweet.variant_id] if decision.sweet else []) + \
        ([decision.baseline.variant_id] if decision.baseline else []) + \
        [p.variant_id for p in decision.front] + [p.variant_id for p in sorted(decision.points, key=lambda p: p.p50_ms)]
    return list(dict.fromkeys(ordered))[:limit]
