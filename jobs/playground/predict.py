"""The interactive predictor: validated text in, label probabilities, latency and token counts out.

Every call goes through a cached Predictor (see `predictor_cache`), the same code path evaluation and benchmarks
use. Inputs are checked before any model runs: empty text, text over `WORKBENCH_MAX_TEXT_CHARS`, more than
`WORKBENCH_MAX_BATCH_LINES` texts, and uploads that are too large or not UTF-8 are refused with one clear line.
Text longer than the model's `max_length` in tokens is truncated and the result says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from jobs.playground import csv_export
from jobs.playground.inputs import check_batch, check_text
from jobs.playground.predictor_cache import CACHE, PredictorCache
from jobs.runtimes.base import timed_probabilities
from storage.errors import InvalidInput

TEXT_COLUMNS = ("text", "sentence", "content", "review", "tweet")  # tried in this order for an uploaded CSV


@dataclass(frozen=True)
class Prediction:
    text: str
    label: str
    confidence: float
    probabilities: dict[str, float]  # label -> probability, in the model's label order
    tokens: int  # tokens in the text, special tokens included, before truncation
    used_tokens: int  # tokens the model read
    latency_ms: float  # tokenization and forward pass of the call (for a batch: the batch's share per text)

    @property
    def truncated(self) -> bool:
        return self.tokens > self.used_tokens

    @property
    def truncation_note(self) -> str:
        if not self.truncated:
            return ""
        return f"truncated: the model read the first {self.used_tokens} of {self.tokens} tokens"


@dataclass(frozen=True)
class BatchPrediction:
    variant_id: int
    labels: list[str]
    predictions: list[Prediction]
    total_ms: float

    def frame(self) -> pd.DataFrame:
        """One row per text: the label, its confidence, every probability, tokens and whether it was truncated."""
        rows = []
        for p in self.predictions:
            row = {"text": p.text, "label": p.label, "confidence": round(p.confidence, 4)}
            row.update({f"p_{name}": round(prob, 4) for name, prob in p.probabilities.items()})
            row.update({"tokens": p.tokens, "truncated": p.truncated})
            rows.append(row)
        return pd.DataFrame(rows)

    def write_csv(self, directory: Path) -> Path:
        path = Path(directory) / f"predictions-variant-{self.variant_id}.csv"
        return csv_export.write_frame(self.frame(), path)  # formula-looking cells neutralised (CSV injection)


# ---- input checks (check_text, check_batch: in `inputs`, shared with the model server) --------------


def split_lines(pasted: str | None) -> list[str]:
    """One text per non-blank line."""
    return check_batch([line for line in (pasted or "").splitlines() if line.strip()])


def read_texts_file(path: str | Path, column: str | None = None) -> list[str]:
    """Texts from an uploaded CSV / TSV / JSONL / Parquet: the named column, a usual text column, or the only one."""
    from jobs.intake.datasets import read_table, refuse_bytes

    path = Path(path)
    frame = read_table(path, limit_setting="WORKBENCH_MAX_PREDICT_UPLOAD_MB")
    columns = [str(c) for c in frame.columns]
    if column:
        if column not in columns:
            raise InvalidInput(f"{path.name} has no column {column!r}; its columns: {', '.join(columns)}")
        chosen = column
    else:
        usual = [c for c in TEXT_COLUMNS if c in [x.lower() for x in columns]]
        if usual:
            chosen = next(c for c in columns if c.lower() == usual[0])
        elif len(columns) == 1:
            chosen = columns[0]
        else:
            raise InvalidInput(f"{path.name}: which column is the text? none is called {' / '.join(TEXT_COLUMNS)}; "
                               f"its columns: {', '.join(columns)}")
    refuse_bytes(frame[chosen], "text", chosen)  # a Parquet column that is not UTF-8 text
    texts = [str(t) for t in frame[chosen].tolist() if str(t).strip() and str(t) != "nan"]
    return check_batch(texts)


# ---- prediction ---------------------------------------------------------------------------------------------


def _prediction(text: str, labels: list[str], probs: np.ndarray, tokens: int, used: int, ms: float) -> Prediction:
    best = int(probs.argmax())
    return Prediction(
        text=text, label=labels[best], confidence=float(probs[best]),
        probabilities={name: float(p) for name, p in zip(labels, probs, strict=True)},
        tokens=int(tokens), used_tokens=int(used), latency_ms=ms,
    )


def predict_text(variant_id: int | str, text: str, device: str = "cpu", cache: PredictorCache = CACHE) -> Prediction:
    """One text through one variant."""
    text = check_text(text)
    with cache.use(int(variant_id), device) as predictor:
        probs, used, ms = timed_probabilities(predictor, [text])
        tokens = predictor.token_counts([text])[0]
        return _prediction(text, predictor.labels, probs[0], tokens, used[0], ms)


def predict_texts(variant_id: int | str, texts: Sequence[str], batch_size: int = 32, device: str = "cpu",
                  progress: Callable[[int, int], None] | None = None, cache: PredictorCache = CACHE) -> BatchPrediction:
    """Many texts in batches; `progress(done, total)` is called before each batch."""
    if isinstance(texts, (str, bytes)) or not isinstance(texts, Sequence):
        raise InvalidInput(f"texts must be a list of strings, not {type(texts).__name__}")
    texts = check_batch(list(texts))
    out: list[Prediction] = []
    total_ms = 0.0
    for i in range(0, len(texts), batch_size):
        if progress is not None:
            progress(i, len(texts))
        chunk = texts[i : i + batch_size]
        # The lock is taken per batch, so one user's large upload does not hold the model for everyone else.
        with cache.use(int(variant_id), device) as predictor:
            probs, used, ms = timed_probabilities(predictor, chunk)
            tokens = predictor.token_counts(chunk)
            labels = predictor.labels
        total_ms += ms
        out.extend(_prediction(t, labels, p, n, u, ms / len(chunk)) for t, p, n, u in zip(chunk, probs, tokens, used, strict=True))
    if progress is not None:
        progress(len(texts), len(texts))
    return BatchPrediction(int(variant_id), labels, out, total_ms)
