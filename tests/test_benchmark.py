"""Benchmark: the stop rule on a synthetic timer, statistics, decision functions on known points, and the job."""

from __future__ import annotations

import random

import pytest

from jobs.bench.stability import StopRule, measure, window_spread
from jobs.bench.stats import summarize
from jobs.decisions.compare import Point, cost_per_million, pareto_front, speedup, sweet_spot


class FakeClock:
    """A clock that only moves when a timed call 'runs': each call costs base * noise seconds."""

    def __init__(self, durations):
        self.now = 0.0
        self.durations = iter(durations)
        self.calls = 0

    def __call__(self) -> float:
        return self.now

    def call(self) -> None:
        self.now += next(self.durations)
        self.calls += 1


def test_quiet_timer_stops_as_soon_as_the_windows_agree():
    rng = random.Random(0)
    clock = FakeClock(0.010 * (1 + rng.uniform(-0.01, 0.01)) for _ in range(10_000))
    rule = StopRule(warmup=5, window=10, windows=3, rel_spread=0.05, min_samples=30, max_seconds=60)
    timing = measure(clock.call, rule, clock=clock)
    assert timing.stable and timing.stopped_by == "stable"
    assert len(timing.samples_ms) == 30 and clock.calls == 35  # warm-up calls are not timed
    assert timing.spread is not None and timing.spread <= 0.05
    assert 9.8 < sum(timing.samples_ms) / 30 < 10.2


def test_noisy_timer_hits_the_time_cap_and_says_so():
    rng = random.Random(1)
    clock = FakeClock(0.010 * rng.choice([1, 3]) * rng.uniform(0.5, 1.5) for _ in range(10_000))
    rule = StopRule(warmup=0, window=5, windows=3, rel_spread=0.01, min_samples=15, max_seconds=2.0)
    timing = measure(clock.call, rule, clock=clock)
    assert not timing.stable and timing.stopped_by == "time cap"
    assert timing.seconds >= 2.0 and timing.spread is not None and timing.spread > 0.01


def test_a_drifting_timer_is_not_called_stable_until_it_settles():
    # 100 calls getting slower (thermal throttling, a neighbour), then flat: stability only once it is flat
    durations = [0.010 + 0.0002 * i for i in range(100)] + [0.030] * 1000
    clock = FakeClock(durations)
    timing = measure(clock.call, StopRule(warmup=0, window=10, windows=3, rel_spread=0.02, min_samples=30, max_seconds=600),
                     clock=clock)
    assert timing.stable and len(timing.samples_ms) >= 120


def test_window_spread_on_known_medians():
    samples = [10.0] * 10 + [11.0] * 10 + [12.0] * 10
    assert window_spread(samples, 10, 3) == pytest.approx(2 / 11)
    assert window_spread(samples[:20], 10, 3) is None


def test_bad_stop_rules_are_refused():
    with pytest.raises(ValueError, match="rel_spread"):
        StopRule(rel_spread=5)
    with pytest.raises(ValueError, match="windows >= 2"):
        StopRule(windows=1)


def test_summary_statistics():
    s = summarize([10.0, 20.0, 30.0, 40.0], batch_size=8, seq_len=128)
    assert s["p50_ms"] == 25.0 and s["mean_ms"] == 25.0 and s["samples"] == 4
    assert s["throughput_sps"] == pytest.approx(8 * 4 / 0.1)  # 32 samples in 100 ms
    assert s["tokens_per_s"] == pytest.approx(s["throughput_sps"] * 128)


POINTS = [
    Point(1, "fp32", latency_ms=100, accuracy=0.80, p50_ms=90, p90_ms=110),
    Point(2, "bf16", latency_ms=30, accuracy=0.801, p50_ms=25, p90_ms=32),
    Point(3, "int8", latency_ms=20, accuracy=0.792, p50_ms=18, p90_ms=22),
    Point(4, "pruned", latency_ms=25, accuracy=0.70, p50_ms=22, p90_ms=27),  # dominated by int8
    Point(5, "slow-and-worse", latency_ms=120, accuracy=0.75, p50_ms=100, p90_ms=130),
    Point(6, "unevaluated", latency_ms=10, accuracy=None),
]


def test_pareto_front_on_known_points():
    assert [p.variant_id for p in pareto_front(POINTS)] == [3, 2]


