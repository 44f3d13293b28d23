"""Variants as a lineage tree with their latest evaluation: what the Variants tab and `workbench variants` show."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from jobs.tasks import text_classification
from storage import catalog, queue
from storage.entities import Evaluation, Variant
from storage.orm import JobStatus


@dataclass(frozen=True)
class VariantSummary:
    id: int
    model_id: int
    parent_id: int | None
    depth: int
    name: str
    step: str  # the kind of the job that made it
    label: str  # what that step did, e.g. "ort-dynamic-int8" or "finetune-lora"; the model name for an original
    runtime: str
    precision: str
    size_bytes: int
    accuracy: float | None
    macro_f1: float | None
    num_examples: int | None
    parent_accuracy: float | None
    drop_points: float | None
    agreement_with_parent: float | None
    flagged: bool
    evaluation: str  # "done", "queued", "running", "failed", or why there is none
    degenerate: bool = False  # one class for (nearly) all inputs, or no better than the majority class
    degenerate_reason: str | None = None
    accuracy_low: float | None = None  # Wilson 95 % interval
    accuracy_high: float | None = None
    majority_accuracy: float | None = None  # always answering the most common label of the same examples

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _evaluation_state(variant: Variant, latest: Evaluation | None, eval_jobs: dict[int, tuple[JobStatus, str]]) -> str:
    status, message = eval_jobs.get(variant.id, (None, ""))
    if status is not None and not status.finished:
        return status.value
    if latest is not None:
        return "done"
    if status in (JobStatus.FAILED, JobStatus.CANCELLED):
        return f"{status.value}: {message}"
    if variant.dataset_id is None:
        return "not evaluated: no classification head trained on a dataset"
    return "not evaluated"


def variant_tree(model_id: int | None = None) -> list[VariantSummary]:
    """Every variant, depth-first from each original, with its latest evaluation and its flag."""
    variants = catalog.list_variants(model_id)
    latest = catalog.latest_evaluations()
    eval_jobs = queue.latest_by_variant("evaluate")
    children: dict[int | None, list[Variant]] = {}
    ids = {v.id for v in variants}
    for v in variants:
        children.setdefault(v.parent_id if v.parent_id in ids else None, []).append(v)
    out: list[VariantSummary] = []

    def visit(v: Variant, depth: int) -> None:
        ev = latest.get(v.id)
        steps = v.recipe.get("steps", [])
        out.append(VariantSummary(
            id=v.id, model_id=v.model_id, parent_id=v.parent_id, depth=depth, name=v.name,
            step=steps[-1]["kind"] if steps else "", label=v.name.rsplit(" > ", 1)[-1] if depth else v.name, runtime=v.runtime, precision=v.precision, size_bytes=v.size_bytes,
            accuracy=ev.accuracy if ev else None, macro_f1=ev.macro_f1 if ev else None,
            num_examples=ev.num_examples if ev else None, parent_accuracy=ev.parent_accuracy if ev else None,
            drop_points=ev.drop_points if ev else None, agreement_with_parent=ev.agreement_with_parent if ev else None,
            flagged=bool(ev and ev.flagged), evaluation=_evaluation_state(v, ev, eval_jobs),
            degenerate=bool(ev and ev.degenerate), degenerate_reason=ev.degenerate_reason if ev else None,
            accuracy_low=ev.accuracy_low if ev else None, accuracy_high=ev.accuracy_high if ev else None,
            majority_accuracy=ev.majority_accuracy if ev else None,
        ))
        for child in children.get(v.id, []):
            visit(child, depth + 1)

    for root in children.get(None, []):
        visit(root, 0)
    return out


def lineage(variant: Variant) -> list[Variant]:
    """The variant's ancestors from the original upload down to the variant itself."""
    chain = [variant]
    while chain[-1].parent_id is not None:
        chain.append(catalog.get_variant(chain[-1].parent_id))
    return list(reversed(chain))


def training_history(variant: Variant) -> list[dict[str, Any]]:
    return list(variant.info.get("training", {}).get("history", []))


def head_labels(variant: Variant) -> list[str] | None:
    """The labels of the variant's sequence-classification head, read from its config.json; None without a head.

    Every runtime's layout keeps the Hugging Face config (ONNX and TensorRT variants copy their parent's).
    """
    return text_classification.TASK.head_labels(variant.artifact_dir)


def classifies(variant: Variant, labels: list[str]) -> bool:
    """Whether the variant has a classification head for exactly these labels (in any order)."""
    own = head_labels(variant)
    return own is not None and sorted(own) == sorted(labels)
