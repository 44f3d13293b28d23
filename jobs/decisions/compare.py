"""Decisions from measurements: Pareto frontier, speedup over a baseline, the sweet spot, cost per prediction.

Pure functions over plain rows, so they are unit-tested on known points and shared by the Compare tab, the
report, the wizard and the benchmark script. They return data; workbench.formatting words it (the decision table).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Sequence

# The benchmark kind's default rel_spread: a cell is called stable when its window medians agree within it, so two
# cells closer than this are level as far as the benchmark can tell (see `beyond_resolution`).
DEFAULT_RESOLUTION = 0.05


@dataclass(frozen=True)
class Point:
    """One variant at one cell: what the decision needs, including what makes its figures trustworthy or not."""

    variant_id: int
    label: str
    latency_ms: float  # p95 by convention
    accuracy: float | None
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    throughput_sps: float = 0.0
    job_id: int | None = None  # the benchmark job that measured it: speedups only within one job
    samples: int = 0
    stable: bool = False
    spread: float | None = None
    other_cpu_fraction: float | None = None  # None: measured before the load was recorded
    steal_fraction: float | None = None
    samples_ms: tuple[float, ...] | None = None
    degenerate: bool = False
    degenerate_reason: str | None = None
    accuracy_low: float | None = None
    accuracy_high: float | None = None
    rough: bool = False
    traffic: str | None = None  # None: a grid cell; else what real traffic it served (jobs.bench.traffic.describe)
    resolution: float = DEFAULT_RESOLUTION  # its benchmark job's rel_spread


def point_of(m: Any, label: str = "", accuracy: float | None = None,
             resolution: float = DEFAULT_RESOLUTION) -> Point:
    """A stored measurement (storage.catalog's Measurement) as the decision rules read it."""
    from jobs.bench.traffic import describe as describe_traffic

    return Point(m.variant_id, label, m.p95_ms, accuracy, m.p50_ms, m.p90_ms, m.throughput_sps, job_id=m.job_id,
                 samples=m.samples, stable=m.stable, spread=m.spread,
                 other_cpu_fraction=m.load.get("other_cpu_fraction") if m.load else None,
                 steal_fraction=m.load.get("steal_fraction") if m.load else None,
                 samples_ms=tuple(m.samples_ms) if m.samples_ms else None, rough=m.rough,
                 traffic=describe_traffic(m.traffic), resolution=resolution)


def resolution_of(job: Any) -> float:
    """A benchmark job's resolution: its stop rule's rel_spread (the default for no job, or one without it)."""
    params = (job.params if job is not None else None) or {}
    return float(params.get("rel_spread") or DEFAULT_RESOLUTION)


def job_resolutions(job_ids: Sequence[int | None]) -> dict[int | None, float]:
    """`resolution_of` each benchmark job, by id (None: measured outside a job)."""
    from storage import queue
    from storage.errors import NotFound

    found: dict[int | None, float] = {}
    for job_id in set(job_ids):
        try:
            found[job_id] = resolution_of(queue.get_job(job_id) if job_id is not None else None)
        except NotFound:
            found[job_id] = DEFAULT_RESOLUTION
    return found


REAL_TRAFFIC_LABEL = "real traffic (test split)"


def length_label(seq_len: int, tokens: bool = False) -> str:
    """A cell's length as people read it: '128' ('128 tokens' with `tokens`), or 'real traffic (test split)' for a
    real-traffic cell (seq_len 0), which has no one length."""
    from jobs.bench.traffic import REAL_TRAFFIC_SEQ

    if seq_len == REAL_TRAFFIC_SEQ:
        return REAL_TRAFFIC_LABEL
    return f"{seq_len} tokens" if tokens else str(seq_len)


def cell_label(batch_size: int, seq_len: int, tokens: bool = False) -> str:
    """'batch 16 x 128' or 'batch 16 x real traffic (test split)'."""
    return f"batch {batch_size} x {length_label(seq_len, tokens)}"


@dataclass(frozen=True)
class Rules:
    """When a cell's figures may be compared: enough samples, a converged stop rule, a machine not busy."""

    min_samples: int = 20
    busy_cpu_fraction: float = 0.25

    @classmethod
    def from_settings(cls) -> "Rules":
        from storage import settings

        return cls(settings.get("WORKBENCH_MIN_SAMPLES"), settings.get("WORKBENCH_BUSY_CPU_FRACTION"))


def cell_problems(p: Point, rules: Rules) -> list[str]:
    """Why this cell's latency cannot be compared with another's (empty: it can)."""
    problems = []
    if p.samples_ms is None or p.other_cpu_fraction is None:
        problems.append("measured before samples and load were recorded (measure again)")
    if p.samples < rules.min_samples:
        problems.append(f"too few samples ({p.samples} < {rules.min_samples})")
    if not p.stable:
        spread = f": window medians {p.spread:.0%} apart" if p.spread is not None else ""
        problems.append(f"unstable{spread}")
    busy = (p.other_cpu_fraction or 0.0) + (p.steal_fraction or 0.0)
    if busy > rules.busy_cpu_fraction:
        problems.append(f"machine busy (other processes and steal took {busy:.0%} of the CPU)")
    return problems


def not_comparable(baseline: Point, candidate: Point, rules: Rules) -> str | None:
    """The reason two cells cannot be compared, or None when they can (same job, both trustworthy)."""
    reasons = []
    if baseline.traffic != candidate.traffic:  # a padded grid batch and real traffic are different workloads
        reasons.append(f"different inputs ({baseline.traffic or 'a fixed-length grid cell'} vs "
                       f"{candidate.traffic or 'a fixed-length grid cell'})")
    if baseline.job_id != candidate.job_id:
        reasons.append(f"different runs (job {baseline.job_id} and job {candidate.job_id})")
    if baseline.variant_id != candidate.variant_id:
        reasons += [f"baseline {problem}" for problem in cell_problems(baseline, rules)]
    reasons += cell_problems(candidate, rules)
    return "; ".join(reasons) or None


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


def speedup_interval(baseline_ms: Sequence[float], candidate_ms: Sequence[float], *, resamples: int = 2000,
                     confidence: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """The ratio of median latencies (baseline / candidate) with a percentile bootstrap interval (scipy), each
    sample resampled on its own: how far the speedup could move if the cells were measured again."""
    import numpy as np
    from scipy.stats import bootstrap

    base, cand = np.asarray(baseline_ms, dtype=float), np.asarray(candidate_ms, dtype=float)

    def ratio(b, c, axis=-1):
        return np.median(b, axis=axis) / np.median(c, axis=axis)

    result = bootstrap((base, cand), ratio, paired=False, vectorized=True, n_resamples=resamples,
                       confidence_level=confidence, method="percentile", rng=np.random.default_rng(seed))
    return float(ratio(base, cand)), float(result.confidence_interval.low), float(result.confidence_interval.high)


def beyond_resolution(low: float, high: float, resolution: float) -> bool:
    """Whether a speedup interval says the two cells differ beyond doubt: it lies wholly above 1 + `resolution`
    (faster) or wholly below 1 / (1 + `resolution`) (slower).

    The interval alone is not enough: each cell is measured in one block of calls, and the calls of a block share
    the machine's state (a neighbour's load, the clock), so the bootstrap, which takes them as independent, is too
    sure. In an EPYC search's run-off two students with the same graph in the same runtime measured 1.04x apart
    with an interval of 1.02-1.07; the benchmark itself calls a cell stable when its window medians agree within
    its `rel_spread`, so nothing closer than that is told apart."""
    return faster_beyond_resolution(low, resolution) or high < 1.0 / (1.0 + resolution)


def faster_beyond_resolution(low: float, resolution: float) -> bool:
    """Whether a speedup interval whose low end is `low` says "faster beyond doubt" (see `beyond_resolution`)."""
    return low > 1.0 + resolution


def speedup(baseline: Point, candidate: Point) -> dict[str, Any]:
    """p50 ratio with its bootstrap 95 % interval from the raw samples, the sample counts behind it, and whether it
    is beyond the benchmark's resolution (`level`: False when it is; True when the two are as fast as far as the
    benchmark can tell)."""
    if not baseline.samples_ms or not candidate.samples_ms:
        raise ValueError("a speedup interval needs the raw samples of both cells")
    if baseline.traffic != candidate.traffic:
        raise ValueError("no speedup between a grid cell and a real-traffic cell, or between different traffic: "
                         f"{baseline.traffic or 'grid'} vs {candidate.traffic or 'grid'}")
    ratio, low, high = speedup_interval(baseline.samples_ms, candidate.samples_ms)
    resolution = max(baseline.resolution, candidate.resolution)
    return {"speedup": ratio, "low": low, "high": high, "n_baseline": len(baseline.samples_ms),
            "n_candidate": len(candidate.samples_ms), "resolution": resolution,
            "level": not beyond_resolution(low, high, resolution)}


def sweet_spot(points: Sequence[Point], baseline_accuracy: float | None, max_drop_points: float,
               slo_ms: float | None) -> Point | None:
    """The fastest non-degenerate point within the latency SLO (None = no SLO) and within `max_drop_points` of the
    baseline. Callers pass only points whose latencies may be compared (see `decide`)."""
    eligible = [
        p for p in points
        if p.accuracy is not None and not p.degenerate
        and (baseline_accuracy is None or (baseline_accuracy - p.accuracy) * 100 <= max_drop_points + 1e-9)
        and (slo_ms is None or p.latency_ms <= slo_ms)
    ]
    return min(eligible, key=lambda p: p.latency_ms, default=None)


def level_and_more_accurate(sweet: Point, points: Sequence[Point], baseline_accuracy: float | None,
                            max_drop_points: float, slo_ms: float | None) -> tuple[Point, str | None]:
    """The sweet spot once ties are broken: among the eligible `points` (as `sweet_spot` reads them) more accurate
    than `sweet`, the most accurate one that `sweet` is not faster than beyond the benchmark's resolution (p50s,
    same job; `beyond_resolution`), with why; else `sweet` and None. The search's run-off breaks ties the same
    way (jobs.search.confirm): a speed-up the benchmark cannot tell from noise buys no accuracy points."""
    if not sweet.samples_ms or sweet.accuracy is None:
        return sweet, None
    level = []
    for p in points:
        if p.variant_id == sweet.variant_id or not p.samples_ms or p.accuracy is None or p.accuracy <= sweet.accuracy \
                or sweet_spot([p], baseline_accuracy, max_drop_points, slo_ms) is None:
            continue
        ratio, low, high = speedup_interval(p.samples_ms, sweet.samples_ms)
        resolution = max(p.resolution, sweet.resolution)
        if not faster_beyond_resolution(low, resolution):
            level.append((p, ratio, low, high, resolution))
    if not level:
        return sweet, None
    p, ratio, low, high, resolution = max(level, key=lambda e: (e[0].accuracy, -e[0].latency_ms))
    return p, (f"{p.label} is the sweet spot although {sweet.label} has the lower p95: at the median {sweet.label} "
               f"ran {ratio:.2f}x as fast (95% interval {low:.2f}-{high:.2f}), not beyond the benchmark's "
               f"{resolution:.0%} resolution, and {p.label} is more accurate ({p.accuracy:.2%} vs {sweet.accuracy:.2%})")


def cost_per_million(throughput_sps: float, hourly_price: float) -> float | None:
    """Dollars (or any currency) per million predictions at the measured throughput, running flat out."""
    if throughput_sps <= 0 or hourly_price < 0:
        return None
    return hourly_price / (throughput_sps * 3600) * 1_000_000


# ---- the comparison the Compare tab, the report and `workbench report` show -----------------------------------

NEWEST_PER_VARIANT = "newest-per-variant"  # run selector: each variant's newest stable row, whatever job made it


@dataclass(frozen=True)
class Fingerprint:
    hash: str
    description: str
    rows: int


@dataclass(frozen=True)
class BenchmarkRun:
    """One benchmark job's rows on a fingerprint: the unit within which latencies may be compared."""

    job_id: int | None
    measured_at: str
    variants: int
    cells: int
    unstable: int
    busy_max: float | None  # the largest share of the CPU other processes took during one of its cells
    rough: bool


@dataclass(frozen=True)
class Comparison:
    fingerprints: list[Fingerprint]  # every fingerprint with rows (after the dataset filter), newest first
    fingerprint: Fingerprint | None  # the one shown: results from different machines are never mixed
    rows: list[dict[str, Any]]  # one row per variant and cell, joined with variant facts, accuracy and validity
    note: str
    runs: list[BenchmarkRun] = field(default_factory=list)  # benchmark jobs on the fingerprint, newest first
    run: int | str | None = None  # the job shown, or NEWEST_PER_VARIANT


def _run_summary(job_id: int | None, rows: list[Any]) -> BenchmarkRun:
    busy = [m.load.get("other_cpu_fraction", 0.0) + m.load.get("steal_fraction", 0.0) for m in rows if m.load]
    return BenchmarkRun(job_id, max(m.created_at for m in rows).isoformat(timespec="seconds"),
                        len({m.variant_id for m in rows}), len({(m.batch_size, m.seq_len) for m in rows}),
                        sum(not m.stable for m in rows), max(busy) if busy else None, any(m.rough for m in rows))


def build_comparison(dataset_id: int | None = None, fingerprint_hash: str | None = None,
                     run: int | str | None = None) -> Comparison:
    """The rows of one fingerprint and one benchmark job (`run`: a job id; None = the newest job), or with
    `run=NEWEST_PER_VARIANT` each variant's newest stable row (else its newest), each naming its job."""
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
    notes = []
    if len(fingerprints) > 1:
        notes.append(f"{len(fingerprints)} hardware/library fingerprints have results; showing {chosen.description} "
                     f"only (pick another to see its results; they are never mixed).")
    on_fp = [m for m in measurements if m.fingerprint_hash == chosen.hash]
    by_job: dict[int | None, list[Any]] = {}
    for m in on_fp:
        by_job.setdefault(m.job_id, []).append(m)
    newest_first = sorted(by_job, key=lambda j: max(m.id for m in by_job[j]), reverse=True)
    runs = [_run_summary(j, by_job[j]) for j in newest_first]
    newest: dict[tuple[int, int, int], Any] = {}
    if run == NEWEST_PER_VARIANT:
        for m in on_fp:  # oldest first: a later row replaces an earlier one unless it is unstable and that was not
            key = (m.variant_id, m.batch_size, m.seq_len)
            if key not in newest or m.stable or not newest[key].stable:
                newest[key] = m
        notes.append("Each variant's newest stable measurement, whatever run made it: latencies from different "
                     "runs are shown side by side, but no speedup is computed between them.")
        shown: int | str | None = NEWEST_PER_VARIANT
    else:
        shown = run if any(r.job_id == run for r in runs) else runs[0].job_id
        for m in by_job.get(shown, []):
            newest[(m.variant_id, m.batch_size, m.seq_len)] = m
        if len(runs) > 1:
            notes.append(f"Showing benchmark job {shown} ({len(runs)} runs on this machine; pick another run, or "
                         "each variant's newest stable row). Runs are never mixed silently.")
    latest_eval = catalog.latest_evaluations()
    variants = {v.id: v for v in catalog.list_variants()}
    resolutions = job_resolutions([m.job_id for m in newest.values()])
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
            "accuracy_low": ev.accuracy_low if ev else None, "accuracy_high": ev.accuracy_high if ev else None,
            "majority_accuracy": ev.majority_accuracy if ev else None,
            "degenerate": bool(ev and ev.degenerate), "degenerate_reason": ev.degenerate_reason if ev else None,
            "batch_size": m.batch_size, "seq_len": m.seq_len, "samples": m.samples,
            "p50_ms": m.p50_ms, "p90_ms": m.p90_ms, "p95_ms": m.p95_ms, "p99_ms": m.p99_ms,
            "mean_ms": m.mean_ms, "std_ms": m.std_ms, "throughput_sps": m.throughput_sps, "tokens_per_s": m.tokens_per_s,
            "peak_rss_mb": round(m.peak_rss_bytes / 1e6, 1) if m.peak_rss_bytes else None,
            "gpu_peak_mb": round(m.gpu_peak_bytes / 1e6, 1) if m.gpu_peak_bytes else None,
            "load_time_s": m.load_time_s, "threads": m.threads, "stable": m.stable, "spread": m.spread,
            "other_cpu_fraction": m.load.get("other_cpu_fraction"), "steal_fraction": m.load.get("steal_fraction"),
            "loadavg_1m": m.load.get("loadavg_1m"), "rough": m.rough, "device": m.device, "job_id": m.job_id,
            "samples_ms": m.samples_ms, "traffic": m.traffic, "resolution": resolutions[m.job_id],
            "fingerprint": chosen.hash, "measured_at": m.created_at.isoformat(timespec="seconds"),
        })
    return Comparison(fingerprints, chosen, rows, " ".join(notes), runs, shown)


