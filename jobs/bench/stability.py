"""Measure until stable: warm up, then time calls in windows until consecutive windows agree, or a cap is hit.

A window's median is robust to a stray slow call; the run is stable when the medians of the last `windows`
windows lie within `rel_spread` of each other (relative to their median). Shared, noisy machines make a fixed
sample count either wasteful or untrustworthy; this adapts and says whether it converged.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Callable


@dataclass(frozen=True)
class StopRule:
    warmup: int = 5  # calls not timed (lazy init, caches, allocator)
    window: int = 10  # timed calls per window
    windows: int = 3  # consecutive windows whose medians must agree
    rel_spread: float = 0.05  # (max - min) / median of those window medians
    min_samples: int = 30
    max_samples: int = 2000
    max_seconds: float = 10.0  # wall-clock cap for one cell, warm-up included

    def __post_init__(self) -> None:
        if self.window < 1 or self.windows < 2:
            raise ValueError("window must be >= 1 and windows >= 2 (stability compares consecutive windows)")
        if not 0 < self.rel_spread < 1:
            raise ValueError(f"rel_spread={self.rel_spread} must be between 0 and 1 (e.g. 0.05 for 5%)")
        if self.max_seconds <= 0 or self.min_samples < 1 or self.max_samples < self.min_samples:
            raise ValueError("need max_seconds > 0 and 1 <= min_samples <= max_samples")


@dataclass
class Timing:
    samples_ms: list[float] = field(default_factory=list)
    stable: bool = False
    spread: float | None = None  # the last relative spread of window medians
    seconds: float = 0.0
    stopped_by: str = ""  # "stable", "time cap" or "sample cap"


def window_spread(samples_ms: list[float], window: int, windows: int) -> float | None:
    """Relative spread of the medians of the last `windows` complete windows, or None if there are too few."""
    complete = len(samples_ms) // window
    if complete < windows:
        return None
    medians = [statistics.median(samples_ms[i * window : (i + 1) * window]) for i in range(complete - windows, complete)]
    centre = statistics.median(medians)
    return (max(medians) - min(medians)) / centre if centre > 0 else 0.0


def measure(call: Callable[[], object], rule: StopRule, clock: Callable[[], float] = time.perf_counter) -> Timing:
    """Time `call` under `rule`; `clock` is injectable so the rule can be tested with a synthetic timer."""
    started = clock()
    for _ in range(rule.warmup):
        call()
    timing = Timing()
    while True:
        t0 = clock()
        call()
        timing.samples_ms.append((clock() - t0) * 1000.0)
        n = len(timing.samples_ms)
        if n % rule.window == 0 and n >= rule.min_samples:
            timing.spread = window_spread(timing.samples_ms, rule.window, rule.windows)
            if timing.spread is not None and timing.spread <= rule.rel_spread:
                timing.stable, timing.stopped_by = True, "stable"
                break
        if n >= rule.max_samples:
            timing.stopped_by = "sample cap"
            break
        if clock() - started >= rule.max_seconds:
            timing.stopped_by = "time cap"
            break
    timing.seconds = clock() - started
    return timing
