"""The optimization wizard's core: a recipe per target hardware with its reasons (from the hardware and from what
this machine measured), edits checked as a pipeline, one-transaction launch, progress and the recommendation."""

from __future__ import annotations

import dataclasses
import json
import re
import time

import pytest

from storage.errors import InvalidInput

AMX = {"cpu": "Xeon", "cpu_count": 2, "cpu_flags": ["avx2", "avx512f", "avx512_vnni", "amx_tile", "amx_bf16", "amx_int8"],
       "devices": ["cpu"]}
VNNI = {"cpu": "Xeon Gold 6248", "cpu_count": 8, "cpu_flags": ["avx2", "avx512f", "avx512_vnni"], "devices": ["cpu"]}
AVX2 = {"cpu": "Core i7", "cpu_count": 4, "cpu_flags": ["avx2"], "devices": ["cpu"]}
GPU = {"cpu": "EPYC", "cpu_count": 16, "cpu_flags": ["avx2"], "devices": ["cpu", "cuda"], "gpu": "H100"}


@pytest.fixture
def lab(home, tmp_path, minilm_dir):
    """A tiny classifier whose head has the toy dataset's labels, a tiny encoder with no head, and the toy data."""
    from jobs import api
    from tests.support.data import write_sentiment_csv
    from tests.support.tiny import tiny_classifier, tiny_encoder

    head = api.add_model(api.ModelRequest(str(tiny_classifier(tmp_path / "head", minilm_dir)), name="head"))
    bare = api.add_model(api.ModelRequest(str(tiny_encoder(tmp_path / "bare", minilm_dir)), name="bare"))
    api.add_dataset(api.DatasetRequest(str(write_sentiment_csv(tmp_path / "toy.csv")), name="toy"))
    return {"head": head.variant, "bare": bare.variant, "api": api}


def on(monkeypatch, info: dict) -> None:
    """Pretend this machine is `info` (the wizard's detection only)."""
    monkeypatch.setattr("jobs.decisions.wizard.detect", lambda: info)


def goal(target: str, **kw):
    from jobs.decisions.wizard import Goal

    return Goal(target=target, **kw)


def kinds(recipe) -> list[str]:
    return [s.kind for s in recipe.steps]


def _fake_variant(catalog, model_id: int, parent_id: int, name: str, runtime: str, precision: str):
    return catalog.create_variant(model_id=model_id, parent_id=parent_id, name=name, artifact_dir="/nonexistent",
                                  runtime=runtime, precision=precision, recipe={"steps": []}, files=[], sha256=name,
                                  size_bytes=1)


def _measure_here(catalog, variant_id: int, p50: float, batch: int = 1, seq: int = 128, rough: bool = False) -> None:
    """A sound measurement on this machine's real CPU fingerprint (what the wizard reads back as 'measured here'),
    in the test's one benchmark job (speedups are only taken within a job)."""
    from jobs.bench.fingerprint import fingerprint, fingerprint_hash
    from storage import queue
    from tests.test_compare import samples_around

    jobs = queue.list_jobs(kind="benchmark", limit=1)
    job_id = jobs[0].id if jobs else queue.enqueue("benchmark", {}).id
    fp = fingerprint("cpu")
    catalog.add_measurements([{
        "variant_id": variant_id, "job_id": job_id, "device": "cpu", "batch_size": batch, "seq_len": seq,
        "samples": 50, "samples_ms": samples_around(p50), "p50_ms": p50,
        "p90_ms": p50 * 1.1, "p95_ms": p50 * 1.2, "p99_ms": p50 * 1.3, "mean_ms": p50, "std_ms": 0.1,
        "throughput_sps": 1000 / p50, "tokens_per_s": seq * 1000 / p50, "peak_rss_bytes": 1, "load_time_s": 0.1,
        "threads": 2, "stable": True, "spread": 0.01, "fingerprint": fp, "fingerprint_hash": fingerprint_hash(fp),
        "load": {"loadavg_1m": 0.5, "other_cpu_fraction": 0.01, "steal_fraction": 0.0, "cpus": 2}, "rough": rough,
    }])


# ---- hardware and goals -----------------------------------------------------------------------------------------


def test_detected_target_follows_the_best_instructions():
    from jobs.decisions.wizard import detected_target, hardware_line

    assert [detected_target(i) for i in (AMX, VNNI, AVX2, GPU)] == ["cpu-amx", "cpu-avx512-vnni", "cpu-avx2", "nvidia-gpu"]
    assert detected_target({"cpu_flags": [], "devices": ["cpu"]}) == "cpu-avx2"
    line = hardware_line(VNNI)
    assert "Xeon Gold 6248" in line and "AVX-512 VNNI" in line and line.endswith("→ cpu-avx512-vnni")


