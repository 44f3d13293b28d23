"""What a running job sees: its inputs, a work directory, progress, log and cancellation."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from storage import catalog, files, queue, settings, shared_artifacts
from storage.entities import Dataset, Job, Model, Variant
from storage.errors import InvalidInput

LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers")  # BERT-family, GPT-2, T5-style configs


class JobCancelled(Exception):
    """Raised by `JobContext.check_cancelled` so a job can stop between steps."""


@dataclass
class JobResult:
    """What a kind returns: a JSON result and the rows the job made, all committed with the job's success.

    A kind writes no rows while it runs: the runner inserts `new_variant`, `evaluations` and `measurements` in the
    transaction that marks the job succeeded, so a run that loses the finish race (cancelled, or swept as stale and
    re-queued) leaves nothing behind, and a re-run cannot add a second set.
    """

    result: dict[str, Any] = field(default_factory=dict)
    new_variant: dict[str, Any] | None = None  # fields of a `variants` row
    message: str = "done"  # the job's closing message (e.g. a warning that the model it made is degenerate)
    evaluations: list[dict[str, Any]] = field(default_factory=list)  # fields of `evaluations` rows
    measurements: list[dict[str, Any]] = field(default_factory=list)  # fields of `measurements` rows
    load_tests: list[dict[str, Any]] = field(default_factory=list)  # fields of `load_tests` rows


def config_layers(directory: Path) -> int | None:
    """The number of transformer layers a variant's `config.json` declares, if it has one."""
    try:
        config = json.loads((directory / "config.json").read_text())
    except (OSError, ValueError):
        return None
    layers = next((config[k] for k in LAYER_KEYS if isinstance(config.get(k), int)), None)
    return layers if layers and layers > 0 else None


def variant_name(parent_name: str, step: str, *, layers: int | None = None, original_layers: int | None = None,
                 taken: set[str] | frozenset[str] = frozenset()) -> str:
    """A new variant's name: `parent > step`, where the last segment (what lists and charts show) says what the
    variant is and no other variant has the name.

    A model with fewer layers than its original says so: a half-layers student is `distill-3L`, and what is made
    from it carries the count (`onnx-fused-3L`), so it is not mistaken for the same step on the full model. A name
    already taken gets ` (2)`, ` (3)`, ... (a second fine-tune of the same parent, say).
    """
    if layers and original_layers and layers != original_layers:
        if step in ("distill-half-layers", "distill-third-layers"):
            step = f"distill-{layers}L"
        elif not step.endswith(f"-{layers}L"):
            step = f"{step}-{layers}L"
    base = f"{parent_name.removesuffix(' (original)')} > {step}"
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base} ({n})"
    return name


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
        variant_id = self.job.variant_id
        if not variant_id and self.job.depends_on_id:
            variant_id = queue.get_job(self.job.depends_on_id).produced_variant_id
            if variant_id:
                queue.set_input_variant(self.job.id, variant_id)
        if not variant_id:
            return None
        variant = catalog.get_variant(variant_id)
        shared_artifacts.ensure_variant(variant)  # on this node (fetched from a URL root), or a clear failure
        return variant

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
        dataset_id = self.job.dataset_id or (self.variant.dataset_id if self.variant is not None else None)
        if not dataset_id:
            return None
        dataset = catalog.get_dataset(dataset_id)
        shared_artifacts.ensure_dataset(dataset)
        return dataset

    def fetch_inputs(self) -> None:
        """Have the job's input variant and dataset on this node before the kind runs (a node of a cluster may
        lack them: fetched from a URL root, or failed with the reason). A dataset the job only inherits from its
        variant is checked when the kind asks for it, as a kind may not need it."""
        if self.job.variant_id or self.job.depends_on_id:
            _ = self.variant
        if self.job.dataset_id:
            _ = self.dataset

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
        artifact, _ = files.commit_dir(source_dir, "variants", sha, entries)
        steps = list(parent.recipe.get("steps", [])) + [{"kind": self.job.kind, "params": self.job.params, "job_id": self.job.id}]
        variant = dict(
            model_id=parent.model_id,
            parent_id=parent.id,
            name=self._variant_name(parent, step, Path(artifact)),  # source_dir moved into the store
            artifact_dir=shared_artifacts.key("variants", sha),  # found by kind and sha256 on every node
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

    def _variant_name(self, parent: Variant, step: str, artifact_dir: Path) -> str:
        """`parent > step`, its last segment saying what tells the variant apart (see `variant_name`)."""
        root = catalog.root_variant(parent.model_id)
        try:  # its config says how many layers the original has; a node without it names the variant all the same
            shared_artifacts.ensure_variant(root)
        except shared_artifacts.ArtifactUnavailable:
            pass
        return variant_name(parent.name, step, layers=config_layers(artifact_dir),
                            original_layers=config_layers(Path(root.artifact_dir)),
                            taken={v.name for v in catalog.list_variants(parent.model_id)})

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
