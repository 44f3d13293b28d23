"""`evaluate`: accuracy, macro-F1, confusion matrix and agreement with the parent, through the variant's Predictor.

Every job that yields a variant queues one (`queue_evaluation`, declared to the registry as what follows a new
variant), so no variant is shown without its accuracy.
A variant more than `tolerance_points` below its parent on the same examples is flagged, never hidden.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy.orm import Session

from jobs.ml.data import Examples, split_examples
from jobs.ml.metrics import agreement, model_validity
from jobs.runner.context import JobContext, JobResult
from jobs.runner.params import parse_params, to_jsonable
from jobs.runner.registry import follows_new_variant, register
from jobs.runtimes import get_runtime, load_predictor
from jobs.tasks import get_task
from storage import catalog, queue
from storage.entities import Job, Variant
from storage.errors import InvalidInput

EVALUATION_PRIORITY = 1  # short jobs whose figure the user is waiting for run before the next long step


@dataclass(frozen=True)
class EvaluateParams:
    split: Literal["test", "validation"] = field(default="test", metadata={"help": "dataset split to score"})
    max_examples: int = field(default=0, metadata={"help": "score a fixed random sample of this many examples; 0 = the whole split"})
    batch_size: int = field(default=32, metadata={"help": "examples per forward pass"})
    tolerance_points: float = field(default=1.0, metadata={
        "help": "flag the variant when its accuracy is more than this many points below its parent's"})

    def __post_init__(self) -> None:
        if self.max_examples < 0:
            raise ValueError(f"max_examples must be 0 (all) or positive, got {self.max_examples}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.tolerance_points < 0:
            raise ValueError(f"tolerance_points must be 0 or more, got {self.tolerance_points}")


@follows_new_variant("evaluate")
def queue_evaluation(session: Session, producer: Job, variant: Variant) -> Job | None:
    """Queue the evaluation of a variant a job just produced, in the job's final transaction."""
    if variant.dataset_id is None:
        return None  # nothing to score against: a model without a trained head
    params = to_jsonable(parse_params(EvaluateParams, producer.evaluation or {}))
    return queue.enqueue(
        "evaluate", params, device=get_runtime(variant.runtime).default_device,
        model_id=variant.model_id, variant_id=variant.id, dataset_id=variant.dataset_id,
        pipeline=producer.pipeline, priority=EVALUATION_PRIORITY, max_attempts=producer.max_attempts, session=session,
    )


def _predict(variant: Variant, examples: Examples, params: EvaluateParams, device: str, ctx: JobContext,
             span: tuple[float, float], what: str) -> tuple[list[str], list[int]]:
    predictor = load_predictor(variant, device)
    start, end = span

    def before_batch(done: int, total: int) -> None:
        ctx.check_cancelled()
        ctx.progress(start + (end - start) * done / total, f"{what}: {done}/{total}")

    try:
        logits = predictor.predict_logits(examples.texts, params.batch_size, before_batch)
        return predictor.labels, [int(x) for x in logits.argmax(-1)]
    finally:
        predictor.close()


def _parent_predictions(variant: Variant, examples: Examples, labels: list[str], params: EvaluateParams, device: str,
                        ctx: JobContext) -> list[int] | None:
    """The parent's predictions on the same examples: from its stored evaluation, or computed now."""
    if variant.parent_id is None:
        return None
    parent = catalog.get_variant(variant.parent_id)
    dataset = ctx.require_dataset()
    for ev in reversed(catalog.list_evaluations(parent.id)):
        if ev.dataset_id == dataset.id and ev.split == params.split and ev.num_examples == len(examples) and ev.predictions \
                and ev.confusion.get("labels") == labels:
            ctx.log(f"parent variant {parent.id}: using its evaluation {ev.id}")
            return list(ev.predictions)
    try:
        parent_labels, predicted = _predict(parent, examples, params, device, ctx, (0.55, 0.9), f"parent variant {parent.id}")
    except ValueError as exc:  # e.g. the parent has no classification head
        ctx.log(f"no comparison with parent variant {parent.id}: {exc}")
        return None
    if parent_labels != labels:
        ctx.log(f"no comparison with parent variant {parent.id}: its labels differ")
        return None
    return predicted


