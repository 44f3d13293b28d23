"""The one Predictor interface that evaluation, benchmarks and the playground all call.

A predictor wraps one loaded variant on one device. `encode` turns texts into the numpy int64 arrays every
runtime takes (input_ids, attention_mask, token_type_ids when the model has them); `predict_encoded` runs the
model on such a batch and returns float32 logits; `predict` does both, in batches, and returns probabilities.
Each runtime implements only `_forward` (and its own loading), so a latency in a chart and an answer in the
playground come from the same code path.
"""

from __future__ import annotations

import json
import time
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


# Architectures whose position ids start after the padding index (RoBERTa's `create_position_ids_from_input_ids`):
# `max_position_embeddings` includes padding_idx + 1 slots no token uses (514 -> 512 tokens for roberta-base).
PADDING_OFFSET_MODEL_TYPES = frozenset({
    "roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "longformer", "mpnet", "data2vec-text",
    "roberta-prelayernorm", "ibert", "xmod", "luke", "markuplm", "esm",
})
UNSET_TOKENIZER_MAX = 1_000_000  # tokenizers without a limit report int(1e30)


def position_limit(config: Any, tokenizer: Any = None) -> int | None:
    """The most tokens (special tokens included) one input may have for this model: its position embeddings
    (less the offset some architectures need) and the tokenizer's `model_max_length`; None if neither says."""
    limits = []
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        if getattr(config, "model_type", "") in PADDING_OFFSET_MODEL_TYPES:
            pad = getattr(config, "pad_token_id", None)
            positions -= (pad if isinstance(pad, int) else 1) + 1
        limits.append(positions)
    tokenizer_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tokenizer_max, int) and 0 < tokenizer_max < UNSET_TOKENIZER_MAX:
        limits.append(tokenizer_max)
    return max(min(limits), 2) if limits else None


def capped_max_length(wanted: int | None, config: Any, tokenizer: Any = None) -> int:
    """`wanted` (else DEFAULT_MAX_LENGTH), never beyond what the model takes (see `position_limit`)."""
    wanted = int(wanted or DEFAULT_MAX_LENGTH)
    limit = position_limit(config, tokenizer)
    return min(wanted, limit) if limit else wanted


def load_tokenizer(model_dir: Path) -> Any:
    """The variant's own tokenizer, from its directory only (no download, no remote code)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir, trust_remote_code=False, local_files_only=True)


def unknown_token_rates(tokenizer: Any, texts: Sequence[str]) -> list[float | None]:
    """Per text, the share of its tokens (special tokens included, before truncation) that are the tokenizer's
    unknown token: words the model cannot see. None for every text when the tokenizer has no unknown token (so a
    rate cannot be told: 0 would be a guess). A byte-level BPE has one that it never emits: its 0 is a true 0."""
    unknown = getattr(tokenizer, "unk_token_id", None)
    if not isinstance(unknown, int):
        return [None] * len(texts)
    ids = tokenizer(list(texts), truncation=False, verbose=False)["input_ids"]
    return [sum(1 for i in row if i == unknown) / len(row) if row else 0.0 for row in ids]


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def timed_probabilities(predictor: Predictor, texts: list[str]) -> tuple[np.ndarray, np.ndarray, float]:
    """Probabilities and the tokens each row used, with the wall time of tokenizing and the forward pass
    (the playground's and the model server's one call; each row padded only to the longest in the batch)."""
    start = time.perf_counter()
    batch = predictor.encode(texts)
    probs = softmax(predictor.predict_encoded(batch))
    elapsed_ms = (time.perf_counter() - start) * 1000
    return probs, batch["attention_mask"].sum(axis=1), elapsed_ms


class Predictor(ABC):
    """A loaded text-classification variant. Subclasses set `runtime` and implement `_forward`."""

    runtime: str = ""

    def __init__(self, model_dir: Path, device: str, labels: list[str], input_names: Sequence[str], max_length: int | None,
                 config: Any = None):
        from transformers import AutoConfig

        self.model_dir = Path(model_dir)
        self.device = device
        self.labels = list(labels)
        self.input_names = tuple(input_names)
        meta = read_variant_meta(self.model_dir)
        self.tokenizer = load_tokenizer(self.model_dir)
        if config is None:
            try:
                config = AutoConfig.from_pretrained(self.model_dir, trust_remote_code=False, local_files_only=True)
            except (OSError, ValueError):
                config = None
        # never longer than the model's positions: a longer input crashes it ("expanded size of the tensor ...")
        self.max_positions = position_limit(config, self.tokenizer)
        self.max_length = capped_max_length(max_length or meta.get("max_length"), config, self.tokenizer)

    def encode(self, texts: Sequence[str], max_length: int | None = None, pad_to_max: bool = False) -> dict[str, np.ndarray]:
        """Tokenize; `pad_to_max` pads every row to `max_length` (fixed shapes for benchmarks). An explicit
        `max_length` beyond the model's positions is refused, not silently shortened (a benchmark cell would lie)."""
        if max_length and self.max_positions and max_length > self.max_positions:
            raise ValueError(f"{max_length} tokens is longer than this model takes ({self.max_positions} positions); "
                             f"use a sequence length of at most {self.max_positions}")
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

    def unknown_token_rates(self, texts: Sequence[str]) -> list[float | None]:
        """Share of each text's tokens that are unknown to the tokenizer (None: it cannot tell); see the function."""
        return unknown_token_rates(self.tokenizer, texts)

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
