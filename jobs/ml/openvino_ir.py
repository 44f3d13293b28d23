"""Making OpenVINO IR: conversion from a PyTorch model or an ONNX file, parity with the source, NNCF int8.

Used by the `export-openvino` kind (fp32 / bf16 variants) and the `quantize` kind's `nncf-int8` method. Every
import of openvino and nncf goes through `jobs.runtimes.openvino_runtime.import_openvino`, which keeps their
usage telemetry off.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from jobs.runtimes.base import Predictor
from jobs.runtimes.openvino_runtime import IR_FILE, core, import_openvino

TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
PARITY_BATCH = 16


def forward_names(model: Any, encoded: dict[str, Any]) -> list[str]:
    """The token inputs both the tokenizer gives and the model's forward takes, in the model's order."""
    accepted = inspect.signature(model.forward).parameters
    return [n for n in TOKEN_INPUTS if n in encoded and n in accepted]


def from_torch(model: Any, sample: dict[str, np.ndarray]) -> Any:
    """An OpenVINO model traced from a PyTorch classifier on `sample` (int64 token arrays), with dynamic batch and
    sequence axes on every input and the logits as its one output."""
    import torch

    ov = import_openvino()
    names = forward_names(model, sample)
    example = {n: torch.from_numpy(sample[n]) for n in names}
    shapes = [(n, ov.PartialShape([-1, -1]), ov.Type.i64) for n in names]
    with torch.inference_mode():
        return ov.convert_model(model, example_input=example, input=shapes)


def from_onnx(path: Path) -> Any:
    """An OpenVINO model read from an ONNX file exported with dynamic batch and sequence axes. A graph exported
    with fixed shapes is refused: reshaping its inputs succeeds, but shapes folded into its constants then fail
    at the first other batch or length."""
    model = import_openvino().convert_model(str(path))
    fixed = {port.get_any_name(): str(port.get_partial_shape()) for port in model.inputs
             if port.get_partial_shape().is_static}
    if fixed:
        shapes = ", ".join(f"{name} {shape}" for name, shape in fixed.items())
        raise ValueError(f"the ONNX graph has fixed input shapes ({shapes}); export it with dynamic_axes=true")
    return model


def save_ir(model: Any, directory: Path) -> Path:
    """openvino_model.xml + .bin with the weights as they are (fp32 stays fp32: compress_to_fp16=False)."""
    target = Path(directory) / IR_FILE
    import_openvino().save_model(model, str(target), compress_to_fp16=False)
    return target


def op_counts(model: Any) -> dict[str, int]:
    """How many operations of each type the graph holds (FakeQuantize counts NNCF's int8 points)."""
    counts: dict[str, int] = {}
    for op in model.get_ops():
        counts[op.get_type_name()] = counts.get(op.get_type_name(), 0) + 1
    return counts


def parity(reference: Predictor, candidate: Predictor, texts: Sequence[str]) -> dict[str, Any]:
    """Logits of `candidate` against `reference` on the same encoded batches (the candidate's encoding)."""
    max_diff, agree = 0.0, 0
    for i in range(0, len(texts), PARITY_BATCH):
        batch = candidate.encode(texts[i : i + PARITY_BATCH])
        ref = reference.predict_encoded({k: v for k, v in batch.items() if k in reference.input_names})
        got = candidate.predict_encoded(batch)
        max_diff = max(max_diff, float(np.abs(ref - got).max()))
        agree += int((ref.argmax(-1) == got.argmax(-1)).sum())
    return {"max_abs_diff": max_diff, "label_agreement": agree / len(texts), "examples": len(texts)}


@dataclass(frozen=True)
class AccuracyControl:
    """NNCF's accuracy-control mode: examples to measure the drop on, their gold label ids, the largest drop of
    `score` (a 0-1 quality metric) allowed, and how predictions are scored."""

    texts: Sequence[str]
    gold: Sequence[int]
    max_drop: float
    score: Callable[[Sequence[int], Sequence[int]], float]  # score(gold, predicted) -> quality


def nncf_int8(source: Predictor, calibration_texts: Sequence[str], control: AccuracyControl | None,
              batch_size: int = 8) -> tuple[Any, dict[str, Any]]:
    """NNCF post-training int8 of the fp32 IR `source` is loaded from, calibrated on `calibration_texts`;
    with `control`, NNCF's accuracy-control mode keeps in fp32 the layers whose int8 costs the most until the drop
    is within `control.max_drop`. Returns the quantized OpenVINO model and what was done."""
    import_openvino()
    import nncf

    model = core().read_model(str(source.model_dir / IR_FILE))
    calibration = [source.encode(calibration_texts[i : i + batch_size])
                   for i in range(0, len(calibration_texts), batch_size)]
    options = {"model_type": nncf.ModelType.TRANSFORMER, "subset_size": len(calibration)}
    facts: dict[str, Any] = {"calibration_examples": len(calibration_texts), "calibration_batches": len(calibration),
                             "model_type": "transformer", "accuracy_control": control is not None}
    if control is None:
        quantized = nncf.quantize(model, nncf.Dataset(calibration), **options)
    else:
        # one example per item: NNCF ranks layers by how each item's score changes when a layer goes back to fp32
        items = [(source.encode([text]), gold) for text, gold in zip(control.texts, control.gold, strict=True)]

        def validate(compiled: Any, data: Any) -> float:
            gold, predicted = [], []
            for inputs, label in data:
                predicted.append(int(np.asarray(compiled(inputs)[0]).argmax(-1)[0]))
                gold.append(label)
            return float(control.score(gold, predicted))

        quantized = nncf.quantize_with_accuracy_control(
            model, nncf.Dataset(calibration), nncf.Dataset(items), validate, max_drop=control.max_drop,
            drop_type=nncf.DropType.ABSOLUTE, **options)
        facts.update(validation_examples=len(items), max_drop=control.max_drop)
    facts["fake_quantize_ops"] = op_counts(quantized).get("FakeQuantize", 0)
    return quantized, facts
