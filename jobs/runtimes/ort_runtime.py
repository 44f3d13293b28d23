"""ONNX Runtime: a variant in Optimum's layout (config.json + model.onnx + tokenizer files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jobs.runtimes.base import Predictor
from jobs.runtimes.registry import Requirement, register_runtime
from jobs.tasks import text_classification

ONNX_FILE = "model.onnx"


def providers_for(device: str) -> list[str]:
    """Execution providers for a device: cuda uses TensorRT then CUDA when this onnxruntime build has them."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device.startswith("cuda"):
        wanted = [p for p in ("CUDAExecutionProvider",) if p in available]
        if not wanted:
            raise ValueError("device cuda was asked for but this onnxruntime has no CUDA provider (install onnxruntime-gpu)")
        return wanted + ["CPUExecutionProvider"]
    if device == "tensorrt-ep":
        if "TensorrtExecutionProvider" not in available:
            raise ValueError("this onnxruntime has no TensorRT execution provider")
        return ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OrtPredictor(Predictor):
    runtime = "onnxruntime"

    def __init__(self, model_dir: Path, device: str = "cpu", max_length: int | None = None, threads: int | None = None):
        import onnxruntime as ort
        from transformers import AutoConfig

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(Path(model_dir) / ONNX_FILE), options, providers=providers_for(device))
        config = AutoConfig.from_pretrained(model_dir, trust_remote_code=False, local_files_only=True)
        labels = text_classification.labels(config)
        self.output_name = self.session.get_outputs()[0].name
        super().__init__(model_dir, device, labels, [i.name for i in self.session.get_inputs()], max_length, config=config)

    def _forward(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run([self.output_name], batch)[0]

    def close(self) -> None:
        del self.session


@register_runtime(
    # tensorrt-ep: ONNX Runtime's own TensorRT execution provider (see `providers_for`)
    "onnxruntime", display_name="ONNX Runtime", files=(ONNX_FILE,), devices=("cpu", "cuda", "tensorrt-ep"),
    export_requires=(Requirement("onnxruntime", same_as=("onnxruntime-gpu",)),),
)
def load_ort_predictor(model_dir: Path, device: str, max_length: int | None, threads: int | None) -> OrtPredictor:
    return OrtPredictor(model_dir, device, max_length, threads=threads)