def test_goal_values_are_checked():
    for bad in ({"target": "tpu"}, {"target": "cpu-amx", "max_drop_points": -1}, {"target": "cpu-amx", "slo_ms": 0},
                {"target": "cpu-amx", "speedup": 0.5}, {"target": "cpu-amx", "seq_len": 1000}):
        with pytest.raises(InvalidInput):
            goal(**bad)
    assert "at least 4x faster" in goal("cpu-amx", speedup=4).describe()


def test_head_labels_and_the_lineage_a_benchmark_compares(lab):
    from jobs.kinds.benchmark import lineage_to_compare
    from jobs.ml.lineage import classifies, head_labels
    from storage import catalog

    head, bare = lab["head"], lab["bare"]
    assert head_labels(head) == ["negative", "neutral", "positive"] and head_labels(bare) is None
    assert classifies(head, ["positive", "negative", "neutral"]) and not classifies(head, ["a", "b", "c"])
    child = catalog.create_variant(model_id=head.model_id, parent_id=head.id, name="head > x", artifact_dir="/nonexistent",
                                   runtime="pytorch", precision="bf16", recipe={"steps": []}, files=[], sha256="x",
                                   size_bytes=1)
    labels = ["negative", "neutral", "positive"]
    assert [v.id for v in lineage_to_compare(child, labels, {child.id})] == [head.id]
    assert lineage_to_compare(child, labels, {child.id, head.id}) == []  # already measured
    bare_child = _fake_variant(catalog, bare.model_id, bare.id, "bare > x", "pytorch", "fp32")
    assert lineage_to_compare(bare_child, labels, set()) == []  # a bare encoder cannot be measured as a classifier


# ---- recipes per target ---------------------------------------------------------------------------------------


def test_amx_with_a_head_goes_straight_to_bf16_and_evaluates_the_baseline(lab, monkeypatch):
    from jobs.decisions.wizard import recommend

    on(monkeypatch, AMX)
    recipe = recommend("head", "toy", goal("cpu-amx"))
    assert kinds(recipe) == ["quantize", "benchmark"]
    assert recipe.steps[0].params == {"method": "bf16"}
    assert "AMX" in recipe.steps[0].why and "nothing is measured on this machine yet" in recipe.steps[0].why
    bench = recipe.steps[-1]
    assert bench.params == {"compare_with_lineage": True, "batch_sizes": [1], "seq_lens": [128]}
    assert "within 1 accuracy points" in bench.why
    assert recipe.start_variant_id == lab["head"].id and recipe.evaluate_start  # the baseline needs an accuracy
    assert "already classifies" in recipe.notes[0] and recipe.expected_speedup == 3.7
    assert recipe.evaluation == {"max_examples": 0, "tolerance_points": 1.0}


def test_vnni_without_a_head_finetunes_then_fused_onnx_int8(lab, monkeypatch):
    from jobs.decisions.wizard import recommend

    on(monkeypatch, VNNI)
    recipe = recommend("bare", "toy", goal("cpu-avx512-vnni", max_drop_points=0.5))
    assert kinds(recipe) == ["finetune", "export-onnx", "quantize", "benchmark"]
    finetune, export, quantize, _ = recipe.steps
    assert "no classification head" in finetune.why and "negative, neutral, positive" in finetune.why
    assert "baseline" in finetune.why and not recipe.evaluate_start  # the fine-tuned variant is evaluated anyway
    assert export.params == {"fusion": True} and "fusion" in export.why
    assert quantize.params == {"method": "ort-dynamic-int8", "per_channel": True}
    assert "VNNI" in quantize.why and "cpu-avx512-vnni" in quantize.why
    assert recipe.baseline == "the fine-tuned fp32 variant (step 1)"
    assert "nvidia" not in json.dumps([s.params for s in recipe.steps])


def test_avx2_gets_onnx_int8_with_a_small_gain_said_plainly(lab, monkeypatch):
    from jobs.decisions.wizard import recommend

    on(monkeypatch, AVX2)
    recipe = recommend("head", "toy", goal("cpu-avx2"))
    assert kinds(recipe) == ["export-onnx", "quantize", "benchmark"]
    assert "AVX2" in recipe.steps[1].why and "small" in recipe.steps[1].why
    assert recipe.steps[1].params["reduce_range"] == "on"  # no VNNI: 7-bit weights, set explicitly
    assert recipe.expected_speedup == 1.5


