"""What a running job sees: its inputs, a work directory, progress, log and cancellation."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from storage import catalog, queue, settings
from storage.entities import Dataset, Job, Model, Variant


class JobCancelled(Exception):
    """Raised by `JobContext.check_cancelled` so a job can stop between steps."""


@dataclass
class JobResult:
    """What a kind returns: a JSON result, and optionally a new variant committed with the job's success."""

    result: dict[str, Any] = field(default_factory=dict)
    new_variant: dict[str, Any] | None = None


class JobContext:
    PROGRESS_MIN_INTERVAL_S = 0.25

    def __init__(self, job: Job):
        self.job = job
        self._last_progress = 0.0

    @cached_property
    def work_dir(self) -> Path:
        return settings.job_dir(self.job.id)

    @cached_property
    def variant(self) -> Variant | None:
        return catalog.get_variant(self.job.variant_id) if self.job.variant_id else None

    @cached_property
    def model(self) -> Model | None:
        if self.job.model_id:
            return catalog.get_model(self.job.model_id)
        return catalog.get_model(self.variant.model_id) if self.variant else None

    @cached_property
    def dataset(self) -> Dataset | None:
        return catalog.get_dataset(self.job.dataset_id) if self.job.dataset_id else None

    def progress(self, fraction: float, message: str) -> None:
        """Log progress (0-1) with a short message; DB writes are thinned so a tight loop cannot flood it."""
        self.log(f"[{fraction:4.0%}] {message}")
        now = time.monotonic()
        if fraction < 1.0 and now - self._last_progress < self.PROGRESS_MIN_INTERVAL_S:
            return
        self._last_progress = now
        queue.set_progress(self.job.id, fraction, message)

    def log(self, line: str) -> None:
        # stdout is piped to the worker, which streams it into the job's log in the DB.
        print(line, file=sys.stdout, flush=True)

    def cancelled(self) -> bool:
        return self.job.id in queue.cancel_requested([self.job.id])

    def check_cancelled(self) -> None:
        if self.cancelled():
            raise JobCancelled(f"job {self.job.id} cancelled")
