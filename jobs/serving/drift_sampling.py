"""Sampling a model server's requests for drift monitoring, written to SQLite without ever making a request wait.

`DriftSampleWriter` is the sink `create_app(on_predictions=...)` calls with each answered request's texts and
results. In the event loop it only draws which texts are sampled (`sample_rate`) and appends them to a bounded
buffer; a background thread takes the buffer every `flush_s`, works out each text's unknown-token rate with a
tokenizer of its own (a fast tokenizer must not be reconfigured by one thread while the model's thread encodes
with it) and inserts the rows in one transaction. When the buffer is full, or a write fails, rows are dropped and
counted (`workbench_serving_drift_samples_dropped_total{reason}`), never silently and never by blocking.
"""

from __future__ import annotations

import logging
import random
import threading
from collections import deque
from datetime import datetime, timezone
from typing import Any, Callable, Sequence

from prometheus_client import CollectorRegistry, Counter

log = logging.getLogger("jobs.serving.drift")

DEFAULT_SAMPLE_RATE = 0.1
DEFAULT_BUFFER = 10_000  # rows waiting for the writer; about 1 MB at most
DEFAULT_FLUSH_S = 1.0
PREFIX = "workbench_serving_drift_samples"
DROP_REASONS = ("buffer_full", "write_failed", "unreadable")

Rows = list[dict[str, Any]]


def check_sample_rate(rate: Any) -> float:
    ok = isinstance(rate, (int, float)) and not isinstance(rate, bool) and 0 <= rate <= 1
    if not ok:
        raise ValueError(f"--sample-rate is a fraction of texts from 0 (off) to 1 (all), not {rate!r}")
    return float(rate)


def _store_rows(rows: Rows) -> None:
    from storage import drift

    drift.add_samples(rows)


class DriftSampleWriter:
    """The sink of sampled predictions. `model_dirs`: variant id -> the directory its tokenizer is read from
    (a canary deployment serves two variants); a variant not listed gets no unknown-token rate (None)."""

    def __init__(self, deployment_id: int, sample_rate: float, model_dirs: dict[int, str], *,
                 max_buffer: int = DEFAULT_BUFFER, flush_s: float = DEFAULT_FLUSH_S,
                 store: Callable[[Rows], None] = _store_rows, seed: int | None = None):
        self.deployment_id = deployment_id
        self.sample_rate = check_sample_rate(sample_rate)
        if max_buffer < 1:
            raise ValueError(f"the drift sample buffer holds at least 1 row, not {max_buffer}")
        self.model_dirs = dict(model_dirs)
        self.max_buffer = max_buffer
        self.flush_s = flush_s
        self.store = store
        self._random = random.Random(seed)
        self._buffer: deque[dict[str, Any]] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._tokenizers: dict[int, Any] = {}
        self._thread: threading.Thread | None = None
        self.registry = CollectorRegistry(auto_describe=True)
        self.sampled = Counter(f"{PREFIX}_sampled", "Texts sampled for drift monitoring.", registry=self.registry)
        self.written = Counter(f"{PREFIX}_written", "Drift samples written to the database.", registry=self.registry)
        self.dropped = Counter(f"{PREFIX}_dropped", "Drift samples dropped, by reason (buffer_full: the writer "
                               "fell behind; write_failed: the database refused them; unreadable: a result "
                               "without label, confidence or tokens).", ["reason"], registry=self.registry)
        for reason in DROP_REASONS:
            self.dropped.labels(reason=reason)

    # ---- the request side: never blocks ------------------------------------------------------------------------

    def __call__(self, texts: Sequence[str], results: Sequence[dict[str, Any] | None], *, variant_id: int,
                 arm: str | None = None) -> None:
        if self.sample_rate <= 0:
            return
        try:
            self._sample(texts, results, variant_id, arm)
        except Exception:  # a result without label, confidence or tokens: the request is answered all the same
            log.exception("could not sample a request for drift monitoring")
            self.dropped.labels(reason="unreadable").inc(len(texts))

    def _sample(self, texts: Sequence[str], results: Sequence[dict[str, Any] | None], variant_id: int,
                arm: str | None) -> None:
        now = datetime.now(timezone.utc).replace(tzinfo=None)  # naive UTC, as every stored time
        picked = [(text, result) for text, result in zip(texts, results, strict=True)
                  if result is not None and (self.sample_rate >= 1 or self._random.random() < self.sample_rate)]
        if not picked:
            return
        self.sampled.inc(len(picked))
        rows = [{"text": text, "deployment_id": self.deployment_id, "variant_id": variant_id, "arm": arm,
                 "sampled_at": now, "tokens": int(result["tokens"]), "label": str(result["label"]),
                 "confidence": float(result["confidence"])} for text, result in picked]
        dropped = 0
        with self._lock:
            for row in rows:
                if len(self._buffer) >= self.max_buffer:
                    dropped += 1
                    continue
                self._buffer.append(row)
        if dropped:
            self.dropped.labels(reason="buffer_full").inc(dropped)

    # ---- the writer thread -------------------------------------------------------------------------------------

    def start(self) -> DriftSampleWriter:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="drift-sample-writer", daemon=True)
            self._thread.start()
        return self

    def close(self, timeout_s: float = 10.0) -> None:
        """Write what is buffered and stop the thread."""
        self._closing.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        else:
            self.flush()

    def _run(self) -> None:
        while not self._closing.is_set():
            self._wake.wait(self.flush_s)
            self._wake.clear()
            self.flush()
        self.flush()

    def flush(self) -> int:
        """Write every buffered row now (the writer thread calls this); returns how many were written."""
        with self._lock:
            rows = list(self._buffer)
            self._buffer.clear()
        if not rows:
            return 0
        try:
            self._add_unknown_rates(rows)
            for row in rows:
                del row["text"]  # texts are users' data: only what drift needs is kept
            self.store(rows)
        except Exception:  # a locked or full database: counted, logged, and the server goes on answering
            log.exception("could not write %d drift samples", len(rows))
            self.dropped.labels(reason="write_failed").inc(len(rows))
            return 0
        self.written.inc(len(rows))
        return len(rows)

    def _add_unknown_rates(self, rows: Rows) -> None:
        by_variant: dict[int, list[dict[str, Any]]] = {}
        for row in rows:
            by_variant.setdefault(row["variant_id"], []).append(row)
        for variant_id, group in by_variant.items():
            tokenizer = self._tokenizer(variant_id)
            rates = ([None] * len(group) if tokenizer is None
                     else self._rates(tokenizer, [row["text"] for row in group]))
            for row, rate in zip(group, rates, strict=True):
                row["unknown_token_rate"] = rate

    @staticmethod
    def _rates(tokenizer: Any, texts: list[str]) -> list[float | None]:
        from jobs.runtimes.base import unknown_token_rates

        return unknown_token_rates(tokenizer, texts)

    def _tokenizer(self, variant_id: int) -> Any:
        if variant_id not in self._tokenizers:
            directory = self.model_dirs.get(variant_id)
            tokenizer = None
            if directory is not None:
                from jobs.runtimes.base import load_tokenizer

                try:
                    tokenizer = load_tokenizer(directory)
                except Exception:  # the rate is then unknown (None), not 0
                    log.exception("no tokenizer for variant %s: its drift samples carry no unknown-token rate",
                                  variant_id)
            self._tokenizers[variant_id] = tokenizer
        return self._tokenizers[variant_id]

    @property
    def buffered(self) -> int:
        with self._lock:
            return len(self._buffer)