def test_gpu_with_tensorrt_builds_an_fp16_engine_and_benchmarks_on_cuda(lab, monkeypatch):
    from jobs.decisions.wizard import recommend
    from jobs.runner import registry

    registry.load_kinds()
    trt = registry.get_kind("build-tensorrt")
    monkeypatch.setitem(registry._KINDS._items, "build-tensorrt", dataclasses.replace(trt, available=lambda: (True, "")))
    on(monkeypatch, GPU)
    recipe = recommend("head", "toy", goal("nvidia-gpu", batch_size=8, seq_len=64))
    assert kinds(recipe) == ["export-onnx", "build-tensorrt", "benchmark"]
    assert recipe.steps[0].params == {}  # TensorRT fuses on its own; ORT's fused ops would not parse
    assert recipe.steps[1].params == {"precision": "fp16", "opt_batch": 8, "max_batch": 32, "opt_seq": 64, "max_seq": 128}
    assert "tensor cores" in recipe.steps[1].why
    assert recipe.steps[2].params["device"] == "cuda" and "GPU" in recipe.steps[2].why
    assert any("no worker with a GPU" in n for n in recipe.notes)


def test_gpu_without_tensorrt_falls_back_to_pytorch_fp16_and_says_why(lab, monkeypatch):
    from jobs.decisions.wizard import recommend
    from jobs.runner import registry

    registry.load_kinds()
    trt = registry.get_kind("build-tensorrt")
    monkeypatch.setitem(registry._KINDS._items, "build-tensorrt",
                        dataclasses.replace(trt, available=lambda: (False, "unavailable: no TensorRT here")))
    on(monkeypatch, GPU)
    recipe = recommend("bare", "toy", goal("nvidia-gpu"))
    assert kinds(recipe) == ["finetune", "quantize", "benchmark"]
    assert recipe.steps[1].params == {"method": "fp16"} and "tensor cores" in recipe.steps[1].why
    assert any("TensorRT fp16 would be the first choice" in n and "no TensorRT here" in n for n in recipe.notes)


def test_a_target_other_than_this_machine_cites_no_measurements_and_warns(lab, monkeypatch):
    from jobs.decisions.wizard import recommend

    on(monkeypatch, AMX)
    recipe = recommend("head", "toy", goal("cpu-avx2"))
    assert "this machine is cpu-amx, so its measurements do not apply" in recipe.steps[1].why
    assert "(cpu-amx, not cpu-avx2)" in recipe.steps[-1].why
    assert any("run the benchmark again on cpu-avx2 hardware" in n for n in recipe.notes)


def test_measurements_here_are_cited_and_can_change_the_choice(lab, monkeypatch):
    from jobs.decisions.wizard import recommend
    from storage import catalog

    on(monkeypatch, AMX)
    head = lab["head"]
    int8 = _fake_variant(catalog, head.model_id, head.id, "head > ort-dynamic-int8", "onnxruntime", "int8")
    _measure_here(catalog, head.id, 20.0)  # PyTorch fp32
    _measure_here(catalog, int8.id, 5.0)  # 4x: more than bf16's reference 3.7x
    recipe = recommend("head", "toy", goal("cpu-amx"))
    assert kinds(recipe) == ["export-onnx", "quantize", "benchmark"]
    why = recipe.steps[1].why
    assert "measured on this machine at batch 1 vs PyTorch fp32: ONNX Runtime int8 4.0x (job " in why
    assert "chosen over the usual PyTorch bf16" in why and recipe.expected_speedup == 4.0

    bf16 = _fake_variant(catalog, head.model_id, head.id, "head > bf16", "pytorch", "bf16")
    _measure_here(catalog, bf16.id, 4.0)  # 5x
    recipe = recommend("head", "toy", goal("cpu-amx"))
    assert kinds(recipe) == ["quantize", "benchmark"]
    assert re.search(r"PyTorch bf16 5\.0x \(job \d+, 20\d\d-\d\d-\d\d\), ONNX Runtime int8 4\.0x", recipe.steps[0].why)

    # a quick trial's figures are rough: they never change the choice
    student = _fake_variant(catalog, head.model_id, head.id, "head > ort-static-int8", "onnxruntime", "int8")
    _measure_here(catalog, student.id, 1.0, rough=True)  # 20x, but from a quick trial
    assert kinds(recommend("head", "toy", goal("cpu-amx"))) == ["quantize", "benchmark"]


def test_a_speedup_beyond_the_precision_step_adds_a_half_depth_student(lab, monkeypatch):
    from jobs.decisions.wizard import recommend

    on(monkeypatch, AMX)
    recipe = recommend("bare", "toy", goal("cpu-amx", speedup=6))
    assert kinds(recipe) == ["finetune", "quantize", "distill", "quantize", "benchmark"]
    distill = recipe.steps[2]
    assert distill.params == {"student": "half-layers"}
    assert "6.0x speed-up is more than PyTorch bf16 alone" in distill.why and "full-depth" in distill.why
    assert recipe.steps[3].why.startswith("The same for the student")
    assert recipe.expected_speedup == pytest.approx(3.7 * 1.9, abs=0.01)
    assert kinds(recommend("bare", "toy", goal("cpu-amx", speedup=3))) == ["finetune", "quantize", "benchmark"]
    # 'as fast as possible' with a loose tolerance tries a student too
    assert "distill" in kinds(recommend("bare", "toy", goal("cpu-amx", max_drop_points=3)))


