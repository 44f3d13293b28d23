"""Trustworthy decisions: a degenerate classifier is caught and never recommended or promoted without force, and a
speedup is only computed between sound cells of one benchmark job (pure functions on stored rows, plus real jobs)."""

from __future__ import annotations

import pytest

from tests.support.rows import placeholder_model
from tests.test_compare import benchmark_job, samples_around

# ---- model validity on confusion matrices --------------------------------------------------------------------


def test_one_class_for_every_input_is_degenerate():
    from jobs.ml.metrics import model_validity

    v = model_validity({"labels": ["neg", "neu", "pos"], "matrix": [[34, 0, 0], [33, 0, 0], [33, 0, 0]]})
    assert v["degenerate"] and v["degenerate_reason"] == "predicts 'neg' for 100% of the 100 examples"
    assert v["majority_accuracy"] == pytest.approx(0.34) and v["majority_label"] == "neg"
    assert v["per_class_recall"] == {"neg": 1.0, "neu": 0.0, "pos": 0.0}


def test_no_better_than_the_majority_class_is_degenerate_and_a_real_model_is_not():
    from statsmodels.stats.proportion import proportion_confint

    from jobs.ml.metrics import model_validity

    # 45 % accuracy where always answering "neu" scores 40 %: inside the interval, so not better
    weak = model_validity({"labels": ["neg", "neu", "pos"], "matrix": [[10, 15, 5], [15, 20, 5], [5, 10, 15]]})
    assert weak["degenerate"] and "not better than always answering 'neu' (40.0%)" in weak["degenerate_reason"]
    low, high = proportion_confint(45, 100, alpha=0.05, method="wilson")
    assert (weak["accuracy_low"], weak["accuracy_high"]) == pytest.approx((low, high))
    good = model_validity({"labels": ["neg", "neu", "pos"], "matrix": [[20, 5, 5], [5, 30, 5], [5, 5, 20]]})
    assert not good["degenerate"] and good["degenerate_reason"] is None and good["accuracy_low"] > 0.4
    # a dataset that is itself nearly one class: predicting that class is not "one class for all" by itself
    skewed = model_validity({"labels": ["a", "b"], "matrix": [[960, 0], [30, 10]]})
    assert not skewed["degenerate"] or "not better" in skewed["degenerate_reason"]


def test_small_evaluations_are_stratified_and_seeded(tmp_path, home):
    from jobs import api
    from jobs.ml.data import split_examples
    from tests.support.data import write_sentiment_csv

    dataset = api.add_dataset(api.DatasetRequest(str(write_sentiment_csv(tmp_path / "toy.csv", per_class=200)), name="toy"))
    full = split_examples(dataset, "test")
    sample = split_examples(dataset, "test", 30)
    assert len(sample) == 30 and sample.texts == split_examples(dataset, "test", 30).texts
    for label in set(full.labels):  # each label's share within one example of its share in the split
        assert abs(sample.labels.count(label) - 30 * full.labels.count(label) / len(full)) <= 1


# ---- decisions on stored rows -----------------------------------------------------------------------------------


def row(vid: int, p50: float, acc: float | None, job: int = 1, samples: int = 50, stable: bool = True,
        other_cpu: float = 0.02, degenerate: bool = False, with_samples: bool = True, resolution: float = 0.05) -> dict:
    return {"variant_id": vid, "label": f"#{vid}", "batch_size": 1, "seq_len": 128, "p50_ms": p50, "p90_ms": p50 * 1.1,
            "p95_ms": p50 * 1.2, "throughput_sps": 1000 / p50, "accuracy": acc, "job_id": job, "samples": samples,
            "samples_ms": samples_around(p50, samples) if with_samples else None, "stable": stable,
            "spread": 0.01 if stable else 0.2, "other_cpu_fraction": other_cpu, "steal_fraction": 0.0,
            "degenerate": degenerate, "degenerate_reason": "predicts 'negative' for 100% of the 64 examples"
            if degenerate else None, "resolution": resolution}


