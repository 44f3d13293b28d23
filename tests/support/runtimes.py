"""A runtime used only by tests (loaded through WORKBENCH_PLUGINS): it loads nothing and records how it was asked."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jobs.runtimes import Predictor, register_runtime


class EchoPredictor(Predictor):
    """Answers the first label for every text; keeps the arguments it was loaded with for the test to read."""

    runtime = "test-echo"

    def __init__(self, model_dir: Path, device: str, max_length: int | None, threads: int | None):
        # no tokenizer or config to read: Predictor.__init__ is skipped on purpose
        self.model_dir, self.device, self.max_length, self.threads = model_dir, device, max_length, threads
        self.labels = ["first", "second"]

    def _forward(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        rows = len(next(iter(batch.values())))
        return np.tile(np.array([[1.0, 0.0]], dtype=np.float32), (rows, 1))


@register_runtime("test-echo", display_name="Echo (tests)", files=("echo.txt",), devices=("cuda",),
                  not_exportable="it exists only in tests")
def load_echo_predictor(model_dir: Path, device: str, max_length: int | None, threads: int | None) -> EchoPredictor:
    return EchoPredictor(model_dir, device, max_length, threads)