def test_an_slo_is_turned_into_a_speedup_from_the_baseline_measured_here(lab, monkeypatch):
    from jobs.decisions.wizard import recommend
    from storage import catalog

    on(monkeypatch, AMX)
    _measure_here(catalog, lab["head"].id, 10.0)  # p95 12 ms
    recipe = recommend("head", "toy", goal("cpu-amx", slo_ms=1.0))  # needs 12x
    assert "distill" in kinds(recipe)
    assert any("p95 12.00 ms" in n and "needs about 12.0x" in n for n in recipe.notes)
    assert any("even a half-depth student" in n for n in recipe.notes)
    relaxed = recommend("head", "toy", goal("cpu-amx", slo_ms=6.0))  # 2x: bf16 alone
    assert "distill" not in kinds(relaxed) and "p95 within 6 ms" in relaxed.steps[-1].why


def test_a_model_already_finetuned_here_is_reused(lab, monkeypatch, tmp_path):
    from jobs.decisions.wizard import recommend
    from storage import catalog

    on(monkeypatch, AMX)
    bare, head = lab["bare"], lab["head"]
    toy = catalog.get_dataset("toy")
    tuned_dir = tmp_path / "tuned"
    tuned_dir.mkdir()
    (tuned_dir / "config.json").write_text(json.dumps(
        {"architectures": ["BertForSequenceClassification"], "id2label": {"0": "negative", "1": "neutral", "2": "positive"}}))
    tuned = catalog.create_variant(model_id=bare.model_id, parent_id=bare.id, name="bare > finetune-full",
                                   artifact_dir=str(tuned_dir), runtime="pytorch", precision="fp32",
                                   recipe={"steps": [{"kind": "finetune", "params": {}}]}, files=[], sha256="t",
                                   size_bytes=1, dataset_id=toy.id)
    for examples in (5, toy.split_sizes["test"]):
        catalog.add_evaluation(variant_id=tuned.id, dataset_id=toy.id, split="test", num_examples=examples,
                               accuracy=0.9, macro_f1=0.9, confusion={}, predictions=[])
        recipe = recommend("bare", "toy", goal("cpu-amx"))
        assert recipe.start_variant_id == tuned.id and kinds(recipe) == ["quantize", "benchmark"]
        assert "already fine-tuned on toy" in recipe.notes[0] and "90.0%" in recipe.notes[0]
        # the baseline is evaluated again unless it has an evaluation on the same examples as the new variants
        assert recipe.evaluate_start == (examples == 5)
    assert head.id != tuned.id


def test_quick_trial_uses_small_settings(lab, monkeypatch):
    from jobs.decisions.wizard import recommend
    from jobs.runner.registry import get_kind

    on(monkeypatch, AMX)
    recipe = recommend("bare", "toy", goal("cpu-amx"), quick=True)
    assert recipe.steps[0].params == dict(get_kind("finetune").quick_params)
    assert recipe.steps[0].params["max_train_examples"] == 1024 and recipe.steps[0].params["epochs"] == 2
    bench = recipe.steps[-1].params
    assert bench["max_seconds"] == 4.0 and bench["compare_with_lineage"] and bench["rough"]
    assert bench["min_samples"] >= 20  # enough calls for a speedup with an interval
    assert recipe.evaluation["max_examples"] == 300


def test_kinds_declare_their_quick_params_and_share_of_the_progress_bar():
    from jobs.runner.registry import all_kinds

    kinds = {k.name: k for k in all_kinds()}
    weights = {name: k.progress_weight for name, k in kinds.items() if k.progress_weight != 1.0}
    assert weights == {"finetune": 4.0, "distill": 4.0, "build-tensorrt": 2.0, "benchmark": 2.0, "evaluate": 0.5,
                       "search": 10.0}
    quick = {name: dict(k.quick_params) for name, k in kinds.items() if k.quick_params}
    assert set(quick) == {"finetune", "distill", "export-onnx", "benchmark", "evaluate"}
    assert quick["evaluate"] == {"max_examples": 300} and quick["benchmark"]["rough"] is True
    with pytest.raises(TypeError):  # declared once, at registration: no caller can change a kind's quick trial
        kinds["finetune"].quick_params["epochs"] = 99


