"""Benchmarks on real traffic: batches drawn from the test split with dynamic padding (and length bucketing).

One module-scoped run of real jobs on tiny models: a real-traffic benchmark of two variants without bucketing
(submitted through the CLI's generic --param), the same traffic with bucketing, and a grid benchmark. The recorded
length distribution is checked against the tokenizer run directly on the same sampled texts; bucketing's lower
padding is a property of the batches, not a timing; grid and real-traffic rows are never compared.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from jobs.bench.traffic import REAL_TRAFFIC_SEQ, form_batches, sample_texts, texts_for
from tests.support.data import write_mixed_lengths_csv

TEXTS, BATCH, MAX_LENGTH, SEED = 16, 4, 48, 3
FAST_RULE = {"warmup": 1, "window": 4, "min_samples": 8, "max_seconds": 1.0, "threads": 1}


@pytest.fixture(scope="module")
def measured(tmp_path_factory, minilm_dir):
    """Three benchmark jobs run by one worker: real traffic (two variants, submitted through the CLI), real traffic
    with bucketing, and the grid; returns their jobs, the variants and the test split. (Each variant loads in its
    own process per job: four loads, most of this module's time.)"""
    from jobs import api
    from jobs.ml.data import split_examples
    from storage import catalog, db
    from tests.conftest import run_cli, use_database
    from tests.support.tiny import tiny_classifier

    tmp = tmp_path_factory.mktemp("traffic")
    monkey = pytest.MonkeyPatch()
    monkey.setenv("WORKBENCH_HOME", str(tmp / "home"))
    use_database(monkey, None)
    db.dispose_all()
    db.upgrade()
    try:
        a = api.add_model(api.ModelRequest(str(tiny_classifier(tmp / "a", minilm_dir, seed=0)), name="a")).variant
        b = api.add_model(api.ModelRequest(str(tiny_classifier(tmp / "b", minilm_dir, seed=1)), name="b")).variant
        dataset = api.add_dataset(api.DatasetRequest(str(write_mixed_lengths_csv(tmp / "mixed.csv")), name="mixed"))
        rule = [f"--param={k}={v}" for k, v in FAST_RULE.items()]
        out = run_cli("jobs", "submit", "benchmark", "--variant", str(a.id), "--dataset", "mixed", "--param",
                      "traffic=real", "--param", f"compare_with={b.id}", "--param", f"batch_sizes={BATCH}",
                      "--param", f"texts={TEXTS}", "--param", f"max_length={MAX_LENGTH}", "--param", f"seed={SEED}",
                      *rule, "--json")
        plain = json.loads(out.stdout)["id"]
        common = {"batch_sizes": [BATCH], "texts": TEXTS, **FAST_RULE}
        bucketed = api.submit("benchmark", {**common, "traffic": "real", "bucketing": True, "max_length": MAX_LENGTH,
                                            "seed": SEED}, variant=a.id, dataset="mixed").id
        grid = api.submit("benchmark", {**common, "seq_lens": [16]}, variant=a.id, dataset="mixed").id
        run_cli("worker", "--burst")
        for job in (plain, bucketed, grid):
            assert api.get_job(job).status.value == "succeeded", api.job_log(job)[-3000:]
        rows = {job: [m for m in catalog.list_measurements() if m.job_id == job] for job in (plain, bucketed, grid)}
        split = split_examples(dataset, "test").texts
        yield {"a": a, "b": b, "plain": plain, "bucketed": bucketed, "grid": grid, "rows": rows, "split": split}
    finally:
        db.dispose_all()
        monkey.undo()


def direct_lengths(variant, texts, truncate: bool = True):
    """Token lengths the model sees (or, without `truncate`, the texts' own), from the variant's own tokenizer called
    directly, not through the benchmark's code."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(variant.artifact_dir, local_files_only=True)
    cut = {"truncation": True, "max_length": MAX_LENGTH} if truncate else {"truncation": False, "verbose": False}
    return [len(ids) for ids in tokenizer(texts, **cut)["input_ids"]]


def padded_tokens(lengths, batches):
    return sum(len(batch) * max(lengths[i] for i in batch) for batch in batches)


@pytest.mark.slow
def test_real_traffic_records_its_length_distribution(measured):
    rows = measured["rows"][measured["plain"]]
    assert {m.variant_id for m in rows} == {measured["a"].id, measured["b"].id}
    sampled = sample_texts(measured["split"], texts_for(TEXTS, BATCH), SEED)
    assert len(sampled) == TEXTS and set(sampled) <= set(measured["split"])
    lengths = direct_lengths(measured["a"], sampled)
    for m in rows:
        t = m.traffic
        assert m.seq_len == REAL_TRAFFIC_SEQ and m.batch_size == BATCH
        assert t["source"] == "test split" and t["texts"] == TEXTS and t["bucketing"] is False
        assert t["max_length"] == MAX_LENGTH and t["seed"] == SEED and t["batches"] == TEXTS // BATCH
        q = t["token_lengths"]
        for name, value in zip(("p50", "p90", "p99"), np.percentile(lengths, [50, 90, 99]), strict=True):
            assert q[name] == pytest.approx(value)
        assert q["max"] == max(lengths) <= MAX_LENGTH and q["mean"] == pytest.approx(np.mean(lengths))
        assert 0 < t["truncated"] == sum(n > MAX_LENGTH for n in direct_lengths(measured["a"], sampled, truncate=False))
        assert sum(t["histogram"]["counts"]) == TEXTS
        # arrival order, batches of BATCH consecutive texts, each padded to its longest
        arrival = [list(range(i, i + BATCH)) for i in range(0, TEXTS, BATCH)]
        assert t["real_tokens"] == sum(lengths) and t["padded_tokens"] == padded_tokens(lengths, arrival)
        assert t["padding_waste"] == pytest.approx((t["padded_tokens"] - sum(lengths)) / sum(lengths))
        # per-request latency: every batch is full, so each call is BATCH requests of that latency
        assert 0 < m.p50_ms <= m.p95_ms and m.throughput_sps > 0 and m.samples >= 8
        # (the stored samples are rounded to 0.1 us)
        assert m.throughput_sps == pytest.approx(BATCH * len(m.samples_ms) / (sum(m.samples_ms) / 1000), rel=1e-3)
        assert m.tokens_per_s == pytest.approx(m.throughput_sps * q["mean"])
        assert m.load["cpus"] >= 1 and len(m.fingerprint_hash) == 16  # the same load record and fingerprint
    grid = measured["rows"][measured["grid"]]
    assert grid and all(m.traffic is None and m.seq_len == 16 for m in grid)
    assert {m.fingerprint_hash for m in grid} == {m.fingerprint_hash for m in rows}


@pytest.mark.slow
def test_bucketing_pads_less_on_mixed_lengths(measured):
    plain = next(m for m in measured["rows"][measured["plain"]] if m.variant_id == measured["a"].id).traffic
    bucketed = measured["rows"][measured["bucketed"]][0].traffic
    assert bucketed["bucketing"] is True and bucketed["token_lengths"] == plain["token_lengths"]  # the same texts
    assert bucketed["real_tokens"] == plain["real_tokens"]
    assert bucketed["padding_waste"] < plain["padding_waste"]
    # the bucketed record is the sorted-by-length batching computed directly
    lengths = direct_lengths(measured["a"], sample_texts(measured["split"], TEXTS, SEED))
    by_length = sorted(range(TEXTS), key=lambda i: lengths[i])
    assert bucketed["padded_tokens"] == padded_tokens(lengths, [by_length[i : i + BATCH] for i in range(0, TEXTS, BATCH)])


@pytest.mark.slow
def test_grid_and_real_traffic_rows_are_never_compared(measured):
    from jobs.decisions.compare import (
        NEWEST_PER_VARIANT,
        Rules,
        build_comparison,
        cell_points,
        decide,
        not_comparable,
        speedup,
    )

    rows = build_comparison(run=NEWEST_PER_VARIANT).rows
    quiet = Rules(min_samples=1, busy_cpu_fraction=1.0)  # this test is about inputs, not about a busy machine

    def sound(point, job_id=None):  # as if measured quietly (and, for the check, in the same job)
        return dataclasses.replace(point, stable=True, other_cpu_fraction=0.0, steal_fraction=0.0,
                                   job_id=job_id if job_id is not None else point.job_id)

    real = [sound(p) for p in cell_points(rows, BATCH, REAL_TRAFFIC_SEQ)]
    grid = [sound(p) for p in cell_points(rows, BATCH, 16)]
    assert real and grid and all(p.traffic for p in real) and not any(p.traffic for p in grid)
    same_job = [sound(p) for p in cell_points(build_comparison(run=measured["plain"]).rows, BATCH, REAL_TRAFFIC_SEQ)]
    assert len(same_job) == 2 and not_comparable(same_job[0], same_job[1], quiet) is None
    assert speedup(same_job[0], same_job[1])["speedup"] > 0  # real traffic against real traffic of one job
    forged = sound(grid[0], job_id=same_job[0].job_id)  # even claimed to come from the same job
    assert "different inputs" in not_comparable(same_job[0], forged, quiet)
    with pytest.raises(ValueError, match="grid cell and a real-traffic cell"):
        speedup(same_job[0], forged)
    # a decision at the real-traffic cell holds real-traffic points only, and says what the cell is
    decision = decide(rows, BATCH, REAL_TRAFFIC_SEQ, rules=quiet)
    assert decision.points and all(p.traffic for p in decision.points)
    from jobs import api

    assert api.cell_label(BATCH, REAL_TRAFFIC_SEQ) == f"batch {BATCH} x real traffic (test split)"
    shown = api.display_rows([r for r in rows if r["seq_len"] == REAL_TRAFFIC_SEQ])
    assert all("padding waste" in r["traffic"] for r in shown)


def test_form_batches_and_bad_params():
    from jobs.kinds.benchmark import BenchmarkParams
    from jobs.runner.params import parse_params
    from storage.errors import InvalidInput

    lengths = [3, 40, 4, 38, 5, 41]
    assert form_batches(lengths, 2, bucketing=False) == [[0, 1], [2, 3], [4, 5]]
    assert form_batches(lengths, 2, bucketing=True) == [[0, 2], [4, 3], [1, 5]]
    assert texts_for(10, 4) == 12 and texts_for(8, 4) == 8
    assert sample_texts(["x", "y", "z"], 5, 0)[:3] == sample_texts(["x", "y", "z"], 3, 0)  # a prefix is the sample
    # the CLI's `--param batch_sizes=16` arrives as a lone number: a one-item list is meant
    assert parse_params(BenchmarkParams, {"batch_sizes": 16, "compare_with": 2}).batch_sizes == (16,)
    with pytest.raises(InvalidInput, match="traffic=real"):
        parse_params(BenchmarkParams, {"bucketing": True})
    with pytest.raises(InvalidInput, match="traffic="):
        parse_params(BenchmarkParams, {"traffic": "replay"})
    with pytest.raises(InvalidInput, match="max_length"):
        parse_params(BenchmarkParams, {"traffic": "real", "max_length": 1000})