def tracked_evaluation(job: Job, result: dict[str, Any]) -> dict[str, Any]:
    """The evaluation row as a JSON artifact of the job's MLflow run (without the per-example predictions)."""
    from storage.entities import to_dict

    if not result.get("evaluation_id"):
        return {}
    evaluation = next((e for e in catalog.list_evaluations(job.variant_id) if e.id == result["evaluation_id"]), None)
    if evaluation is None:
        return {}
    return {"artifacts": {"evaluation.json": {k: v for k, v in to_dict(evaluation).items() if k != "predictions"}}}


# A quick trial's evaluation: a stratified sample giving a Wilson interval of about ±5 points, enough to tell a
# model from the label prior.
QUICK_PARAMS = {"max_examples": 300}


@register("evaluate", EvaluateParams, summary="Accuracy, macro-F1, confusion matrix and agreement with the parent",
          needs_dataset=False, automatic=True, tracking=tracked_evaluation, quick_params=QUICK_PARAMS,
          progress_weight=0.5)  # one pass over a test split: short beside the step that made the variant
def run(params: EvaluateParams, ctx: JobContext) -> JobResult:
    variant, dataset = ctx.require_variant(), ctx.require_dataset()
    device = "cuda" if ctx.job.device == "cuda" else "cpu"
    examples = split_examples(dataset, params.split, params.max_examples)
    if not len(examples):
        raise InvalidInput(f"the {params.split} split of dataset {dataset.name!r} is empty")
    ctx.progress(0.02, f"loading variant {variant.id} ({variant.runtime}, {variant.precision})")
    labels, predicted = _predict(variant, examples, params, device, ctx, (0.05, 0.5), "scoring")
    gold = examples.label_ids(labels)
    task = get_task(catalog.get_model(variant.model_id).task)  # what is scored, and how, is the task's business
    scores = task.metrics(gold, predicted, labels)
    parent_predicted = _parent_predictions(variant, examples, labels, params, device, ctx)
    parent_accuracy = agree = None
    if parent_predicted is not None:
        parent_accuracy = task.metrics(gold, parent_predicted, labels)[task.quality_metric]
        agree = agreement(predicted, parent_predicted)
    drop = None if parent_accuracy is None else (parent_accuracy - scores["accuracy"]) * 100
    flagged = drop is not None and drop > params.tolerance_points
    validity = model_validity(scores["confusion"])
    evaluation = dict(
        variant_id=variant.id, dataset_id=dataset.id, job_id=ctx.job.id, split=params.split, num_examples=len(examples),
        accuracy=scores["accuracy"], macro_f1=scores["macro_f1"], confusion=scores["confusion"],
        agreement_with_parent=agree, parent_accuracy=parent_accuracy, tolerance_points=params.tolerance_points,
        flagged=flagged, predictions=predicted, **validity,
    )
    summary: dict[str, Any] = {  # `evaluation_id` is added by the runner once the row is inserted
        "accuracy": scores["accuracy"], "macro_f1": scores["macro_f1"],
        "num_examples": len(examples), "parent_accuracy": parent_accuracy, "agreement_with_parent": agree,
        "drop_points": None if drop is None else round(drop, 2), "flagged": flagged,
        "majority_accuracy": validity["majority_accuracy"], "accuracy_interval": [validity["accuracy_low"],
                                                                                  validity["accuracy_high"]],
        "per_class_recall": validity["per_class_recall"], "degenerate": validity["degenerate"],
        "degenerate_reason": validity["degenerate_reason"],
    }
    line = (f"accuracy {scores['accuracy']:.4f} (95% interval {validity['accuracy_low']:.4f}-{validity['accuracy_high']:.4f}), "
            f"macro-F1 {scores['macro_f1']:.4f} on {len(examples)} {params.split} examples; always answering "
            f"{validity['majority_label']!r} would score {validity['majority_accuracy']:.4f}")
    if parent_accuracy is not None:
        line += f"; parent {parent_accuracy:.4f}, agreement {agree:.4f}"
    if flagged:
        line += f"; FLAGGED: {drop:.2f} points below its parent (tolerance {params.tolerance_points})"
    if validity["degenerate"]:
        line += f"; DEGENERATE: {validity['degenerate_reason']}"
    ctx.log(line)
    message = f"done: DEGENERATE, {validity['degenerate_reason']}" if validity["degenerate"] else "done"
    return JobResult(result=summary, message=message, evaluations=[evaluation])
