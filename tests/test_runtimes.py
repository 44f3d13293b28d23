"""The runtime registry: what each runtime declares, and that everything asks it rather than testing names."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from jobs.runtimes import all_runtimes, display_name, get_runtime, load_predictor, registry
from storage.errors import InvalidInput

REPO = Path(__file__).resolve().parent.parent
BUILT_IN = ["onnxruntime", "openvino", "pytorch", "tensorrt"]
PLUGIN = "tests.support.runtimes"


@pytest.fixture
def fresh_registry(monkeypatch):
    """The registry as loaded now, restored after the test (a runtime registered here does not leak out)."""
    registry.load_runtimes()
    monkeypatch.setattr(registry, "_RUNTIMES", registry._RUNTIMES.copy())
    monkeypatch.delitem(sys.modules, PLUGIN, raising=False)  # imported again, so it registers into the copy
    return registry


def test_registry_lists_the_built_in_runtimes_with_their_names_for_people():
    runtimes = {r.name: r for r in all_runtimes()}
    assert set(BUILT_IN) <= set(runtimes)
    assert [display_name(n) for n in BUILT_IN] == ["ONNX Runtime", "OpenVINO", "PyTorch", "TensorRT"]
    assert display_name("not-registered") == "not-registered"
    assert runtimes["onnxruntime"].files == ("model.onnx",) and runtimes["tensorrt"].files == ("model.engine",)
    assert runtimes["openvino"].files == ("openvino_model.xml",)  # Optimum Intel's layout


def test_an_unknown_runtime_is_refused_with_the_known_names(tmp_path):
    with pytest.raises(InvalidInput, match=r"unknown runtime 'jax'; known runtimes: onnxruntime, openvino, pytorch, tensorrt"):
        load_predictor(SimpleNamespace(runtime="jax", artifact_dir=str(tmp_path)))


def test_device_rules():
    torch_rt, ort, trt = get_runtime("pytorch"), get_runtime("onnxruntime"), get_runtime("tensorrt")
    assert (torch_rt.default_device, ort.default_device, trt.default_device) == ("cpu", "cpu", "cuda")
    assert torch_rt.device_for("cpu") == "cpu" and torch_rt.device_for("cuda:1") == "cuda:1"
    assert trt.device_for("cpu") == "cuda" and trt.device_for("cuda:1") == "cuda:1"  # cpu is only the default
    assert get_runtime("openvino").device_for("gpu") == "gpu"  # an Intel GPU, if OpenVINO sees one; never CUDA
    with pytest.raises(ValueError, match="OpenVINO runs on cpu or gpu, not 'cuda'"):
        get_runtime("openvino").device_for("cuda")
    assert ort.device_for("tensorrt-ep") == "tensorrt-ep"
    with pytest.raises(ValueError, match="TensorRT runs on cuda, not 'tensorrt-ep'"):
        trt.device_for("tensorrt-ep")
    with pytest.raises(ValueError, match="PyTorch runs on cpu or cuda"):
        torch_rt.device_for("tensorrt-ep")


def test_what_an_export_needs_is_declared_by_each_runtime():
    assert [r.dist for r in get_runtime("pytorch").export_requires] == ["torch", "safetensors"]
    (ort,) = get_runtime("onnxruntime").export_requires
    assert (ort.dist, ort.same_as) == ("onnxruntime", ("onnxruntime-gpu",))
    trt = get_runtime("tensorrt")
    assert not trt.exportable and "one GPU model and TensorRT version" in trt.not_exportable


def test_the_files_in_a_variant_directory_say_which_runtime_loads_it(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"")
    assert get_runtime("onnxruntime").finds_files(tmp_path)
    assert not get_runtime("tensorrt").finds_files(tmp_path) and not get_runtime("pytorch").finds_files(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"")
    assert get_runtime("pytorch").finds_files(tmp_path)


def test_space_requirements_and_refusal_come_from_the_registry(tmp_path):
    from jobs.export import space

    for runtime, wanted in (("pytorch", {"torch", "safetensors"}), ("onnxruntime", {"onnxruntime"}),
                            ("openvino", {"openvino"})):
        reqs = space.requirements(SimpleNamespace(runtime=runtime, artifact_dir=str(tmp_path)))
        names = {r.split("==")[0] for r in reqs}
        assert {"gradio", "transformers", "tokenizers", "numpy"} | wanted == names, (runtime, reqs)
    with pytest.raises(InvalidInput, match=r"variant 7 \(TensorRT\) cannot be exported: a TensorRT engine is built"):
        space.plan(SimpleNamespace(id=7, runtime="tensorrt", artifact_dir=str(tmp_path)))


def test_a_plugin_runtime_is_found_by_load_predictor(fresh_registry, monkeypatch, tmp_path):
    monkeypatch.setenv("WORKBENCH_PLUGINS", PLUGIN)
    assert "test-echo" in [r.name for r in all_runtimes()]
    predictor = load_predictor(SimpleNamespace(runtime="test-echo", artifact_dir=str(tmp_path)), max_length=16, threads=2)
    # the default cpu becomes the runtime's own device: it declared cuda only
    assert (predictor.model_dir, predictor.device, predictor.max_length, predictor.threads) == (tmp_path, "cuda", 16, 2)
    assert predictor.predict_encoded({"input_ids": [[1, 2], [3, 4]]}).argmax(-1).tolist() == [0, 0]
    assert display_name("test-echo") == "Echo (tests)"


def test_registering_checks_what_a_runtime_declares(fresh_registry):
    def load(model_dir, device, max_length, threads):
        raise AssertionError("never loaded")

    with pytest.raises(ValueError, match="either export_requires or not_exportable"):
        registry.register_runtime("x", display_name="X", files=("x.bin",), devices=("cpu",))(load)
    with pytest.raises(ValueError, match="either export_requires or not_exportable"):
        registry.register_runtime("x", display_name="X", files=("x.bin",), devices=("cpu",), export_requires=("x",),
                                  not_exportable="why")(load)
    with pytest.raises(ValueError, match="at least one device"):
        registry.register_runtime("x", display_name="X", files=("x.bin",), devices=(), export_requires=())(load)
    with pytest.raises(ValueError, match="'pytorch' is registered twice"):
        registry.register_runtime("pytorch", display_name="Again", files=("x.bin",), devices=("cpu",),
                                  export_requires=())(load)


def test_listing_runtimes_imports_no_runtime_library():
    code = ("import sys; from jobs.runtimes import all_runtimes, display_name, get_runtime; "
            "all_runtimes(); display_name('pytorch'); get_runtime('tensorrt').device_for('cpu'); "
            "print(sorted(m for m in ('torch', 'onnxruntime', 'openvino', 'tensorrt', 'transformers') if m in sys.modules))")
    env = {**os.environ, "WORKBENCH_PLUGINS": ""}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stderr


@pytest.mark.parametrize(("runtime", "device"), [("pytorch", "cpu"), ("onnxruntime", "cpu"), ("tensorrt", "cuda")])
def test_an_evaluation_is_queued_for_the_device_its_runtime_runs_on(monkeypatch, runtime, device):
    from jobs.kinds import evaluate

    queued = {}
    monkeypatch.setattr(evaluate.queue, "enqueue", lambda kind, params, **kw: queued.update(kw, kind=kind))
    producer = SimpleNamespace(evaluation={}, pipeline=None, max_attempts=1)
    variant = SimpleNamespace(id=5, runtime=runtime, model_id=1, dataset_id=2)
    evaluate.queue_evaluation(None, producer, variant)
    assert queued["kind"] == "evaluate" and queued["device"] == device