def test_edits_are_checked_as_a_pipeline_and_keep_their_reasons(lab, monkeypatch):
    from jobs import api
    from jobs.decisions.wizard import recommend

    on(monkeypatch, AMX)
    recipe = recommend("head", "toy", goal("cpu-amx"))
    steps = [{"kind": s.kind, "params": s.params} for s in recipe.steps]
    steps[0]["params"] = {"method": "torch-dynamic-int8"}
    edited = api.edit_recipe(recipe, steps, {"max_examples": 32})
    assert edited.steps[0].params == {"method": "torch-dynamic-int8"} and edited.steps[0].why == recipe.steps[0].why
    assert edited.evaluation == {"max_examples": 32, "tolerance_points": 1.0}
    with pytest.raises(InvalidInput, match="step 1 \\(quantize\\)"):
        api.edit_recipe(recipe, [{"kind": "quantize", "params": {"method": "ort-dynamic-int8"}}])  # needs ONNX
    with pytest.raises(InvalidInput, match="unknown parameter"):
        api.edit_recipe(recipe, [{"kind": "benchmark", "params": {"nope": 1}}])
    with pytest.raises(InvalidInput, match="list of"):
        api.edit_recipe(recipe, {"kind": "quantize"})
    inserted = api.edit_recipe(recipe, [{"kind": "prune", "params": {"method": "structured"}}, *steps[1:]])
    assert inserted.steps[0].why == "Added or changed by you."


def test_launch_is_one_transaction_with_the_baseline_evaluation(lab, monkeypatch):
    from jobs import api
    from jobs.decisions.wizard import recommend

    on(monkeypatch, AMX)
    recipe = recommend("head", "toy", goal("cpu-amx", max_drop_points=1.5), quick=True)
    bad = dataclasses.replace(recipe, evaluation={**recipe.evaluation, "batch_size": 0})
    before = len(api.list_jobs())
    with pytest.raises(InvalidInput, match="batch_size"):
        api.launch_recipe(bad)
    assert len(api.list_jobs()) == before  # nothing queued
    launched = api.launch_recipe(recipe)
    jobs = [api.get_job(i) for i in launched.job_ids]
    assert [j.kind for j in jobs] == ["quantize", "benchmark", "evaluate"]
    assert {j.pipeline for j in jobs} == {launched.pipeline}
    assert jobs[1].depends_on_id == jobs[0].id and jobs[2].variant_id == lab["head"].id
    assert jobs[0].evaluation == {"split": "test", "max_examples": 300, "batch_size": 32, "tolerance_points": 1.5}
    assert jobs[2].priority == 1 and jobs[1].device == "cpu"
    progress = api.wizard_progress(launched.pipeline)
    assert progress.fraction == 0 and not progress.done and progress.outcome is None
    assert "waiting for a worker" in progress.message and "none is running" in progress.message
    # the quantize step's evaluation is expected before it is queued: 1 + 2 + 0.5 + 0.5 of weight
    assert [(line.role, line.number) for line in progress.lines] == [("step", 1), ("step", 2), ("evaluation", None)]
    with pytest.raises(InvalidInput, match="no wizard run"):
        api.wizard_progress("nope")


def test_progress_follows_the_jobs_and_a_failed_step_ends_the_run(lab, monkeypatch):
    from jobs import api
    from jobs.decisions.wizard import recommend
    from storage import queue
    from storage.orm import JobStatus

    on(monkeypatch, AMX)
    for job in api.list_jobs("queued"):  # the models' inspect jobs: out of the way of this hand-driven queue
        api.cancel_job(job.id)
    launched = api.launch_recipe(recommend("head", "toy", goal("cpu-amx"), quick=True))
    quantize, bench, baseline_eval = launched.job_ids
    queue.register_worker("w", "host", 1, ["cpu"], {}, 1)
    assert queue.claim_next("w", ["cpu"]).id == baseline_eval  # evaluations go first
    queue.set_progress(baseline_eval, 0.5, "scoring: 1/2")
    running = api.wizard_progress(launched.pipeline)
    assert "evaluating variant #" in running.message and 0 < running.fraction < 0.2
    queue.finish(baseline_eval, JobStatus.SUCCEEDED, result={"accuracy": 0.5})
    assert queue.claim_next("w", ["cpu"]).id == quantize
    queue.set_progress(quantize, 0.5, "casting weights")
    halfway = api.wizard_progress(launched.pipeline)
    assert halfway.message == "step 1 of 2 (quantize): casting weights"
    assert halfway.lines[2].accuracy == 0.5 and halfway.fraction > running.fraction
    queue.finish(quantize, JobStatus.FAILED, message="failed: out of memory", error="out of memory")
    failed = api.wizard_progress(launched.pipeline)
    assert failed.done and failed.failed and failed.outcome is None
    assert failed.message == "step 1 (quantize) failed: failed: out of memory"
    assert api.get_job(bench).status is JobStatus.CANCELLED  # the rest of the pipeline is cancelled


