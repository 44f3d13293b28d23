"""Latency statistics and throughput of one benchmark cell."""

from __future__ import annotations

from typing import Any

import numpy as np


def summarize(samples_ms: list[float], batch_size: int, seq_len: int) -> dict[str, Any]:
    """Percentiles, mean and std in ms; samples/s and tokens/s from the total time of all timed calls."""
    if not samples_ms:
        raise ValueError("no samples to summarize")
    a = np.asarray(samples_ms, dtype=np.float64)
    p50, p90, p95, p99 = np.percentile(a, [50, 90, 95, 99])
    throughput = batch_size * len(a) / (a.sum() / 1000.0)
    return {
        "samples": int(len(a)),
        "p50_ms": float(p50), "p90_ms": float(p90), "p95_ms": float(p95), "p99_ms": float(p99),
        "mean_ms": float(a.mean()), "std_ms": float(a.std(ddof=1)) if len(a) > 1 else 0.0,
        "throughput_sps": float(throughput), "tokens_per_s": float(throughput * seq_len),
    }