DISPLAY_HIDDEN = ("samples_ms",)  # per-call timings: kept for intervals, too long for a table or a CSV cell


def display_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows for tables and exports, without the raw per-call samples; real traffic's record as one line."""
    from jobs.bench.traffic import summary

    return [{k: summary(v) if k == "traffic" else v for k, v in r.items() if k not in DISPLAY_HIDDEN} for r in rows]


def cell_points(rows: Sequence[dict[str, Any]], batch_size: int, seq_len: int) -> list[Point]:
    from jobs.bench.traffic import describe as describe_traffic

    def point(r: dict[str, Any]) -> Point:
        samples = r.get("samples_ms")
        return Point(
            r["variant_id"], r["label"], r["p95_ms"], r["accuracy"], r["p50_ms"], r["p90_ms"], r["throughput_sps"],
            job_id=r.get("job_id"), samples=r.get("samples", len(samples or ())), stable=bool(r.get("stable")),
            spread=r.get("spread"), other_cpu_fraction=r.get("other_cpu_fraction"),
            steal_fraction=r.get("steal_fraction"), samples_ms=tuple(samples) if samples else None,
            degenerate=bool(r.get("degenerate")), degenerate_reason=r.get("degenerate_reason"),
            accuracy_low=r.get("accuracy_low"), accuracy_high=r.get("accuracy_high"), rough=bool(r.get("rough")),
            traffic=describe_traffic(r.get("traffic")), resolution=r.get("resolution") or DEFAULT_RESOLUTION)

    return [point(r) for r in rows if r["batch_size"] == batch_size and r["seq_len"] == seq_len]