def test_a_degenerate_variant_is_never_the_sweet_spot():
    from jobs.decisions.compare import decide
    from workbench.formatting import decision_table

    rows = [row(1, 30.0, 0.80), row(2, 10.0, 0.80), row(3, 3.0, 0.80, degenerate=True)]
    decision = decide(rows, 1, 128, baseline_id=1)
    assert decision.sweet.variant_id == 2 and decision.undecided is None
    assert 3 in decision.ratios  # its latency is sound; it is its answers that are not
    table = {r["variant"]: r for r in decision_table(decision)}
    assert table["#3"]["validity"].startswith("DEGENERATE: predicts 'negative'") and table["#3"]["sweet spot"] == ""
    broken_baseline = decide([row(1, 30.0, 0.34, degenerate=True), row(2, 10.0, 0.34)], 1, 128, baseline_id=1)
    assert broken_baseline.sweet is None and "baseline #1 is degenerate" in broken_baseline.undecided


@pytest.mark.parametrize("bad, reason", [
    (dict(samples=1), "too few samples (1 < 20)"),
    (dict(stable=False), "unstable: window medians 20% apart"),
    (dict(other_cpu=0.6), "machine busy (other processes and steal took 60% of the CPU)"),
    (dict(job=2), "different runs (job 1 and job 2)"),
    (dict(with_samples=False), "measured before samples and load were recorded"),
])
def test_unsound_cells_give_no_speedup_and_no_sweet_spot(bad, reason):
    from jobs.decisions.compare import decide
    from workbench.formatting import decision_table

    decision = decide([row(1, 30.0, 0.80), row(2, 10.0, 0.80, **bad)], 1, 128, baseline_id=1)
    assert 2 not in decision.ratios and reason in decision.not_comparable[2]
    # it might be the fastest within the tolerance: neither it nor "keep the baseline" can be claimed
    assert decision.sweet is None and decision.undecided.startswith("variants within the tolerance could not be")
    assert reason in decision.undecided
    worse = decide([row(1, 30.0, 0.80), row(2, 10.0, 0.70, **bad)], 1, 128, baseline_id=1)
    assert worse.sweet.variant_id == 1  # out of the tolerance anyway: the baseline stays, from sound cells
    fast = {r["variant"]: r for r in decision_table(decision)}["#2"]
    assert fast["speedup (95% interval)"].startswith("not comparable: ") and reason in fast["speedup (95% interval)"]
    # the same problem on the baseline's cell: nothing can be decided, and it says why
    base_bad = {k: v for k, v in bad.items() if k != "job"}
    if base_bad:
        undecided = decide([row(1, 30.0, 0.80, **base_bad), row(2, 10.0, 0.80)], 1, 128, baseline_id=1)
        assert undecided.sweet is None and undecided.undecided.startswith("the baseline's cell is not comparable")


