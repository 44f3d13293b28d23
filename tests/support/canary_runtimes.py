"""A runtime used only by the canary tests (loaded through WORKBENCH_PLUGINS): the real PyTorch predictor of a
variant that fails on every text but the server's warm-up, so a server loads it as a genuinely broken canary."""

from __future__ import annotations

from pathlib import Path

from jobs.runtimes import register_runtime
from jobs.runtimes.torch_runtime import load_torch_predictor

WARM_UP_TEXT = "warm up"  # what jobs.serving.app runs once before it is ready


@register_runtime("test-failing", display_name="Failing (tests)", files=("failing.txt",), devices=("cpu",),
                  not_exportable="it exists only in tests")
def load_failing_predictor(model_dir: Path, device: str, max_length: int | None, threads: int | None):
    predictor = load_torch_predictor(model_dir, device, max_length, threads)
    encode = predictor.encode

    def failing_encode(texts):
        if list(texts) != [WARM_UP_TEXT]:
            raise RuntimeError("this canary fails on purpose (a test runtime)")
        return encode(texts)

    predictor.encode = failing_encode
    return predictor
