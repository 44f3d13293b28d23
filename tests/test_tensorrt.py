"""TensorRT: clear refusals on machines without it, and (on an NVIDIA GPU with TensorRT) an engine that agrees with
ONNX Runtime."""

from __future__ import annotations

import importlib
import subprocess
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest

from jobs.kinds.build_tensorrt import BuildTensorRTParams, _copy_non_onnx
from jobs.runner.params import describe, parse_params
from jobs.runtimes.tensorrt_runtime import (
    INT8_NEEDS_QDQ,
    UNAVAILABLE,
    TensorRTPredictor,
    availability,
    build_engine,
)
from storage.errors import InvalidInput

INPUTS = ["input_ids", "attention_mask", "token_type_ids"]
WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "engine", "works", "well", "a", "second", "sentence", "."]
TEXTS = ["the engine works well .", "a second sentence", "well", "the the the engine engine works a second ."]

needs_tensorrt = pytest.mark.skipif(not availability()[0], reason=availability()[1])


def _tiny_onnx_variant(root: Path) -> tuple[Path, object]:
    """A directory like an export-onnx variant: model.onnx, config.json, a tokenizer and workbench.json."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    root.mkdir(parents=True, exist_ok=True)
    (root / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(root / "vocab.txt"))
    tokenizer.save_pretrained(root)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, num_labels=2,
        initializer_range=0.5,  # logits well away from 0, so the comparison below means something
    )
    model = BertForSequenceClassification(config).eval()
    model.config.save_pretrained(root)
    example = tokenizer(TEXTS[:2], padding=True, return_tensors="pt")
    axes = {name: {0: "batch", 1: "seq"} for name in INPUTS}
    axes["logits"] = {0: "batch"}
    with warnings.catch_warnings():  # the TorchScript exporter's tracer warnings are expected here
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            tuple(example[name] for name in INPUTS),
            str(root / "model.onnx"),
            dynamo=False,
            input_names=INPUTS,
            output_names=["logits"],
            dynamic_axes=axes,
            opset_version=17,
        )
    (root / "workbench.json").write_text('{"max_length": 32}')
    return root, tokenizer


def test_availability_explains_why_tensorrt_cannot_run_here():
    ok, reason = availability()
    if ok:
        pytest.skip(f"this machine has TensorRT: {reason}")
    assert reason.startswith("unavailable: needs an NVIDIA GPU with TensorRT")
    assert reason.startswith(UNAVAILABLE + " (") and reason.endswith(")")


def test_availability_names_a_missing_gpu(monkeypatch):
    import torch

    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="10.0.0"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert availability() == (False, f"{UNAVAILABLE} (no CUDA device visible to torch)")


def test_availability_names_a_missing_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # makes `import tensorrt` raise ImportError
    ok, reason = availability()
    assert not ok and "the tensorrt package is not installed" in reason and "pip install '.[gpu]'" in reason


def test_runtime_module_imports_without_tensorrt():
    code = (
        "import sys\n"
        "import jobs.runtimes.tensorrt_runtime as m, jobs.kinds.build_tensorrt\n"
        "assert 'tensorrt' not in sys.modules, 'tensorrt was imported at module level'\n"
        "sys.modules['tensorrt'] = None  # as if it were not installed, even on a GPU machine\n"
        "print(m.availability()[0])\n"
    )
    repo = Path(__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=repo, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_the_kind_is_registered_for_cuda_workers():
    from jobs.runner import registry

    importlib.import_module("jobs.kinds.build_tensorrt")
    kind = registry.get_kind("build-tensorrt")
    assert kind.device == "cuda" and kind.needs_variant and kind.params_cls is BuildTensorRTParams
    assert kind.summary == "Build a TensorRT engine (fp16 / int8) from an ONNX variant"


def test_a_cancel_during_the_build_stops_the_builder_and_is_not_swallowed():
    from jobs.runner.context import JobCancelled
    from jobs.runtimes.tensorrt_runtime import _progress_monitor

    class ProgressMonitor:  # what the builder's trt.IProgressMonitor base needs here
        def __init__(self):
            pass

    def cancelled() -> bool:
        raise JobCancelled("job 1 cancelled")

    monitor = _progress_monitor(types.SimpleNamespace(IProgressMonitor=ProgressMonitor), lambda _line: None, cancelled)
    assert monitor.step_complete("tactics", 1) is False  # the builder stops...
    assert monitor.stopped and isinstance(monitor.error, JobCancelled)  # ...and build_engine raises it afterwards


def test_params_defaults_and_choices():
    p = parse_params(BuildTensorRTParams, {})
    assert (p.precision, p.min_batch, p.opt_batch, p.max_batch, p.opt_seq, p.max_seq) == ("fp16", 1, 8, 32, 128, 128)
    fields = {f.name: f for f in describe(BuildTensorRTParams)}
    assert fields["precision"].choices == ("fp16", "int8", "fp32")
    assert all(f.help for f in fields.values())
    assert parse_params(BuildTensorRTParams, {"precision": "int8", "max_batch": "64"}).max_batch == 64


def test_params_refuse_profiles_that_cannot_be_built():
    with pytest.raises(InvalidInput, match="min_batch <= opt_batch <= max_batch.*min_batch=4, opt_batch=2"):
        parse_params(BuildTensorRTParams, {"min_batch": 4, "opt_batch": 2})
    with pytest.raises(InvalidInput, match="max_seq=1024 is too long: use max_seq <= 512"):
        parse_params(BuildTensorRTParams, {"max_seq": 1024, "opt_seq": 128})
    with pytest.raises(InvalidInput, match="min_seq <= opt_seq <= max_seq"):
        parse_params(BuildTensorRTParams, {"opt_seq": 256})
    with pytest.raises(InvalidInput, match="1 <= min_batch"):
        parse_params(BuildTensorRTParams, {"min_batch": 0})
    with pytest.raises(InvalidInput, match="workspace_gb must be > 0"):
        parse_params(BuildTensorRTParams, {"workspace_gb": 0})
    with pytest.raises(InvalidInput, match="use one of fp16, int8, fp32"):
        parse_params(BuildTensorRTParams, {"precision": "bf16"})


def test_int8_needs_an_explicitly_quantized_graph(tmp_path):
    """Checked before TensorRT is touched, so the refusal is the same on every machine."""
    variant, _ = _tiny_onnx_variant(tmp_path / "onnx")
    with pytest.raises(ValueError) as info:
        build_engine(
            variant / "model.onnx", tmp_path / "model.engine", precision="int8", input_names=INPUTS,
            min_shape=(1, 1), opt_shape=(8, 16), max_shape=(8, 32), workspace_gb=1.0, log=print,
        )
    assert str(info.value) == INT8_NEEDS_QDQ
    assert "quantize the ONNX variant with method ort-static-int8 first" in str(info.value)
    assert not (tmp_path / "model.engine").exists()


def test_the_engine_variant_copies_everything_but_the_onnx_graph(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    for name in ("model.onnx", "model.onnx.data", "model.onnx_data", "config.json", "vocab.txt", "workbench.json"):
        (src / name).write_text(name)
    assert _copy_non_onnx(src, dst) == ["config.json", "vocab.txt", "workbench.json"]
    assert sorted(p.name for p in dst.iterdir()) == ["config.json", "vocab.txt", "workbench.json"]


def test_batches_are_checked_against_the_profile_and_padded_up_to_its_minimum():
    predictor = object.__new__(TensorRTPredictor)  # the shape logic needs no engine
    predictor.profile_min, predictor.profile_max, predictor._pad_id = (2, 4), (8, 16), 0
    batch = {
        "input_ids": np.array([[2, 5, 3]], dtype=np.int64),
        "attention_mask": np.ones((1, 3), dtype=np.int64),
        "token_type_ids": np.zeros((1, 3), dtype=np.int64),
    }
    fitted, rows = predictor._fit_to_profile(batch)
    assert rows == 1
    assert fitted["input_ids"].tolist() == [[2, 5, 3, 0], [2, 5, 3, 0]]
    assert fitted["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 1, 1, 0]]
    too_long = {k: np.zeros((1, 17), dtype=np.int64) for k in batch}
    with pytest.raises(ValueError, match=r"outside this engine's profile \(max batch 8, max seq 16\)"):
        predictor._fit_to_profile(too_long)
    too_big = {k: np.zeros((9, 4), dtype=np.int64) for k in batch}
    with pytest.raises(ValueError, match="use batch_size <= 8"):
        predictor._fit_to_profile(too_big)


@needs_tensorrt
@pytest.mark.slow
def test_fp32_engine_matches_onnx_runtime(tmp_path):
    import onnxruntime as ort

    variant, tokenizer = _tiny_onnx_variant(tmp_path / "onnx")
    engine_dir = tmp_path / "engine"
    _copy_non_onnx(variant, engine_dir)
    facts = build_engine(
        variant / "model.onnx", engine_dir / "model.engine", precision="fp32", input_names=INPUTS,
        min_shape=(1, 1), opt_shape=(4, 16), max_shape=(8, 32), workspace_gb=1.0, log=print,
    )
    assert facts["precision"] == "fp32" and facts["engine_bytes"] > 0
    assert facts["profile"] == {"min": [1, 1], "opt": [4, 16], "max": [8, 32]}
    (engine_dir / "workbench.json").write_text('{"max_length": 32, "trt_profile": {"min": [1, 1], "opt": [4, 16], '
                                               '"max": [8, 32]}}')

    predictor = TensorRTPredictor(engine_dir, device="cuda")
    try:
        assert predictor.runtime == "tensorrt" and predictor.labels == ["LABEL_0", "LABEL_1"]
        assert set(predictor.input_names) == set(INPUTS)
        batch = predictor.encode(TEXTS)
        got = predictor.predict_encoded(batch)
        session = ort.InferenceSession(str(variant / "model.onnx"), providers=["CPUExecutionProvider"])
        want = session.run(["logits"], {name: batch[name] for name in INPUTS})[0]
        assert got.dtype == np.float32 and got.shape == (len(TEXTS), 2)
        assert np.abs(want).max() > 0.05
        np.testing.assert_allclose(got, want, atol=1e-2, rtol=0)
        # One text alone (batch 1, its own shorter padding) gives the same logits as inside the padded batch.
        np.testing.assert_allclose(predictor.predict_logits(TEXTS[:1]), want[:1], atol=1e-2, rtol=0)
        with pytest.raises(ValueError, match="outside this engine's profile"):
            predictor.predict_encoded(predictor.encode(TEXTS * 3))  # batch 12 > max 8
    finally:
        predictor.close()
