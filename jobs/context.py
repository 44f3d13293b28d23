"""What a running job sees: its inputs, a work directory, progress, log and cancellation."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from storage import catalog, files, queue, settings
from storage.entities import Dataset, Job, Model, Variant
from storage.errors import InvalidInput


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
        """The input variant: the job's own, or (in a pipeline) the one its parent job produced."""
        if self.job.variant_id:
            return catalog.get_variant(self.job.variant_id)
        if self.job.depends_on_id:
            parent = queue.get_job(self.job.depends_on_id)
            if parent.produced_variant_id:
                queue.set_input_variant(self.job.id, parent.produced_variant_id)
                return catalog.get_variant(parent.produced_variant_id)
        return None

    def require_variant(self) -> Variant:
        if self.variant is None:
            raise InvalidInput(f"job {self.job.id} ({self.job.kind}) has no input variant")
        return self.variant

    @cached_property
    def model(self) -> Model | None:
        if self.job.model_id:
            return catalog.get_model(self.job.model_id)
        return catalog.get_model(self.variant.model_id) if self.variant else None

    @cached_property
    def dataset(self) -> Dataset | None:
        """The job's dataset, or else the one its input variant was trained on."""
        if self.job.dataset_id:
            return catalog.get_dataset(self.job.dataset_id)
        if self.variant is not None and self.variant.dataset_id:
            return catalog.get_dataset(self.variant.dataset_id)
        return None

    def require_dataset(self) -> Dataset:
        if self.dataset is None:
            raise InvalidInput(f"{self.job.kind} needs a dataset: pass one, or start from a variant trained on one")
        return self.dataset

    def output_variant(
        self, source_dir: Path, *, runtime: str, precision: str, step: str, info: dict[str, Any] | None = None,
        dataset_id: int | None = None, result: dict[str, Any] | None = None,
    ) -> JobResult:
        """Commit `source_dir` to the artifact store and describe the new variant the job's success creates.

        The recipe is the parent's recipe plus this step (kind and params), so a variant can be re-run on new data.
        """
        parent = self.require_variant()
        entries = files.manifest(source_dir)
        sha = files.manifest_sha256(entries)
        artifact, _ = files.commit_dir(source_dir, "variants", sha)
        steps = list(parent.recipe.get("steps", [])) + [{"kind": self.job.kind, "params": self.job.params, "job_id": self.job.id}]
        variant = dict(
            model_id=parent.model_id,
            parent_id=parent.id,
            name=f"{parent.name.removesuffix(' (original)')} > {step}",
            artifact_dir=str(artifact),
            runtime=runtime,
            precision=precision,
            recipe={"steps": steps},
            files=entries,
            sha256=sha,
            size_bytes=sum(e["size"] for e in entries),
            dataset_id=dataset_id if dataset_id is not None else (self.dataset.id if self.dataset else parent.dataset_id),
            info=info or {},
        )
        return JobResult(result=result or {}, new_variant=variant)

    def progress(self, fraction: float, message: str) -> None:
        """Log progress (0-1) with a short message; DB writes are thinned so a tight loop cannot flood it."""
        self.log(f"[{fraction:4.0%}] {message}")
        now = time.monotonic()
        if fraction < 1.0 and now - self._last_progress < self.PROGRESS_MIN_INTERVAL_S:
            return
        self._last_progress = now
        queue.set_progress(self.job.id, fraction, message)

    def record(self, result: dict[str, Any]) -> None:
        """Keep partial results in the job row while it runs, so they survive a crash and show in the UI."""
        queue.set_partial_result(self.job.id, result)

    def log(self, line: str) -> None:
        # stdout is piped to the worker, which streams it into the job's log in the DB.
        print(line, file=sys.stdout, flush=True)

    def cancelled(self) -> bool:
        return self.job.id in queue.cancel_requested([self.job.id])

    def check_cancelled(self) -> None:
        if self.cancelled():
            raise JobCancelled(f"job {self.job.id} cancelled")
