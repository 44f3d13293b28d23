"""Every optimization kind, run for real on a tiny setting by a real worker, with its evaluation recorded.

One module-scoped data directory: a toy 3-class dataset, the built-in MiniLM fine-tuned on it, and every other
kind queued on top (through pipelines and job dependencies), all run by one `worker --burst`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_cli
from tests.support.data import write_sentiment_csv
from tests.support.lab import evaluation_of, produced

pytestmark = pytest.mark.slow

EVAL = {"max_examples": 0, "tolerance_points": 1.0}
FINETUNE = "finetune:epochs=3,max_length=16,learning_rate=0.0001,batch_size=16,max_val_examples=20"
# the kinds this module runs; test_every_registered_kind_has_a_test checks nothing is left out
KINDS_RUN_HERE = {"finetune", "export-onnx", "quantize", "prune", "distill", "evaluate", "inspect"}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """Queue every kind, run the worker until the queue is empty, and return the jobs by name."""
    from storage import db

    root = tmp_path_factory.mktemp("optimize")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WORKBENCH_HOME", str(root / "home"))
        mp.delenv("WORKBENCH_DB_URL", raising=False)
        db.dispose_all()
        from jobs import api

        api.add_model(api.ModelRequest("builtin:minilm-l6"))
        api.add_dataset(api.DatasetRequest(str(write_sentiment_csv(root / "toy.csv")), name="toy"))
        base = api.submit_pipeline(api.parse_steps(f"{FINETUNE} -> export-onnx:fusion=true -> quantize:method=ort-dynamic-int8"),
                                   model="minilm-l6", dataset="toy", evaluation=EVAL)
        tuned, onnx_job = base[0].id, base[1].id
        jobs = {"finetune": base[0], "export": base[1], "ort-dynamic": base[2]}

        def after(name: str, kind: str, params: dict, parent: int) -> None:
            jobs[name] = api.submit(kind, params, depends_on=parent, evaluation=EVAL)

        after("static-preset", "quantize", {"method": "ort-static-int8", "calibration_examples": 32}, onnx_job)
        after("static-no-preset", "quantize", {"method": "ort-static-int8", "calibration_examples": 32, "exclusion_preset": False}, onnx_job)
        after("ort-reduce-range", "quantize", {"method": "ort-dynamic-int8", "reduce_range": "on"}, onnx_job)
        after("torch-int8", "quantize", {"method": "torch-dynamic-int8"}, tuned)
        after("bf16", "quantize", {"method": "bf16"}, tuned)
        after("fp16", "quantize", {"method": "fp16"}, tuned)
        after("l1", "prune", {"method": "l1-unstructured", "amount": 0.4}, tuned)
        after("structured", "prune", {"method": "structured", "head_ratio": 0.5, "ffn_ratio": 0.5}, tuned)
        after("half", "distill", {"student": "half-layers", "epochs": 2}, onnx_job)  # an ONNX teacher
        after("small", "distill", {"student": "small-4x256", "epochs": 1}, tuned)
        after("half-hidden", "distill", {"student": "half-layers", "epochs": 1, "hidden_weight": 1.0}, tuned)
        # the search's recovery fine-tune: the pruned model trains on as it is, its smaller heads and FFN kept
        jobs["structured-recovered"] = api.submit("finetune", {"epochs": 1, "max_length": 16, "max_val_examples": 20},
                                                  depends_on=jobs["structured"].id, evaluation=EVAL)
        jobs["structured-onnx"] = api.submit("export-onnx", {"fusion": True, "optimization": "extended"},
                                             depends_on=jobs["structured"].id, evaluation=EVAL)
        lora = api.submit_pipeline(api.parse_steps("finetune:mode=lora,epochs=4,batch_size=8,max_length=16,learning_rate=0.002,keep_adapter=true,max_val_examples=20"),
                                   model="minilm-l6", dataset="toy", evaluation=EVAL)
        jobs["lora"] = lora[0]
        jobs["head-only"] = api.submit("finetune", {"mode": "head-only", "epochs": 1, "max_length": 16}, model="minilm-l6",
                                       dataset="toy", evaluation=EVAL)
        failing = [api.submit("export-onnx", {"tolerance": 1e-12}, depends_on=tuned)]
        failing.append(api.submit("quantize", {"method": "ort-dynamic-int8"}, depends_on=failing[0].id))
        run_cli("worker", "--burst")
        jobs = {name: api.get_job(job.id) for name, job in jobs.items()}
        yield {"api": api, "jobs": jobs, "failing": [api.get_job(j.id) for j in failing], "root": root}
        db.dispose_all()


def test_every_variant_is_evaluated_and_none_is_left_pending(lab):
    tree = lab["api"].variant_tree()
    assert len(tree) == 1 + 18  # the original and one variant per job that yields one
    for row in tree[1:]:
        assert row.evaluation == "done", f"variant {row.id} {row.name}: {row.evaluation}"
        assert row.accuracy is not None and row.num_examples and row.num_examples > 0


def test_full_finetune_learns_and_records_its_curve(lab):
    variant = produced(lab, "finetune")
    ev = evaluation_of(lab, variant)
    assert ev.accuracy > 0.8, "fine-tuning on the keyword dataset should be far above chance (1/3)"
    assert ev.parent_accuracy is None and not ev.flagged  # the original has no head to compare with
    history = variant.info["training"]["history"]
    assert [h["epoch"] for h in history][0] == 1 and all(0 <= h["val_accuracy"] <= 1 for h in history)
    config = json.loads((Path(variant.artifact_dir) / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "neutral", "2": "positive"}
    assert any(f["path"] == "model.safetensors" for f in variant.files)
    assert not any(f["path"].endswith((".bin", ".pt")) for f in variant.files)


def test_onnx_export_has_optimum_layout_and_passes_parity(lab):
    variant = produced(lab, "export")
    files = {f["path"] for f in variant.files}
    assert {"config.json", "model.onnx", "tokenizer.json"} <= files
    parity = variant.info["export"]["parity"]
    assert parity["max_abs_diff"] < 1e-3 and parity["label_agreement"] == 1.0
    assert variant.info["export"]["fused_operators"].get("Attention") == 6  # eager export fuses every layer
    ev = evaluation_of(lab, variant)
    assert ev.agreement_with_parent == 1.0 and not ev.flagged


def test_lineage_and_recipe_of_a_pipeline(lab):
    variant = produced(lab, "ort-dynamic")
    detail = lab["api"].variant_detail(variant.id)
    assert [v.runtime for v in detail["lineage"]] == ["pytorch", "pytorch", "onnxruntime", "onnxruntime"]
    assert [s["kind"] for s in variant.recipe["steps"]] == ["intake", "finetune", "export-onnx", "quantize"]
    assert variant.precision == "int8" and variant.size_bytes < produced(lab, "export").size_bytes / 3
    assert lab["jobs"]["ort-dynamic"].pipeline == lab["jobs"]["finetune"].pipeline


def test_predictors_of_every_runtime_agree_on_labels_and_shapes(lab):
    from jobs.runtimes import load_predictor

    texts = ["i found it wonderful", "what a terrible day", "the table one today"]
    for name in ("finetune", "export", "ort-dynamic", "torch-int8", "bf16", "structured", "structured-onnx"):
        predictor = load_predictor(produced(lab, name))
        probs = predictor.predict(texts)
        assert probs.shape == (3, 3) and np.allclose(probs.sum(1), 1, atol=1e-4), name
        assert predictor.labels == ["negative", "neutral", "positive"]
    original = lab["api"].get_variant(lab["jobs"]["finetune"].variant_id)
    with pytest.raises(ValueError, match="no classification head"):  # never a random head's answers
        load_predictor(original)


def test_quantized_pytorch_variants(lab):
    int8, bf16, fp16 = produced(lab, "torch-int8"), produced(lab, "bf16"), produced(lab, "fp16")
    assert int8.info["quantization"]["quantized_linear_layers"] > 30
    # Linear weights shrink 4x; the fp32 embeddings (about half of MiniLM) do not
    assert int8.info["quantization"]["in_memory_bytes"] < int8.size_bytes * 0.7
    assert bf16.precision == "bf16" and bf16.size_bytes < produced(lab, "finetune").size_bytes * 0.6
    assert fp16.precision == "fp16"
    for variant in (int8, bf16, fp16):
        assert evaluation_of(lab, variant).agreement_with_parent is not None


def test_static_int8_with_and_without_the_exclusion_preset(lab):
    """Records what happened either way: the flag is set exactly when accuracy dropped past the tolerance."""
    with_preset, without = produced(lab, "static-preset"), produced(lab, "static-no-preset")
    assert with_preset.info["quantization"]["preset_excluded_nodes"] > 0
    assert "preset_excluded_nodes" not in without.info["quantization"]
    for variant in (with_preset, without):
        ev = evaluation_of(lab, variant)
        assert ev.parent_accuracy is not None
        assert ev.flagged == (ev.drop_points > ev.tolerance_points)
        print(f"{variant.name}: accuracy {ev.accuracy:.3f}, drop {ev.drop_points:+.2f} pts, flagged {ev.flagged}")


def _int8_weights(variant) -> list[np.ndarray]:
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(Path(variant.artifact_dir) / "model.onnx")).graph
    return [numpy_helper.to_array(t) for t in graph.initializer if t.data_type == onnx.TensorProto.INT8]


def test_ort_dynamic_int8_with_reduce_range_on_makes_7_bit_weights_that_work(lab):
    from jobs.kinds.quantize import resolve_reduce_range
    from jobs.runtimes import load_predictor
    from jobs.runtimes.devices import detect

    reduced, default = produced(lab, "ort-reduce-range"), produced(lab, "ort-dynamic")
    facts = reduced.info["quantization"]
    assert facts["reduce_range"] is True and facts["reduce_range_why"] == "set to on"
    weights = _int8_weights(reduced)
    assert len(weights) >= 12 and max(int(np.abs(w.astype(np.int16)).max()) for w in weights) <= 64  # 7 bits
    # the default (auto) says what it resolved to on this machine's flags, and why
    auto = default.info["quantization"]
    assert (auto["reduce_range"], auto["reduce_range_why"]) == resolve_reduce_range("auto", detect()["cpu_flags"])
    if not auto["reduce_range"]:
        assert max(int(np.abs(w.astype(np.int16)).max()) for w in _int8_weights(default)) > 64
    probs = load_predictor(reduced).predict(["i found it wonderful", "what a terrible day"])
    assert probs.shape == (2, 3) and np.allclose(probs.sum(1), 1, atol=1e-4)
    ev = evaluation_of(lab, reduced)
    assert ev.agreement_with_parent is not None and ev.flagged == (ev.drop_points > ev.tolerance_points)


def test_reduce_range_parses_and_applies_to_onnx_runtime_methods_only():
    from jobs.kinds.quantize import QuantizeParams
    from jobs.runner.params import describe, parse_params
    from storage.errors import InvalidInput

    assert parse_params(QuantizeParams, {}).reduce_range == "auto"
    for method in ("ort-dynamic-int8", "ort-static-int8"):
        for value in ("auto", "on", "off"):
            assert parse_params(QuantizeParams, {"method": method, "reduce_range": value}).reduce_range == value
    with pytest.raises(InvalidInput, match="reduce_range='7bit' is not allowed; use one of auto, on, off"):
        parse_params(QuantizeParams, {"reduce_range": "7bit"})
    with pytest.raises(InvalidInput, match="reduce_range do not apply to method torch-dynamic-int8"):
        parse_params(QuantizeParams, {"method": "torch-dynamic-int8", "reduce_range": "on"})
    assert parse_params(QuantizeParams, {"method": "bf16", "reduce_range": "auto"}).method == "bf16"
    field = next(f for f in describe(QuantizeParams) if f.name == "reduce_range")
    assert field.choices == ("auto", "on", "off") and "VNNI" in field.help


@pytest.mark.parametrize(
    ("flags", "setting", "activations", "expected"),
    [
        ({"avx2"}, "auto", "uint8", True),  # AVX2 only (e.g. Zen 3): VPMADDUBSW can saturate
        ({"avx2", "avx512f"}, "auto", "uint8", True),  # AVX-512 without VNNI (Skylake-SP)
        ({"avx2", "avx512f", "avx512_vnni"}, "auto", "uint8", False),
        ({"avx2", "avx_vnni"}, "auto", "uint8", False),  # AVX-VNNI without AVX-512 (Alder Lake)
        ({"avx2", "amx_tile", "amx_int8"}, "auto", "uint8", False),
        (set(), "auto", "uint8", True),
        ({"avx2"}, "auto", "int8-symmetric", False),  # for TensorRT, not this CPU's u8s8 path
        ({"avx2"}, "off", "uint8", False),
        ({"avx512_vnni", "amx_int8"}, "on", "uint8", True),
    ],
)
def test_reduce_range_auto_resolves_from_cpu_flags(flags, setting, activations, expected):
    from jobs.kinds.quantize import resolve_reduce_range

    on, why = resolve_reduce_range(setting, flags, activations)
    assert on is expected
    assert why.startswith("auto: ") == (setting == "auto")
    if setting == "auto" and activations == "uint8":
        assert ("no AVX-512 VNNI" in why) == expected
        assert all(f in why for f in flags & {"avx512_vnni", "avx_vnni", "amx_int8"})


def test_advice_says_reduce_range_is_on_by_default_without_vnni(home, monkeypatch):
    from jobs import api

    avx2 = {"cpu": "EPYC", "cpu_count": 2, "cpu_flags": ["avx2"], "devices": ["cpu"]}
    monkeypatch.setattr("jobs.decisions.advice.detect", lambda: avx2)
    notes = api.hardware_advice("quantize", {"method": "ort-dynamic-int8"})
    assert any("reduce_range is on by default here" in n and "VPMADDUBSW" in n for n in notes)
    assert any("reduce_range=off" in n for n in api.hardware_advice("quantize", {"method": "ort-static-int8",
                                                                                 "reduce_range": "off"}))
    assert not any("reduce_range" in n for n in api.hardware_advice("quantize", {"method": "torch-dynamic-int8"}))
    monkeypatch.setattr("jobs.decisions.advice.detect", lambda: {**avx2, "cpu_flags": ["avx2", "avx_vnni"]})
    assert not any("reduce_range" in n for n in api.hardware_advice("quantize", {"method": "ort-dynamic-int8"}))


def test_pruning(lab):
    l1, structured = produced(lab, "l1"), produced(lab, "structured")
    facts = l1.info["pruning"]
    assert facts["sparsity_after"] == pytest.approx(0.4, abs=0.01)
    assert facts["parameters_after"] == facts["parameters_before"]
    facts = structured.info["pruning"]
    assert facts["heads_after"] == facts["heads_before"] // 2
    assert facts["parameters_after"] < facts["parameters_before"] * 0.85
    assert structured.size_bytes < l1.size_bytes
    recovered = produced(lab, "structured-recovered")
    assert recovered.parent_id == structured.id and recovered.size_bytes == structured.size_bytes
    assert json.loads((Path(recovered.artifact_dir) / "workbench.json").read_text())["kept_heads"] == \
        json.loads((Path(structured.artifact_dir) / "workbench.json").read_text())["kept_heads"]
    assert evaluation_of(lab, recovered) is not None
    onnx = produced(lab, "structured-onnx")  # pruned heads differ per layer; fusion and ORT optimization still apply
    assert onnx.info["export"]["parity"]["max_abs_diff"] < 1e-3
    assert onnx.info["export"]["optimization"] == "extended"


def test_intermediate_layer_distillation_learns_the_teachers_hidden_states(lab):
    """Student layer j against teacher layer 2j: a real term of the loss (the training loss counts it), recorded."""
    from storage.errors import InvalidInput

    api = lab["api"]
    hidden, plain = produced(lab, "half-hidden"), produced(lab, "half")
    assert hidden.info["training"]["hidden_weight"] == 1.0 and plain.info["training"]["hidden_weight"] == 0.0
    assert json.loads((Path(hidden.artifact_dir) / "config.json").read_text())["num_hidden_layers"] == 3
    assert "student layer j against layer 2*j" in api.job_log(lab["jobs"]["half-hidden"].id)
    assert evaluation_of(lab, hidden) is not None
    with pytest.raises(InvalidInput, match="as wide as its teacher"):
        api.submit("distill", {"student": "small-4x256", "hidden_weight": 1.0}, variant=hidden.id, dataset="toy")


def test_distillation_from_an_onnx_teacher_and_a_small_student(lab):
    half, small = produced(lab, "half"), produced(lab, "small")
    assert half.info["training"]["teacher_variant"] == produced(lab, "export").id
    assert json.loads((Path(half.artifact_dir) / "config.json").read_text())["num_hidden_layers"] == 3
    assert small.info["training"]["parameters"] < half.info["training"]["parameters"]
    ev = evaluation_of(lab, small)  # one epoch of a fresh student: far below its teacher, and flagged
    assert ev.flagged == (ev.drop_points > 1.0)


def test_lora_and_head_only(lab):
    lora, head = produced(lab, "lora"), produced(lab, "head-only")
    assert any(f["path"] == "adapter/adapter_model.safetensors" for f in lora.files)
    assert lora.info["training"]["mode"] == "lora" and head.info["training"]["mode"] == "head-only"
    assert evaluation_of(lab, lora).accuracy > 0.5


def test_failed_step_cancels_the_rest_with_a_reason_and_keeps_nothing(lab):
    export, quantize = lab["failing"]
    assert export.status.value == "failed" and "parity check failed" in export.message
    assert export.produced_variant_id is None
    jobs_dir = lab["root"] / "home" / "jobs"  # scratch of every job, failed or not, is gone with it
    assert not jobs_dir.exists() or not any(jobs_dir.iterdir())
    assert quantize.status.value == "cancelled" and f"job {export.id}" in quantize.message


def test_rerun_recipe_queues_the_same_steps_from_the_original(lab):
    api = lab["api"]
    variant = produced(lab, "ort-dynamic")
    before = len(api.list_jobs())
    jobs = api.rerun_recipe(variant.id)
    assert [j.kind for j in jobs] == ["finetune", "export-onnx", "quantize"]
    assert jobs[0].variant_id == api.variant_tree()[0].id  # the model's original
    assert [j.params for j in jobs] == [s["params"] for s in variant.recipe["steps"][1:]]
    assert len(api.list_jobs()) == before + 3
    api.cancel_job(jobs[0].id)  # its dependents are cancelled with it
    assert all(api.get_job(j.id).status.value == "cancelled" for j in jobs)


@pytest.mark.parametrize(
    ("kind", "params", "message"),
    [
        ("quantize", {"method": "int4"}, "method='int4' is not allowed"),
        ("quantize", {"method": "ort-dynamic-int8"}, "takes a onnxruntime variant"),
        ("prune", {"amount": 1.5}, "amount=1.5 must be between 0 and 1"),
        ("finetune", {"epochs": -1}, "epochs must be 0 (auto) or positive"),
        ("finetune", {"learning_rate": "fast"}, "learning_rate must be a number"),
        ("export-onnx", {"opset": 9}, "opset=9 is not supported"),
        ("distill", {"alpha": 2}, "alpha must be between 0 and 1"),
        ("build-tensorrt", {}, "unavailable: needs an NVIDIA GPU with TensorRT"),
    ],
)
def test_bad_params_are_refused_before_anything_is_queued(lab, kind, params, message):
    from storage.errors import InvalidInput

    api = lab["api"]
    before = len(api.list_jobs())
    with pytest.raises(InvalidInput, match=message.replace("(", r"\(").replace(")", r"\)")):
        api.submit(kind, params, variant=produced(lab, "finetune").id)
    assert len(api.list_jobs()) == before


def test_a_pipeline_with_a_wrong_runtime_chain_queues_nothing(lab):
    from storage.errors import InvalidInput

    api = lab["api"]
    before = len(api.list_jobs())
    with pytest.raises(InvalidInput, match=r"step 2 \(quantize\).*export it with export-onnx first"):
        api.submit_pipeline(api.parse_steps("finetune -> quantize:method=ort-static-int8"), model="minilm-l6", dataset="toy")
    assert len(api.list_jobs()) == before


def test_cli_lists_variants_with_accuracy_and_shows_lineage(lab):
    out = run_cli("variants", "list").stdout
    assert "└ finetune" in out and "%" in out
    detail = run_cli("variants", "show", str(produced(lab, "ort-dynamic").id)).stdout
    assert "lineage: 1 (intake) -> " in detail and "evaluation" in detail and "agreement" in detail
    kinds = run_cli("jobs", "kinds").stdout
    assert "unavailable: needs an NVIDIA GPU with TensorRT" in kinds
    refused = run_cli("pipelines", "submit", "finetune -> quantize:method=ort-static-int8", "--model", "minilm-l6",
                      "--dataset", "toy", check=False)
    assert refused.returncode == 2 and refused.stderr.startswith("error: step 2 (quantize)")


def test_every_registered_kind_has_a_test():
    from jobs.runner.registry import all_kinds

    # build-tensorrt: tests/test_tensorrt.py (skips without a GPU, with the reason); benchmark: tests/test_benchmark.py;
    # loadtest: tests/test_loadtest.py; export-openvino: tests/test_openvino.py; search: tests/test_search.py;
    # truncate: tests/test_truncate.py
    covered = KINDS_RUN_HERE | {"build-tensorrt", "benchmark", "loadtest", "export-openvino", "search", "truncate"}
    missing = {k.name for k in all_kinds()} - covered - {"test-sleep"}
    assert not missing, f"job kinds without a test: {sorted(missing)}"
