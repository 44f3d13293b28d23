"""The OpenVINO runtime: IR export, NNCF int8 (plain and accuracy-controlled), bf16 only where the CPU has it, and
the OpenVINO variants in everything that uses predictors (evaluation, benchmark, playground, model server, Space).

One module-scoped data directory: a tiny BERT classifier and the toy dataset; every job is queued up front and run
by one `worker --burst`, as the workbench runs them.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import pytest

from tests.conftest import run_cli
from tests.support.lab import evaluation_of, produced, tiny_lab

pytestmark = pytest.mark.slow

EVAL = {"max_examples": 40, "tolerance_points": 1.0}
TEXTS = ["i found it wonderful", "what a terrible day", "the table one today", "meh",
         "a much longer text " * 40]  # longer than the model's 128 tokens: truncated, another sequence length
BENCH = {"batch_sizes": [1, 4], "seq_lens": [16], "warmup": 2, "window": 5,
         "min_samples": 10, "max_seconds": 1.0, "threads": 1, "texts": 8}


@pytest.fixture(scope="module")
def lab(tmp_path_factory, minilm_dir):
    from jobs import api
    from tests.support.data import write_sentiment_csv

    root = tmp_path_factory.mktemp("openvino")
    with tiny_lab(root, minilm_dir, write_sentiment_csv(root / "toy.csv"), "toy") as original:
        jobs = {"fp32": api.submit("export-openvino", {"parity_examples": 16}, model="tiny", dataset="toy",
                                   evaluation=EVAL)}
        jobs["int8"] = api.submit("quantize", {"method": "nncf-int8", "calibration_examples": 32},
                                  depends_on=jobs["fp32"].id, evaluation=EVAL)
        jobs["int8-ac"] = api.submit("quantize", {"method": "nncf-int8", "calibration_examples": 32,
                                                  "accuracy_control": True, "max_drop_points": 1.0,
                                                  "validation_examples": 30},
                                     depends_on=jobs["fp32"].id, evaluation=EVAL)
        # queued whatever the CPU: made where bf16 is native, refused with the reason where it is not
        jobs["bf16"] = api.submit("export-openvino", {"precision": "bf16", "parity_examples": 16}, model="tiny",
                                  dataset="toy", evaluation=EVAL)
        jobs["benchmark"] = api.submit("benchmark", BENCH, depends_on=jobs["int8"].id, dataset="toy")
        run_cli("worker", "--burst")
        yield {"api": api, "jobs": {name: api.get_job(job.id) for name, job in jobs.items()}, "original": original,
               "root": root}


def test_fp32_ir_answers_what_pytorch_answers_at_any_batch_and_length(lab):
    from jobs.runtimes import load_predictor

    variant = produced(lab, "fp32")
    assert (variant.runtime, variant.precision) == ("openvino", "fp32")
    predictor, reference = load_predictor(variant, threads=1), load_predictor(lab["original"])
    # asked for explicitly: on AMX / AVX-512 BF16 CPUs OpenVINO's own default would be bf16
    assert predictor.inference_precision == "f32" and predictor.labels == reference.labels
    for texts in (TEXTS[:1], TEXTS, TEXTS[1:4]):  # dynamic batch and sequence axes
        got, want = predictor.predict(texts), reference.predict(texts)
        # fp32 on both sides; only the kernels' summation order differs (about 1e-6 on this model)
        np.testing.assert_allclose(got, want, atol=1e-4)
        assert (got.argmax(-1) == want.argmax(-1)).all()
    export = variant.info["export"]
    assert export["source"] == "pytorch" and export["parity"]["max_abs_diff"] < 1e-3
    assert export["inference_precision"] == "f32" and export["openvino"]


def test_the_variant_files_are_hashed_and_the_recipe_can_be_rerun(lab):
    from storage import files

    api = lab["api"]
    int8 = produced(lab, "int8")
    stored = {f["path"]: f["sha256"] for f in int8.files}
    assert {"openvino_model.xml", "openvino_model.bin", "config.json", "tokenizer.json", "workbench.json"} <= set(stored)
    for path, sha in stored.items():
        assert files.hash_file(Path(int8.artifact_dir) / path) == sha
    detail = api.variant_detail(int8.id)
    assert [v.runtime for v in detail["lineage"]] == ["pytorch", "openvino", "openvino"]
    assert [s["kind"] for s in int8.recipe["steps"]] == ["intake", "export-openvino", "quantize"]
    jobs = api.rerun_recipe(int8.id)
    assert [j.kind for j in jobs] == ["export-openvino", "quantize"]
    assert [j.params for j in jobs] == [s["params"] for s in int8.recipe["steps"][1:]]
    api.cancel_job(jobs[0].id)  # its dependent is cancelled with it
    assert all(api.get_job(j.id).status.value == "cancelled" for j in jobs)


def test_nncf_int8_is_evaluated_and_flagged_like_every_variant(lab):
    from jobs.runtimes import load_predictor

    for name in ("int8", "int8-ac"):
        variant = produced(lab, name)
        assert (variant.runtime, variant.precision) == ("openvino", "int8")
        facts = variant.info["quantization"]
        assert facts["method"] == "nncf-int8" and facts["fake_quantize_ops"] > 0
        assert facts["accuracy_control"] == (name == "int8-ac")
        ev = evaluation_of(lab, variant)
        assert ev.parent_accuracy is not None and ev.agreement_with_parent is not None
        assert ev.flagged == (ev.drop_points > ev.tolerance_points)
        assert ev.majority_accuracy is not None and isinstance(ev.degenerate, bool)
        probs = load_predictor(variant).predict(TEXTS)
        assert probs.shape == (5, 3) and np.allclose(probs.sum(1), 1, atol=1e-4)
        print(f"{variant.name}: accuracy {ev.accuracy:.3f}, drop {ev.drop_points:+.2f} pts, flagged {ev.flagged}")
    controlled = produced(lab, "int8-ac").info["quantization"]
    assert 0 < controlled["validation_examples"] <= 30 and controlled["max_drop"] == pytest.approx(0.01)
    assert "-accuracy-control" in produced(lab, "int8-ac").name


def test_bf16_is_made_only_where_the_cpu_runs_it(lab):
    from jobs.runtimes import load_predictor
    from jobs.runtimes.openvino_runtime import bf16_here

    native, why = bf16_here()
    job = lab["jobs"]["bf16"]
    if not native:
        assert job.status.value == "failed" and job.produced_variant_id is None
        assert f"no bf16 OpenVINO variant made: {why}" in job.message
        return
    variant = produced(lab, "bf16")
    assert variant.precision == "bf16" and variant.info["export"]["inference_precision"] == "bf16"
    predictor = load_predictor(variant)
    assert predictor.inference_precision == "bf16"  # read back from what OpenVINO compiled
    fp32 = load_predictor(produced(lab, "fp32")).predict(TEXTS)
    assert np.abs(predictor.predict(TEXTS) - fp32).max() < 0.05  # bf16 rounding, not another model
    assert evaluation_of(lab, variant).agreement_with_parent is not None


def test_a_bf16_variant_is_refused_at_load_on_a_cpu_without_bf16(lab, tmp_path, monkeypatch):
    """What a bf16 variant does when it meets a CPU without AMX or AVX-512 BF16 (this one's flags hidden)."""
    import shutil

    from jobs.runtimes import devices, load_predictor
    from jobs.runtimes.base import read_variant_meta, write_variant_meta

    fp32 = produced(lab, "fp32")
    copy = Path(shutil.copytree(fp32.artifact_dir, tmp_path / "bf16"))
    write_variant_meta(copy, {**read_variant_meta(copy), "inference_precision": "bf16"})
    real = devices.cpu_info()
    monkeypatch.setattr(devices, "cpu_info", lambda: {**real, "cpu_flags": ["avx2", "avx512f", "avx512_vnni"]})
    with pytest.raises(ValueError, match="runs in bf16, which cannot run here: this CPU has no AMX or AVX-512 BF16"):
        load_predictor(SimpleNamespace(runtime="openvino", artifact_dir=str(copy)))


@pytest.mark.parametrize(
    ("flags", "capabilities", "native", "says"),
    [
        ({"avx2", "avx512f", "avx512_vnni"}, {"FP32", "INT8"}, False, "no AMX or AVX-512 BF16"),  # Ice Lake
        ({"avx2"}, {"FP32", "INT8"}, False, "no AMX or AVX-512 BF16"),  # AVX2 only (e.g. Zen 2/3)
        ({"avx512_bf16"}, {"FP32", "BF16"}, True, "avx512_bf16"),  # Cooper Lake, Zen 4
        ({"amx_bf16", "avx512_bf16"}, {"BF16"}, True, "amx_bf16, avx512_bf16"),  # Sapphire Rapids
        ({"amx_bf16"}, {"FP32"}, False, "does not report BF16"),  # an OpenVINO that does not use it
    ],
)
def test_bf16_support_needs_the_cpu_flags_and_openvino_to_agree(flags, capabilities, native, says):
    from jobs.runtimes.openvino_runtime import bf16_support

    ok, why = bf16_support(flags, capabilities)
    assert ok is native and says in why


def test_a_benchmark_measures_an_openvino_variant(lab):
    from storage import catalog

    job = lab["jobs"]["benchmark"]
    assert job.status.value == "succeeded", lab["api"].job_log(job.id)[-3000:]
    int8 = produced(lab, "int8")
    rows = [r for r in catalog.list_measurements() if r.job_id == job.id]
    assert {r.variant_id for r in rows} == {int8.id} and sorted(r.batch_size for r in rows) == [1, 4]
    for r in rows:
        assert r.p50_ms > 0 and r.throughput_sps > 0 and r.threads == 1 and r.load_time_s > 0
        assert r.fingerprint["libraries"]["openvino"]  # a measurement says which OpenVINO it ran on
    assert len({r.fingerprint_hash for r in rows}) == 1


def test_the_playground_and_a_model_server_answer_with_the_openvino_variant(lab):
    from jobs.playground.predict import CACHE
    from jobs.runtimes import load_predictor
    from tests.support.browser import wait_until_serving
    from tests.test_serving import start_server

    variant = produced(lab, "int8")
    expected = load_predictor(variant).predict(TEXTS[:2])
    CACHE.clear()  # predictors are cached by variant id; other modules' databases reuse the ids
    answer = lab["api"].predict(variant.id, TEXTS[0])
    assert list(answer.probabilities.values()) == pytest.approx(expected[0].tolist(), abs=1e-5)

    server = start_server(lab["root"] / "home", "openvino", variant.id)
    try:
        # /ready only once every stored file (the .xml and .bin among them) matches its sha256
        wait_until_serving(server.proc, f"{server.url}/ready", server.log, "the OpenVINO variant's server to be ready")
        reply = httpx.post(f"{server.url}/v1/predict", json={"texts": TEXTS[:2]}, timeout=60)
    finally:
        server.stop()
    assert reply.status_code == 200, reply.text
    got = [list(p["probabilities"].values()) for p in reply.json()["predictions"]]
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_a_space_export_runs_the_openvino_variant(lab, tmp_path):
    variant = produced(lab, "fp32")
    result = lab["api"].export_space(variant.id, tmp_path / "space")
    assert result.runtime == "openvino" and {"model/openvino_model.xml", "model/openvino_model.bin"} <= set(result.files)
    reqs = (tmp_path / "space" / "requirements.txt").read_text().split()
    assert any(r.startswith("openvino==") for r in reqs) and not any(r.startswith(("torch", "onnxruntime")) for r in reqs)
    from jobs.runtimes import load_predictor

    expected = load_predictor(variant).predict(["This is a short test sentence."])[0]
    assert list(result.check.values()) == pytest.approx(expected.tolist(), abs=1e-5)  # the staged app's own answer


@pytest.mark.parametrize(
    ("kind", "params", "source", "message"),
    [
        ("quantize", {"method": "nncf-int8"}, "original",
         "quantize method nncf-int8 takes a openvino variant, not pytorch; export it with export-openvino first"),
        ("quantize", {"method": "ort-dynamic-int8", "accuracy_control": True}, "original",
         "accuracy_control do not apply to method ort-dynamic-int8"),
        ("quantize", {"method": "nncf-int8", "max_drop_points": 0}, "fp32", "max_drop_points must be above 0"),
        ("export-openvino", {}, "int8", "export-openvino takes a pytorch or onnxruntime variant, not openvino"),
        ("export-openvino", {"precision": "fp16"}, "original", "precision='fp16' is not allowed"),
    ],
)
def test_bad_requests_are_refused_before_anything_is_queued(lab, kind, params, source, message):
    from storage.errors import InvalidInput

    api = lab["api"]
    variant = lab["original"] if source == "original" else produced(lab, source)
    before = len(api.list_jobs())
    with pytest.raises(InvalidInput, match=message.replace("(", r"\(").replace(")", r"\)")):
        api.submit(kind, params, variant=variant.id, dataset="toy")
    assert len(api.list_jobs()) == before


@pytest.mark.parametrize("fusion", [False, True])
def test_an_onnx_graph_converts_fused_or_not_and_matches_pytorch(tmp_path, minilm_dir, fusion):
    """export-openvino's ONNX path: OpenVINO reads ONNX Runtime's fused operators (Attention, SkipLayerNorm) too."""
    from transformers import AutoConfig

    from jobs.kinds.export_onnx import ExportOnnxParams, export_graph, fuse
    from jobs.ml import openvino_ir
    from jobs.ml.artifacts import copy_support_files
    from jobs.runtimes.openvino_runtime import OpenVinoPredictor
    from jobs.runtimes.torch_runtime import TorchPredictor, load_torch_model
    from tests.support.tiny import tiny_classifier

    source = tiny_classifier(tmp_path / "tiny", minilm_dir, init_range=0.5)
    reference = TorchPredictor(source)
    sample = reference.encode(["a b", "c d e"])
    export_graph(load_torch_model(source, attn_implementation="eager"), sample, list(sample), tmp_path / "model.onnx",
                 ExportOnnxParams())
    if fusion:
        fuse(tmp_path / "model.onnx", AutoConfig.from_pretrained(source), False, SimpleNamespace(log=print))
    out = tmp_path / "openvino"
    out.mkdir()
    copy_support_files(source, out)
    openvino_ir.save_ir(openvino_ir.from_onnx(tmp_path / "model.onnx"), out)
    check = openvino_ir.parity(reference, OpenVinoPredictor(out), TEXTS)
    assert check["max_abs_diff"] < 1e-4 and check["label_agreement"] == 1.0


def test_an_onnx_graph_with_fixed_shapes_is_refused(tmp_path, minilm_dir):
    from jobs.kinds.export_onnx import ExportOnnxParams, export_graph
    from jobs.ml import openvino_ir
    from jobs.runtimes.torch_runtime import load_torch_model
    from tests.support.tiny import tiny_classifier

    source = tiny_classifier(tmp_path / "tiny", minilm_dir)
    sample = {"input_ids": np.array([[101, 2000, 102]]), "attention_mask": np.ones((1, 3), dtype=np.int64)}
    export_graph(load_torch_model(source), sample, list(sample), tmp_path / "model.onnx",
                 ExportOnnxParams(dynamic_axes=False))
    with pytest.raises(ValueError, match=r"fixed input shapes \(input_ids \[1,3\].*export it with dynamic_axes=true"):
        openvino_ir.from_onnx(tmp_path / "model.onnx")


def test_advice_before_launch_says_bf16_cannot_run_on_a_cpu_without_it(home, monkeypatch):
    from jobs import api

    avx512 = {"cpu": "Xeon (Ice Lake)", "cpu_count": 2, "cpu_flags": ["avx2", "avx512f", "avx512_vnni"],
              "devices": ["cpu"]}
    monkeypatch.setattr("jobs.decisions.advice.detect", lambda: avx512)
    assert any("no AMX or AVX-512 BF16" in n for n in api.hardware_advice("export-openvino", {"precision": "bf16"}))
    assert not api.hardware_advice("export-openvino", {"precision": "fp32"})
    monkeypatch.setattr("jobs.decisions.advice.detect", lambda: {**avx512, "cpu_flags": ["avx512_bf16", "amx_bf16"]})
    assert not api.hardware_advice("export-openvino", {"precision": "bf16"})


def test_openvino_and_nncf_send_no_usage_telemetry():
    """Both send usage events to Google Analytics unless opted out; through the workbench they use their stubs."""
    import subprocess
    import sys

    from tests.conftest import REPO

    code = ("import sys; from jobs.runtimes.openvino_runtime import import_openvino; import_openvino(); "
            "import nncf.telemetry.wrapper as nncf_telemetry; from openvino.tools.ovc import convert_impl; "
            "print(sys.modules['openvino_telemetry'], convert_impl.tm.__name__, "
            "type(nncf_telemetry.telemetry).__name__ != 'NNCFTelemetry')")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["None", "openvino.tools.ovc.telemetry_stub", "True"], out.stderr