def test_verdict_lines():
    from jobs.decisions.compare import Point, decide
    from jobs.decisions.wizard import _verdict
    from tests.test_validity import row as sound_row
    from workbench.formatting import recommendation_sentence

    def row(vid, label, p50, acc):
        return {**sound_row(vid, p50, acc), "label": label}

    rows = [row(1, "#1 fp32", 30.0, 0.80), row(2, "#2 bf16", 10.0, 0.796), row(3, "#3 student", 5.0, 0.70)]
    decision = decide(rows, 1, 128, baseline_id=1, max_drop_points=1.0)
    assert decision.sweet.variant_id == 2
    four_x = goal("cpu-amx", speedup=4)
    ratio, drop, met, reach = _verdict(decision, decision.sweet, four_x, False)
    assert ratio == pytest.approx(3.0) and drop == pytest.approx(0.4) and reach == "short"
    summary = recommendation_sentence(decision, decision.sweet, four_x, reach, False)
    assert not met and summary.startswith("Recommended: #2 bf16, 3.0x faster than the baseline #1 fp32 (p50 at "
                                          "batch 1 x 128, 95% interval 3.0-3.0x from 50 and 50 calls)")
    assert "-0.4 accuracy points (79.6% vs 80.0%)" in summary and "short of the 4x goal" in summary
    base = Point(1, "#1 fp32", 36.0, 0.80, 30.0, 30.0)
    _, _, _, reach = _verdict(decision, base, goal("cpu-amx"), False)
    kept = recommendation_sentence(decision, base, goal("cpu-amx"), reach, False)
    assert reach is None and kept.startswith("Recommended: keep the baseline #1 fp32")
    _, _, met, reach = _verdict(decision, decision.sweet, goal("cpu-amx", slo_ms=1), True)
    missed = recommendation_sentence(decision, decision.sweet, goal("cpu-amx", slo_ms=1), reach, True)
    assert not met and "no variant within the tolerance meets the 1 ms p95 SLO" in missed
    # within the benchmark's resolution: "as fast", not "faster"; a tie broken by accuracy is said
    level = decide([row(1, "#1 fp32", 30.0, 0.80), row(2, "#2 bf16", 29.5, 0.80)], 1, 128, baseline_id=1)
    same = recommendation_sentence(level, level.sweet, goal("cpu-amx"), None, False)
    assert same.startswith("Recommended: #2 bf16, as fast as the baseline #1 fp32 as far as the benchmark can tell "
                           "(p50 at batch 1 x 128 1.02x, 95% interval ") and "within its 5% resolution)" in same
    tied = decide([*rows[:2], row(4, "#4 int8", 9.8, 0.792)], 1, 128, baseline_id=1, max_drop_points=1.0)
    assert tied.sweet.variant_id == 2 and "#2 bf16 is the sweet spot although #4 int8 has the lower p95" in tied.tie
    said = recommendation_sentence(tied, tied.sweet, goal("cpu-amx"), None, False)
    assert said.startswith("Recommended: #2 bf16, 3.0x faster") and said.endswith(tied.tie + ".")


# ---- the whole run, with a real worker -------------------------------------------------------------------------


