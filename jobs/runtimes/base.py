"""The one Predictor interface that evaluation, benchmarks and the playground all call.

A predictor wraps one loaded variant on one device. `encode` turns texts into the numpy int64 arrays every
runtime takes (input_ids, attention_mask, token_type_ids when the model has them); `predict_encoded` runs the
model on such a batch and returns float32 logits; `predict` does both, in batches, and returns probabilities.
Each runtime implements only `_forward` (and its own loading), so a latency in a chart and an answer in the
playground come from the same code path.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

DEFAULT_MAX_LENGTH = 128
VARIANT_META = "workbench.json"  # per-variant facts the runtimes need (max length, quantization applied on load)


def read_variant_meta(model_dir: Path) -> dict[str, Any]:
    path = Path(model_dir) / VARIANT_META
    return json.loads(path.read_text()) if path.exists() else {}


def write_variant_meta(model_dir: Path, meta: dict[str, Any]) -> None:
    (Path(model_dir) / VARIANT_META).write_text(json.dumps(meta, indent=2, sort_keys=True))


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


class Predictor(ABC):
    """A loaded text-classification variant. Subclasses set `runtime` and implement `_forward`."""

    runtime: str = ""

    def __init__(self, model_dir: Path, device: str, labels: list[str], input_names: Sequence[str], max_length: int | None):
        from transformers import AutoTokenizer

        self.model_dir = Path(model_dir)
        self.device = device
        self.labels = list(labels)
        self.input_names = tuple(input_names)
        meta = read_variant_meta(self.model_dir)
        self.max_length = int(max_length or meta.get("max_length") or DEFAULT_MAX_LENGTH)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir, trust_remote_code=False, local_files_only=True)

    def encode(self, texts: Sequence[str], max_length: int | None = None, pad_to_max: bool = False) -> dict[str, np.ndarray]:
        """Tokenize; `pad_to_max` pads every row to `max_length` (fixed shapes for benchmarks)."""
        encoded = self.tokenizer(
            list(texts),
            padding="max_length" if pad_to_max else True,
            truncation=True,
            max_length=max_length or self.max_length,
            return_tensors="np",
        )
        return {name: encoded[name].astype(np.int64) for name in self.input_names if name in encoded}

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """Tokens each text has before truncation (special tokens included), to show what `max_length` cuts."""
        ids = self.tokenizer(list(texts), truncation=False, verbose=False)["input_ids"]
        return [len(row) for row in ids]

    def predict_encoded(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """Logits (float32, [batch, num_labels]) for one encoded batch."""
        return np.asarray(self._forward(batch), dtype=np.float32)

    def predict_logits(self, texts: Sequence[str], batch_size: int = 32,
                       before_batch: Callable[[int, int], None] | None = None) -> np.ndarray:
        """Logits for many texts in batches; `before_batch(done, total)` can report progress or raise to stop."""
        out = []
        for i in range(0, len(texts), batch_size):
            if before_batch is not None:
                before_batch(i, len(texts))
            out.append(self.predict_encoded(self.encode(texts[i : i + batch_size])))
        return np.concatenate(out) if out else np.zeros((0, len(self.labels)), dtype=np.float32)

    def predict(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Label probabilities, [len(texts), num_labels]."""
        return softmax(self.predict_logits(texts, batch_size))

    @abstractmethod
    def _forward(self, batch: dict[str, np.ndarray]) -> Any: ...

    def close(self) -> None:  # noqa: B027 - optional hook; most runtimes free everything on garbage collection
        """Release what the runtime holds (sessions, GPU memory)."""
