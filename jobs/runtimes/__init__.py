"""Runtimes: how a variant is loaded and called. `load_predictor` picks the class for a variant's runtime."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jobs.runtimes.base import Predictor

RUNTIMES = ("pytorch", "onnxruntime", "tensorrt")


def load_predictor(variant: Any, device: str = "cpu", max_length: int | None = None, threads: int | None = None) -> Predictor:
    """A Predictor for a variant entity (uses `.runtime` and `.artifact_dir`) on `device` (cpu or cuda).

    `threads` caps CPU threads (torch intra-op threads for the whole process; the ONNX Runtime session's own).
    """
    model_dir = Path(variant.artifact_dir)
    if variant.runtime == "pytorch":
        from jobs.runtimes.torch_runtime import TorchPredictor

        if threads:
            import torch

            torch.set_num_threads(threads)
        return TorchPredictor(model_dir, device, max_length)
    if variant.runtime == "onnxruntime":
        from jobs.runtimes.ort_runtime import OrtPredictor

        return OrtPredictor(model_dir, device, max_length, threads=threads)
    if variant.runtime == "tensorrt":
        from jobs.runtimes.tensorrt_runtime import TensorRTPredictor

        return TensorRTPredictor(model_dir, "cuda" if device == "cpu" else device, max_length)
    raise ValueError(f"unknown runtime {variant.runtime!r}; known: {', '.join(RUNTIMES)}")