@pytest.mark.slow
def test_a_quick_wizard_run_finetunes_optimizes_benchmarks_and_recommends(lab):
    from jobs import api
    from tests.conftest import run_cli
    from workbench.formatting import wizard_summary

    started = time.monotonic()
    # a model without a head: fine-tune, then bf16 (the AMX recipe runs on any CPU, only slower without AMX)
    recipe = api.recommend_recipe("bare", "toy", target="cpu-amx", max_drop_points=1.5, quick=True)
    assert [s.kind for s in recipe.steps] == ["finetune", "quantize", "benchmark"]
    # a tiny random encoder learns the toy words only with a high learning rate and some epochs; the quick trial's
    # defaults are sized for MiniLM
    steps = [{"kind": s.kind, "params": dict(s.params)} for s in recipe.steps]
    steps[0]["params"].update(epochs=8, learning_rate=0.003, max_length=16)
    recipe = api.edit_recipe(recipe, steps)
    launched = api.launch_recipe(recipe)
    run_cli("worker", "--burst")
    progress = api.wizard_progress(launched.pipeline, launched.goal)
    logs = {line.job_id: line.message for line in progress.lines}
    assert progress.done and not progress.failed, (progress.message, logs)
    assert progress.fraction == 1.0 and progress.message == "done"
    steps = [line for line in progress.lines if line.role == "step"]
    evaluations = [line for line in progress.lines if line.role == "evaluation"]
    assert [line.status for line in steps] == ["succeeded"] * 3
    assert sorted(line.number for line in evaluations) == [1, 2]  # each new variant scored
    assert all(line.accuracy is not None for line in evaluations)
    tuned, bf16 = steps[0].variant_id, steps[1].variant_id
    outcome = progress.outcome
    tree = {s.id: s for s in api.variant_tree()}
    assert not tree[tuned].degenerate, tree[tuned].degenerate_reason  # it learned the task, not the prior
    assert outcome.baseline_id == tuned and outcome.final_id == bf16
    assert {p.variant_id for p in outcome.decision.points} == {tuned, bf16}  # the benchmark measured the lineage
    bench = api.get_job(steps[2].job_id)
    assert bench.result["variants"] == [bf16, tuned] and outcome.benchmark_job == bench.id
    assert all(p.job_id == bench.id for p in outcome.decision.points)  # one run, never mixed
    assert_sound_verdict(outcome)
    # without the goal, the same verdict from what the jobs recorded (tolerance, cell)
    assert api.wizard_progress(launched.pipeline).outcome.recommended_id == outcome.recommended_id
    print(f"quick wizard run in {time.monotonic() - started:.0f}s: {wizard_summary(outcome)}")

    # re-measure: a full benchmark of the same variants joins the run, and the verdict is made from it alone
    again = api.wizard_remeasure(launched.pipeline)
    assert not api.wizard_progress(launched.pipeline).done
    run_cli("worker", "--burst")
    remeasured = api.wizard_progress(launched.pipeline, launched.goal)
    assert remeasured.done and remeasured.outcome.benchmark_job == again
    full = api.get_job(again).params  # the quick trial's short rule is gone: the kind's defaults apply
    assert not full.get("rough") and not {"min_samples", "max_seconds", "warmup"} & set(full)
    assert all(p.job_id == again for p in remeasured.outcome.decision.points)
    assert_sound_verdict(remeasured.outcome)
    assert again in [r.job_id for r in api.comparison(run=again).runs]
    with pytest.raises(InvalidInput, match="no benchmark"):
        api.wizard_remeasure(api.submit_pipeline(api.parse_steps("quantize:method=bf16"), variant=tuned)[0].pipeline)


def assert_sound_verdict(outcome) -> None:
    """Either a recommendation from sound cells of the benchmark, with its interval, or 'could not decide' and why."""
    from workbench.formatting import wizard_summary

    decision, summary = outcome.decision, wizard_summary(outcome)
    if outcome.recommended_id is not None:
        assert summary.startswith("Recommended:") and decision.sweet.variant_id == outcome.recommended_id
        sweet = decision.sweet
        assert not sweet.degenerate and sweet.variant_id in decision.ratios  # comparable with the baseline
        if sweet.variant_id != decision.baseline.variant_id:
            assert "95% interval" in summary and outcome.speedup > 0
        assert not decision.not_comparable  # nothing within reach was left uncompared
    else:
        assert summary.startswith("Could not decide") and outcome.undecided
        assert decision.sweet is None and outcome.undecided in summary
        assert any(word in outcome.undecided for word in ("samples", "unstable", "busy", "degenerate", "tolerance"))


# ---- reopening a run, step 1's preselection, variant names ----------------------------------------------------


def test_recent_runs_are_listed_and_reopened_by_id_link_or_address(lab, monkeypatch):
    from types import SimpleNamespace

    from jobs import api
    from jobs.decisions.wizard import recommend
    from workbench.tabs import wizard as tab

    on(monkeypatch, AMX)
    first = api.launch_recipe(recommend("head", "toy", goal("cpu-amx"), quick=True))
    api.submit_pipeline(api.parse_steps("quantize:method=bf16 -> benchmark"), variant=lab["head"].id,
                        dataset="toy")  # not a wizard run: its benchmark does not compare the lineage
    second = api.launch_recipe(recommend("head", "toy", goal("cpu-amx"), quick=True))
    api.cancel_job(first.job_ids[0])  # the benchmark after it is cancelled with it
    api.cancel_job(first.job_ids[2])  # the baseline's evaluation
    runs = api.recent_wizard_runs()
    assert [r.pipeline for r in runs] == [second.pipeline, first.pipeline]  # newest first
    assert runs[0].kinds == ("quantize", "benchmark") and (runs[0].model_name, runs[0].dataset_name) == ("head", "toy")
    assert (runs[0].state, runs[0].steps_done, runs[1].state) == ("queued", 0, "failed")
    assert second.pipeline in tab.run_label(runs[0]) and "quantize → benchmark" in tab.run_label(runs[0])

    # the tab: by id, by a pasted link, and from the page's address on load
    assert tab.run_id(f"http://host:7860/?run={second.pipeline}&x=1") == second.pipeline
    run, walk, status, launched, progress, summary, chart, table, again, timer, choices = tab.reopen(f" {second.pipeline} ")
    assert run == tab.Followed(second.pipeline) and run.goal is None  # the goal is read back from the jobs
    assert walk.selected == 5 and status == "" and f"?run={second.pipeline}" in launched
    assert f"data-pipeline='{second.pipeline}'" in progress and "data-state='running'" in progress
    assert chart["visible"] is False and table["visible"] is False  # nothing to show yet: hidden, no placeholder
    assert again["visible"] is False  # no "re-measure" before there is a verdict
    assert timer.active and choices["value"] == second.pipeline
    failed = tab.reopen(first.pipeline)
    assert "The run stopped" in failed[5] and not failed[9].active  # done (failed): no more polling
    ticking = tab.follow(run)  # the timer keeps polling a reopened run, and stops once it has ended
    assert ticking[5].active and "data-state='running'" in ticking[0]
    ended = tab.follow(tab.Followed(first.pipeline))
    assert not ended[5].active and "The run stopped" in ended[1] and ended[6]["choices"][1][1] == first.pipeline
    assert tab.reopen("nope")[2].startswith("✗ no wizard run")
    assert tab.open_from_url(SimpleNamespace(query_params={"run": second.pipeline}))[0].pipeline == second.pipeline
    assert all(update == {"__type__": "update"} for update in tab.open_from_url(SimpleNamespace(query_params={})))