def test_sweet_spot_respects_tolerance_and_slo():
    assert sweet_spot(POINTS, 0.80, max_drop_points=1.0, slo_ms=None).variant_id == 3  # 0.8 pts lost
    assert sweet_spot(POINTS, 0.80, max_drop_points=0.5, slo_ms=None).variant_id == 2
    assert sweet_spot(POINTS, 0.80, max_drop_points=0.5, slo_ms=15) is None
    assert sweet_spot(POINTS, 0.80, max_drop_points=50, slo_ms=24).variant_id == 3


def test_speedup_interval_matches_a_direct_bootstrap():
    """The bootstrap interval of the ratio of medians, against the same resampling written out by hand."""
    import numpy as np

    from jobs.decisions.compare import speedup_interval

    rng = np.random.default_rng(7)
    base = 90 + rng.gamma(2.0, 3.0, 60)  # right-skewed like real latencies
    cand = 18 + rng.gamma(2.0, 0.8, 40)
    ratio, low, high = speedup_interval(base, cand, resamples=4000)
    assert ratio == pytest.approx(np.median(base) / np.median(cand))
    direct = np.random.default_rng(11)
    ratios = [np.median(direct.choice(base, base.size)) / np.median(direct.choice(cand, cand.size)) for _ in range(4000)]
    d_low, d_high = np.percentile(ratios, [2.5, 97.5])
    assert low == pytest.approx(d_low, rel=0.02) and high == pytest.approx(d_high, rel=0.02)
    assert low < ratio < high
    wider = speedup_interval(base[:10], cand[:10], resamples=4000)  # fewer samples: a wider interval
    assert wider[2] - wider[1] > high - low


def test_speedup_needs_raw_samples():
    with pytest.raises(ValueError, match="raw samples"):
        speedup(POINTS[0], POINTS[2])


def test_cost_per_million_predictions():
    assert cost_per_million(100.0, hourly_price=3.6) == pytest.approx(10.0)
    assert cost_per_million(0.0, 1.0) is None


@pytest.mark.slow
def test_benchmark_job_writes_every_field_for_interleaved_variants(home, tmp_path, minilm_dir):
    from jobs import api
    from storage import catalog
    from tests.conftest import run_cli
    from tests.support.data import write_sentiment_csv
    from tests.support.tiny import tiny_classifier

    model = api.add_model(api.ModelRequest(str(tiny_classifier(tmp_path / "tiny", minilm_dir)), name="tiny")).model
    api.add_dataset(api.DatasetRequest(str(write_sentiment_csv(tmp_path / "toy.csv")), name="toy"))
    export = api.submit("export-onnx", {}, model="tiny", dataset="toy")
    run_cli("worker", "--burst")
    onnx_variant = api.get_job(export.id).produced_variant_id
    assert onnx_variant, api.job_log(export.id)[-2000:]
    root = catalog.root_variant(model.id).id
    job = api.submit("benchmark", {"compare_with": [onnx_variant], "batch_sizes": [1, 4], "seq_lens": [16],
                                   "warmup": 2, "window": 5, "min_samples": 10, "max_seconds": 1.5, "threads": 1},
                     variant=root, dataset="toy")
    assert job.device == "cpu"
    run_cli("worker", "--burst")
    job = api.get_job(job.id)
    assert job.status.value == "succeeded", api.job_log(job.id)[-3000:]
    rows = catalog.list_measurements()
    assert len(rows) == 4 and {r.variant_id for r in rows} == {root, onnx_variant}
    # interleaved: both variants' batch-1 cells come before either batch-4 cell, and the order rotates
    assert [r.batch_size for r in rows] == [1, 1, 4, 4] and rows[0].variant_id != rows[2].variant_id
    for r in rows:
        assert r.samples >= 1 and 0 < r.p50_ms <= r.p90_ms <= r.p95_ms <= r.p99_ms
        assert r.mean_ms > 0 and r.std_ms >= 0 and r.throughput_sps > 0 and r.tokens_per_s == pytest.approx(r.throughput_sps * 16)
        assert r.peak_rss_bytes > 50e6 and r.load_time_s > 0 and r.threads == 1 and r.gpu_peak_bytes is None
        assert r.fingerprint["cpu"] and "torch" in r.fingerprint["libraries"] and len(r.fingerprint_hash) == 16
        assert r.spread is None or r.spread >= 0
    assert len({r.fingerprint_hash for r in rows}) == 1