def test_a_speedup_within_the_benchmarks_resolution_is_a_tie_that_accuracy_breaks():
    """Two cells 3 % apart, each measured within 1 %: the bootstrap interval (about 1.02-1.04) excludes 1, but the
    benchmark cannot tell cells apart closer than its resolution (its rel_spread), so the more accurate one is the
    sweet spot, and the page says why; with a 1 % resolution the faster one is."""
    from jobs.decisions.compare import decide
    from workbench.formatting import decision_table
    from workbench.tabs.compare import summary_line

    rows = [row(1, 30.0, 0.80), row(2, 10.0, 0.795), row(3, 10.3, 0.80)]
    decision = decide(rows, 1, 128, baseline_id=1, max_drop_points=1.0)
    assert decision.sweet.variant_id == 3 and decision.ratios[3]["level"] is False  # 2.9x the baseline: beyond
    assert decision.tie.startswith("#3 is the sweet spot although #2 has the lower p95: at the median #2 ran 1.03x")
    assert "not beyond the benchmark's 5% resolution" in decision.tie and "80.00% vs 79.50%" in decision.tie
    assert summary_line(decision, 1.0).endswith("\n\n" + decision.tie + ".")
    fine = decide([row(1, 30.0, 0.80), row(2, 10.0, 0.795, resolution=0.01), row(3, 10.3, 0.80, resolution=0.01)],
                  1, 128, baseline_id=1, max_drop_points=1.0)
    assert fine.sweet.variant_id == 2 and fine.tie is None  # a benchmark that resolves 1 %: 3 % is beyond it
    clearly = decide([row(1, 30.0, 0.80), row(2, 8.0, 0.795), row(3, 10.3, 0.80)], 1, 128, baseline_id=1)
    assert clearly.sweet.variant_id == 2 and clearly.tie is None
    slo = decide(rows, 1, 128, baseline_id=1, max_drop_points=1.0, slo_ms=12.2)  # #3's p95 is 12.36 ms
    assert slo.sweet.variant_id == 2 and slo.tie is None
    strict = decide(rows, 1, 128, baseline_id=1, max_drop_points=0.1)  # #2 loses 0.5 points: out of the tolerance
    assert strict.sweet.variant_id == 3 and strict.tie is None
    # as fast as the baseline and less accurate: keep the baseline, and the table says the 1.02x is a tie
    level = decide([row(1, 30.0, 0.80), row(2, 29.5, 0.79)], 1, 128, baseline_id=1)
    assert level.sweet.variant_id == 1 and level.ratios[2]["level"] is True and "#1 is the sweet spot" in level.tie
    speed = {r["variant"]: r["speedup (95% interval)"] for r in decision_table(level)}["#2"]
    assert speed.startswith("1.02x (") and speed.endswith("; as fast, within the benchmark's 5% resolution)")
    faster = {r["variant"]: r["speedup (95% interval)"] for r in decision_table(decision)}["#3"]
    assert "resolution" not in faster


def test_a_benchmarks_resolution_is_its_stop_rule(home):
    from jobs import api
    from jobs.bench.fingerprint import fingerprint
    from storage import catalog, queue
    from tests.test_compare import _measure, _variant

    model, root = placeholder_model()
    onnx = _variant(catalog, model.id, root.id, "m > export-onnx", runtime="onnxruntime")
    here = fingerprint("cpu")
    fine, plain = queue.enqueue("benchmark", {"rel_spread": 0.02}).id, benchmark_job()
    for job in (fine, plain):
        _measure(catalog, root.id, here, 100.0, job_id=job)
        _measure(catalog, onnx.id, here, 97.0, job_id=job)
    assert {r["resolution"] for r in api.comparison(run=fine).rows} == {0.02}
    assert {r["resolution"] for r in api.comparison(run=plain).rows} == {0.05}
    assert api.decide(api.comparison(run=fine).rows, 1, 128, baseline_id=root.id).ratios[onnx.id]["level"] is False
    assert api.decide(api.comparison(run=plain).rows, 1, 128, baseline_id=root.id).ratios[onnx.id]["level"] is True


def test_thresholds_come_from_settings(monkeypatch):
    from jobs.decisions.compare import decide

    rows = [row(1, 30.0, 0.80), row(2, 10.0, 0.80, other_cpu=0.4)]
    assert 2 not in decide(rows, 1, 128, baseline_id=1).ratios
    monkeypatch.setenv("WORKBENCH_BUSY_CPU_FRACTION", "0.5")
    assert decide(rows, 1, 128, baseline_id=1).sweet.variant_id == 2


def test_compare_shows_one_run_by_default_and_never_mixes_them_silently(home):
    from jobs import api
    from jobs.bench.fingerprint import fingerprint
    from storage import catalog
    from tests.test_compare import _measure, _variant

    model, root = placeholder_model()
    onnx = _variant(catalog, model.id, root.id, "m > export-onnx", runtime="onnxruntime")
    here = fingerprint("cpu")
    quiet, busy = benchmark_job(), benchmark_job()
    _measure(catalog, root.id, here, 100.0, job_id=quiet)
    _measure(catalog, onnx.id, here, 60.0, job_id=quiet)
    _measure(catalog, root.id, here, 300.0, job_id=busy, other_cpu=0.7)  # the same fp32 model, under load
    newest = api.comparison()
    assert newest.run == busy and {r["job_id"] for r in newest.rows} == {busy} and len(newest.runs) == 2
    assert "Showing benchmark job" in newest.note
    chosen = api.comparison(run=str(quiet))
    decision = api.decide(chosen.rows, 1, 128, baseline_id=root.id)
    assert decision.ratios[onnx.id]["speedup"] == pytest.approx(100 / 60)
    mixed = api.comparison(run=api.NEWEST_PER_VARIANT)
    assert {(r["variant_id"], r["job_id"]) for r in mixed.rows} == {(root.id, busy), (onnx.id, quiet)}
    across = api.decide(mixed.rows, 1, 128, baseline_id=root.id)
    assert onnx.id not in across.ratios and "different runs" in across.not_comparable[onnx.id]