def test_step_one_preselects_the_newest_model_and_dataset(lab):
    from workbench.tabs import wizard as tab

    head, bare = lab["head"].model_id, lab["bare"].model_id
    model, dataset = tab.preselect()
    assert model["value"] == str(max(head, bare)) and dataset["value"] == dataset["choices"][0][1]
    assert tab.preselect(str(head), None)[0]["value"] == str(head)  # a choice already made is kept
    assert tab._newest([("#3 only", "3")], None) == "3" and tab._newest([], None) is None


def test_variant_names_say_what_they_are_and_never_repeat():
    from jobs.runner.context import variant_name

    assert variant_name("m (original)", "finetune-full") == "m > finetune-full"
    assert variant_name("m (original)", "finetune-full", taken={"m > finetune-full"}) == "m > finetune-full (2)"
    assert variant_name("m (original)", "finetune-full", taken={"m > finetune-full", "m > finetune-full (2)"}) \
        == "m > finetune-full (3)"
    student = variant_name("m > finetune-full", "distill-half-layers", layers=3, original_layers=6)
    assert student == "m > finetune-full > distill-3L"
    assert variant_name(student, "onnx-fused", layers=3, original_layers=6).rsplit(" > ", 1)[-1] == "onnx-fused-3L"
    assert variant_name("m > finetune-full", "onnx-fused", layers=6, original_layers=6).endswith("> onnx-fused")
    assert variant_name("m", "distill-small-4x256", layers=None, original_layers=6) == "m > distill-small-4x256"


@pytest.mark.slow
def test_variants_made_by_real_jobs_have_distinct_telling_names(home, tmp_path, minilm_dir):
    """The case a user hit: two identical steps on one parent, and the same export of the full model and of its
    half-layers student."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from jobs import api
    from tests.conftest import run_cli
    from tests.support.data import write_sentiment_csv
    from tests.support.tiny import LABELS

    started = time.monotonic()
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                        intermediate_size=64, num_labels=3, id2label=dict(enumerate(LABELS)),
                        label2id={label: i for i, label in enumerate(LABELS)})
    BertForSequenceClassification(config).save_pretrained(tmp_path / "deep")
    tokenizer.save_pretrained(tmp_path / "deep")
    api.add_model(api.ModelRequest(str(tmp_path / "deep"), name="deep"))
    api.add_dataset(api.DatasetRequest(str(write_sentiment_csv(tmp_path / "toy.csv")), name="toy"))
    export = {"fusion": True, "parity_examples": 8}
    jobs = [api.submit("quantize", {"method": "bf16"}, model="deep"), api.submit("quantize", {"method": "bf16"}, model="deep"),
            api.submit("export-onnx", export, model="deep", dataset="toy")]
    student = api.submit("distill", {"student": "half-layers", "epochs": 1, "max_train_examples": 32,
                                     "max_val_examples": 8}, model="deep", dataset="toy")
    jobs += [student, api.submit("export-onnx", export, depends_on=student.id)]
    run_cli("worker", "--burst")
    names = []
    for job in jobs:
        job = api.get_job(job.id)
        assert job.status.value == "succeeded", (job.kind, job.message)
        names.append(api.get_variant(job.produced_variant_id).name)
    assert names == ["deep > bf16", "deep > bf16 (2)", "deep > onnx-fused", "deep > distill-2L",
                     "deep > distill-2L > onnx-fused-2L"]
    print(f"variant names from real jobs in {time.monotonic() - started:.0f}s: {names}")