@dataclass(frozen=True)
class Decision:
    """Everything the charts need for one cell: points, the frontier, speedups, the sweet spot, costs, and why a
    figure or the decision itself is missing."""

    batch_size: int
    seq_len: int
    points: list[Point]
    front: list[Point]
    baseline: Point | None
    ratios: dict[int, dict[str, float]]  # only between comparable cells
    sweet: Point | None
    costs: dict[int, float | None]
    not_comparable: dict[int, str] = field(default_factory=dict)  # variant id -> why it has no speedup
    undecided: str | None = None  # why there is no sweet spot, when there is none
    tie: str | None = None  # why the sweet spot is not the variant with the lowest p95 (a tie broken by accuracy)

    @property
    def candidates(self) -> list[Point]:
        """Points whose latency may be compared with the baseline's (the baseline included, when its cell is sound)."""
        return [p for p in self.points if p.variant_id in self.ratios]


def decide(rows: Sequence[dict[str, Any]], batch_size: int, seq_len: int, baseline_id: int | None = None,
           slo_ms: float | None = None, max_drop_points: float = 1.0, hourly_price: float = 0.0,
           rules: Rules | None = None) -> Decision:
    """The sweet spot at one cell, from comparable cells only: the same benchmark job, enough samples, stable,
    a machine not busy; never a degenerate variant, and never measured against a degenerate baseline."""
    rules = rules or Rules.from_settings()
    points = cell_points(rows, batch_size, seq_len)
    baseline = next((p for p in points if p.variant_id == baseline_id), None)
    if baseline is None and points:  # default: the slowest variant, usually the fp32 original
        baseline = max(points, key=lambda p: p.p50_ms)
    ratios: dict[int, dict[str, float]] = {}
    excluded: dict[int, str] = {}
    for p in points if baseline else []:
        reason = not_comparable(baseline, p, rules)
        if reason:
            excluded[p.variant_id] = reason
        else:
            ratios[p.variant_id] = speedup(baseline, p)
    costs = {p.variant_id: cost_per_million(p.throughput_sps, hourly_price) for p in points} if hourly_price else {}
    decision = Decision(batch_size, seq_len, points, pareto_front(points), baseline, ratios, None, costs, excluded)
    undecided = None
    if baseline is None:
        undecided = "nothing is measured at this cell"
    elif baseline.degenerate:
        undecided = (f"the baseline {baseline.label} is degenerate ({baseline.degenerate_reason}): accuracy drops "
                     "measured against it mean nothing; fix or re-train it first")
    elif baseline.accuracy is None:
        undecided = f"the baseline {baseline.label} has no accuracy yet: evaluate it first"
    elif baseline.variant_id in excluded:
        undecided = f"the baseline's cell is not comparable: {excluded[baseline.variant_id]}"
    sweet = None if undecided else sweet_spot(decision.candidates, baseline.accuracy, max_drop_points, slo_ms)
    unmeasured = [p for p in points if p.variant_id in excluded and sweet_spot([p], baseline.accuracy,
                                                                               max_drop_points, None) is not None]
    if sweet is not None and unmeasured:  # it might have been faster: "the fastest" cannot be claimed
        sweet = None
        undecided = ("variants within the tolerance could not be compared with the baseline: "
                     + "; ".join(f"{p.label}: {excluded[p.variant_id]}" for p in unmeasured))
    if sweet is None and undecided is None:
        left_out = [f"{p.label}: {excluded[p.variant_id]}" for p in points if p.variant_id in excluded]
        left_out += [f"{p.label}: degenerate ({p.degenerate_reason})" for p in decision.candidates if p.degenerate]
        undecided = ("no comparable, non-degenerate variant is within the tolerance"
                     + (" and the SLO" if slo_ms else "") + (f" ({'; '.join(left_out)})" if left_out else ""))
    tie = None
    if sweet is not None:
        sweet, tie = level_and_more_accurate(sweet, decision.candidates, baseline.accuracy, max_drop_points, slo_ms)
    return dataclasses.replace(decision, sweet=sweet, undecided=undecided, tie=tie)


def focus_variants(decision: Decision, limit: int = 12) -> list[int]:
    """The variants a decision is about, most important first: sweet spot, baseline, frontier, then the fastest."""
    ordered = ([decision.sweet.variant_id] if decision.sweet else []) + \
        ([decision.baseline.variant_id] if decision.baseline else []) + \
        [p.variant_id for p in decision.front] + [p.variant_id for p in sorted(decision.points, key=lambda p: p.p50_ms)]
    return list(dict.fromkeys(ordered))[:limit]