# ---- a real degenerate classifier, through real jobs -------------------------------------------------------------


def always_negative(path, tokenizer_dir):
    """A tiny classifier whose head answers 'negative' whatever the input (a bias no input can outweigh)."""
    import torch
    from transformers import BertForSequenceClassification

    from tests.support.tiny import tiny_classifier

    tiny_classifier(path, tokenizer_dir)
    model = BertForSequenceClassification.from_pretrained(path)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([10.0, 0.0, 0.0]))
    model.save_pretrained(path)
    return path


@pytest.mark.slow
def test_a_degenerate_classifier_is_marked_never_recommended_and_not_promoted_without_force(home, tmp_path,
                                                                                           minilm_dir, monkeypatch):
    from jobs import api
    from storage.errors import InvalidInput
    from tests.conftest import run_cli
    from tests.support.data import write_sentiment_csv
    from workbench.formatting import wizard_summary

    monkeypatch.setenv("WORKBENCH_MLFLOW", "on")
    api.add_model(api.ModelRequest(str(always_negative(tmp_path / "neg", minilm_dir)), name="neg"))
    api.add_dataset(api.DatasetRequest(str(write_sentiment_csv(tmp_path / "toy.csv", per_class=100)), name="toy"))
    recipe = api.recommend_recipe("neg", "toy", target="cpu-amx", quick=True)
    assert [s.kind for s in recipe.steps] == ["quantize", "benchmark"] and recipe.evaluate_start
    launched = api.launch_recipe(recipe)
    run_cli("worker", "--burst")
    progress = api.wizard_progress(launched.pipeline, launched.goal)
    assert progress.done and not progress.failed, progress.message
    outcome = progress.outcome
    assert outcome.recommended_id is None and outcome.decision.sweet is None
    summary = wizard_summary(outcome)
    assert summary.startswith("Could not decide") and "is degenerate (predicts 'negative' for 100%" in summary

    root = api.get_model("neg")
    tree = {s.id: s for s in api.variant_tree()}
    baseline = tree[recipe.start_variant_id]
    assert baseline.degenerate and baseline.degenerate_reason.startswith("predicts 'negative' for 100% of the 30")
    evaluation = api.variant_detail(baseline.id)["evaluations"][-1]
    assert evaluation.per_class_recall == {"negative": 1.0, "neutral": 0.0, "positive": 0.0}
    assert evaluation.majority_accuracy == pytest.approx(1 / 3) and evaluation.accuracy_low < 1 / 3
    shown = run_cli("variants", "show", str(baseline.id)).stdout
    assert "DEGENERATE: predicts 'negative'" in shown and "always 'negative' would score" in shown
    assert "DEGENERATE" in run_cli("variants", "list").stdout

    version = api.register_variant(baseline.id)["version"]
    with pytest.raises(InvalidInput, match="degenerate .*force the promotion"):
        api.promote(root.name, version, "production")
    refused = run_cli("registry", "promote", root.name, version, check=False)
    assert refused.returncode == 2 and "pass --force" in refused.stderr
    forced = run_cli("registry", "promote", root.name, version, "--force")
    assert "promoted although degenerate" in forced.stdout
    from mlflow.tracking import MlflowClient

    from jobs.tracking import runs as tracking

    mv = MlflowClient(tracking.tracking_uri(), tracking.tracking_uri()).get_model_version_by_alias(root.name, "production")
    assert str(mv.version) == version and mv.tags["workbench.forced_promotion"].startswith("production: degenerate")
