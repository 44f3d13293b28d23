"""Real traffic: batches drawn from the test split, padded to their longest text, optionally bucketed by length.

The grid pads every text to a fixed length, which says little about a server whose requests are mostly short:
it pays for the longest text in each batch, not for 128 tokens. Here a "request" is one text; its latency is the
forward pass of the batch it was served in (tokenizing and queueing excluded, as in a grid cell, so the figures
of the two modes measure the same code path). Every batch is full (the sample is rounded up to whole batches), so
each timed call stands for `batch_size` requests of equal weight and the per-call percentiles are the per-request
ones.

A real-traffic cell is stored as a measurement row with `seq_len` REAL_TRAFFIC_SEQ (0: no fixed length) and its
length distribution in the row's `traffic` column (see `distribution`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from storage.errors import InvalidInput

REAL_TRAFFIC_SEQ = 0  # a measurement's seq_len on real traffic: the grid's lengths are 2..512, so never confused
SOURCE = "test split"


@dataclass(frozen=True)
class TrafficSpec:
    """What the job sends each variant's process for one real-traffic cell (the texts are in its texts file)."""

    texts: int  # how many of the sampled texts (a prefix of the job's sample) this cell serves
    bucketing: bool
    max_length: int  # 0: the variant's own max length (what its server truncates at)
    seed: int


def texts_for(requested: int, batch_size: int) -> int:
    """`requested` rounded up to whole batches, so every batch is full and every request weighs the same."""
    return math.ceil(requested / batch_size) * batch_size


def sample_texts(split: Sequence[str], count: int, seed: int) -> list[str]:
    """`count` texts drawn uniformly at random (seeded) from the split, in arrival order. Without replacement
    while the split lasts, then another shuffled pass (real traffic repeats itself too). A prefix of a longer
    sample is the shorter sample, so cells of different batch sizes serve nearly the same texts."""
    if not split:
        raise InvalidInput("the test split has no texts to draw real traffic from")
    rng = np.random.default_rng(seed)
    order: list[int] = []
    while len(order) < count:
        order += rng.permutation(len(split)).tolist()
    return [split[i] for i in order[:count]]


def form_batches(lengths: Sequence[int], batch_size: int, bucketing: bool) -> list[list[int]]:
    """Indices of the texts in each batch. Without bucketing, batches follow arrival order. With bucketing, the
    texts are sorted by token length (stably) and cut into batches, so each batch holds neighbours in length, the
    way a server that groups its queue by length pads little (Hugging Face's `group_by_length` does the same)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i]) if bucketing else list(range(len(lengths)))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def histogram(lengths: Sequence[int], max_length: int) -> dict[str, list[int]]:
    """Counts of texts per token-length bin: [edges[i], edges[i+1]) with the last bin closed; power-of-two edges
    (8, 16, 32 ...) up to `max_length`, the bins a reader (and a TensorRT profile) thinks in."""
    edges = sorted({1, *[2**k for k in range(3, 10) if 2**k < max_length], max_length})
    counts, _ = np.histogram(np.asarray(lengths), bins=edges)
    return {"edges": [int(e) for e in edges], "counts": [int(c) for c in counts]}


def distribution(lengths: Sequence[int], untruncated: Sequence[int], batch_widths: Sequence[int],
                 batch_sizes: Sequence[int], spec: TrafficSpec, max_length: int) -> dict[str, Any]:
    """The `traffic` record of a real-traffic cell.

    `lengths`: tokens each text has as the model sees it (special tokens included, after truncation at
    `max_length`); `untruncated`: before it; `batch_widths`: the padded width of each batch; `batch_sizes`: its
    rows. `padding_waste` is the padding the batches computed on per real token: (padded - real) / real, so 0 means
    no wasted work and 0.5 means half as much again as the texts needed."""
    a = np.asarray(lengths, dtype=np.float64)
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    real = int(a.sum())
    padded = int(sum(w * n for w, n in zip(batch_widths, batch_sizes, strict=True)))
    return {
        "source": SOURCE, **asdict(spec), "max_length": int(max_length), "batches": len(batch_widths),
        "token_lengths": {"p50": float(p50), "p90": float(p90), "p99": float(p99), "max": int(a.max()),
                          "min": int(a.min()), "mean": float(a.mean())},
        "histogram": histogram(lengths, max_length),
        "truncated": int(sum(u > max_length for u in untruncated)),
        "real_tokens": real, "padded_tokens": padded,
        "padding_waste": (padded - real) / real if real else 0.0,
    }


def describe(traffic: dict[str, Any] | None) -> str | None:
    """What makes two real-traffic cells' inputs the same (None for a grid cell): only cells with equal
    descriptions may be compared. The length quantiles are left out: two variants with different tokenizers
    serving the same texts are still serving the same traffic."""
    if traffic is None:
        return None
    return (f"real traffic ({traffic.get('source', SOURCE)}): {traffic.get('texts')} texts, seed {traffic.get('seed')}, "
            f"max {traffic.get('max_length') or 'model'} tokens, bucketing {'on' if traffic.get('bucketing') else 'off'}")


def summary(traffic: dict[str, Any] | None) -> str | None:
    """One line for tables: 'p50 14 / p90 30 / max 61 tokens over 64 texts, padding waste 35%, bucketing off'."""
    if traffic is None:
        return None
    q = traffic.get("token_lengths", {})
    return (f"p50 {q.get('p50', 0):g} / p90 {q.get('p90', 0):g} / max {q.get('max')} tokens over {traffic.get('texts')} "
            f"texts, padding waste {traffic.get('padding_waste', 0):.0%}, "
            f"bucketing {'on' if traffic.get('bucketing') else 'off'}")
