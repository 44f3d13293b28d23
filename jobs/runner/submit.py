"""Submitting jobs and pipelines: params parsed and checked, inputs resolved, before anything is queued."""

from __future__ import annotations

import uuid
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from jobs.runner.params import parse_params, runner_params, to_jsonable
from jobs.runner.registry import JobKind, get_kind, new_variant_follow_up
from storage import catalog, queue, settings
from storage.db import session_scope
from storage.entities import Job, Variant
from storage.errors import InvalidInput


@dataclass(frozen=True)
class Step:
    kind: str
    params: dict[str, Any]


def check_evaluation_params(evaluation: dict[str, Any] | None) -> dict[str, Any] | None:
    """The params of the job that follows each variant a job yields (its evaluation), parsed and checked."""
    if evaluation is None:
        return None
    follow_up = new_variant_follow_up()
    if follow_up is None:
        raise InvalidInput("no job kind follows a new variant, so there is nothing to take these evaluation params")
    return to_jsonable(parse_params(get_kind(follow_up.kind).params_cls, evaluation))


def _resolve_inputs(kind: JobKind, model: int | str | None, variant: int | str | None, dataset: int | str | None,
                    from_job: Job | None = None):
    variant_entity = catalog.get_variant(variant) if variant is not None else None
    model_entity = catalog.get_model(model) if model is not None else None
    if variant_entity is None and model_entity is not None:
        variant_entity = catalog.root_variant(model_entity.id)
    if variant_entity is None and from_job is not None:  # the input is what `from_job` will produce
        dataset_entity = catalog.get_dataset(dataset if dataset is not None else from_job.dataset_id) \
            if (dataset is not None or from_job.dataset_id) else None
        return None, dataset_entity
    if kind.needs_variant and variant_entity is None:
        raise InvalidInput(f"job kind {kind.name!r} needs an input: choose a model or a variant", inputs=("model", "variant"))
    dataset_entity = catalog.get_dataset(dataset) if dataset is not None else None
    if dataset_entity is None and variant_entity is not None and variant_entity.dataset_id is not None:
        dataset_entity = catalog.get_dataset(variant_entity.dataset_id)
    if kind.needs_dataset and dataset_entity is None:
        raise InvalidInput(f"job kind {kind.name!r} needs a dataset: choose one", inputs=("dataset",))
    return variant_entity, dataset_entity


def _checked(kind: JobKind, raw: dict[str, Any] | None, input_runtime: str | None) -> tuple[dict[str, Any], str | None]:
    """Parsed params and the runtime the step yields; refuses unavailable kinds and wrong input runtimes."""
    parsed = parse_params(kind.params_cls, raw)
    ok, reason = kind.availability()
    if not ok:
        raise InvalidInput(f"{kind.name}: {reason}")
    if kind.check is not None:
        kind.check(parsed)
    output = input_runtime
    if kind.output_runtime is not None and input_runtime is not None:
        output = kind.output_runtime(parsed, input_runtime)
    # the runner's keys (a hardware class to run on) ride along with the kind's params
    return {**to_jsonable(parsed), **runner_params(raw)}, output


def _device(kind: JobKind, params: dict[str, Any]) -> str:
    """Which workers may claim the job: the kind's device, or for `any` kinds the device their params ask for."""
    if kind.device == "any" and params.get("device") in ("cpu", "cuda"):
        return params["device"]
    return kind.device


def submit(
    kind_name: str,
    params: dict[str, Any] | None = None,
    *,
    model: int | str | None = None,
    variant: int | str | None = None,
    dataset: int | str | None = None,
    depends_on: int | None = None,
    evaluation: dict[str, Any] | None = None,
) -> Job:
    """Queue one job. `evaluation` holds the params of the evaluation queued when it yields a variant.

    With `depends_on` and no model or variant, the job's input is the variant that job will produce.
    """
    kind = get_kind(kind_name)
    parent = queue.get_job(depends_on) if depends_on is not None else None
    variant_entity, dataset_entity = _resolve_inputs(kind, model, variant, dataset, from_job=parent)
    checked, _ = _checked(kind, params, variant_entity.runtime if variant_entity else None)
    return queue.enqueue(
        kind.name,
        checked,
        device=_device(kind, checked),
        model_id=variant_entity.model_id if variant_entity else (parent.model_id if parent else None),
        variant_id=variant_entity.id if variant_entity else None,
        dataset_id=dataset_entity.id if dataset_entity else None,
        depends_on_id=depends_on,
        max_attempts=settings.get("WORKBENCH_MAX_ATTEMPTS"),
        evaluation=check_evaluation_params(evaluation),
    )


def parse_steps(text: str) -> list[Step]:
    """`finetune:mode=full,epochs=1 -> export-onnx -> quantize:method=ort-dynamic-int8` as steps.

    A comma separates parameters and also a list's items: a piece without `=` continues the value before it, so
    `benchmark:batch_sizes=1,16,seq_lens=128` gives batch_sizes "1,16" (read as a list by the kind's params)."""
    steps = []
    for chunk in filter(None, (c.strip() for c in text.split("->"))):
        name, _, rest = chunk.partition(":")
        params: dict[str, Any] = {}
        key = None
        for pair in filter(None, (p.strip() for p in rest.split(","))):
            if "=" not in pair and key is not None:
                params[key] = f"{params[key]},{pair}"
                continue
            key, eq, value = pair.partition("=")
            if not eq:
                raise InvalidInput(f"step {name.strip()!r}: expected key=value, got {pair!r}")
            key = key.strip()
            params[key] = value.strip()
        steps.append(Step(name.strip(), params))
    if not steps:
        raise InvalidInput("a pipeline needs at least one step, e.g. 'finetune -> export-onnx -> quantize'")
    return steps


@dataclass(frozen=True)
class PipelinePlan:
    kinds: list[JobKind]
    params: list[dict[str, Any]]
    runtimes: list[str | None]  # the runtime each step yields
    variant: Variant | None
    dataset: Any


def check_pipeline(
    steps: list[Step], *, model: int | str | None = None, variant: int | str | None = None, dataset: int | str | None = None
) -> PipelinePlan:
    """Everything `submit_pipeline` checks, without queueing: params, availability and the runtime chain."""
    if not steps:
        raise InvalidInput("a pipeline needs at least one step")
    kinds = [get_kind(step.kind) for step in steps]
    for kind in kinds:
        if not kind.needs_variant:
            raise InvalidInput(f"{kind.name} does not take a variant, so it cannot be a pipeline step")
    for number, kind in enumerate(kinds[:-1], start=1):
        if kind.output_runtime is None:  # e.g. a benchmark: the step after it would have no input
            raise InvalidInput(f"step {number} ({kind.name}) yields no variant, so it can only be the last step")
    variant_entity, dataset_entity = _resolve_inputs(kinds[0], model, variant, dataset)
    runtime: str | None = variant_entity.runtime if variant_entity else None
    checked, runtimes = [], []
    for number, (kind, step) in enumerate(zip(kinds, steps, strict=True), start=1):
        try:
            params, runtime = _checked(kind, step.params, runtime)
        except InvalidInput as exc:
            raise InvalidInput(f"step {number} ({kind.name}): {exc}") from None
        if kind.needs_dataset and dataset_entity is None:
            raise InvalidInput(f"step {number} ({kind.name}) needs a dataset: choose one", inputs=("dataset",))
        checked.append(params)
        runtimes.append(runtime)
    return PipelinePlan(kinds, checked, runtimes, variant_entity, dataset_entity)


def submit_pipeline(
    steps: list[Step],
    *,
    model: int | str | None = None,
    variant: int | str | None = None,
    dataset: int | str | None = None,
    evaluation: dict[str, Any] | None = None,
    session: Session | None = None,
    pipeline: str | None = None,
) -> list[Job]:
    """Queue every step at once; each waits for the one before and takes the variant it yields.

    All steps are checked (params, availability, runtime chain) first, then queued in one transaction, so a bad
    step queues nothing. A failed step cancels the steps after it, with the reason. With `session`, the steps are
    queued in the caller's transaction (to queue more jobs with them, all or nothing). `pipeline` names the
    pipeline (a search names its trials so it finds them again after a restart); default: a random tag.
    """
    plan = check_pipeline(steps, model=model, variant=variant, dataset=dataset)
    kinds, checked = plan.kinds, plan.params
    variant_entity, dataset_entity = plan.variant, plan.dataset
    eval_params = check_evaluation_params(evaluation)
    pipeline = pipeline or uuid.uuid4().hex[:12]
    jobs: list[Job] = []
    with nullcontext(session) if session is not None else session_scope() as s:
        for index, (kind, params) in enumerate(zip(kinds, checked, strict=True)):
            jobs.append(queue.enqueue(
                kind.name, params, device=_device(kind, params),
                model_id=variant_entity.model_id if variant_entity else None,
                variant_id=variant_entity.id if index == 0 and variant_entity else None,
                dataset_id=dataset_entity.id if dataset_entity else None,
                depends_on_id=jobs[-1].id if jobs else None,
                max_attempts=settings.get("WORKBENCH_MAX_ATTEMPTS"),
                pipeline=pipeline, evaluation=eval_params, session=s,
            ))
    return jobs


def recipe_steps(variant: Variant) -> list[Step]:
    """The steps that made a variant from its model's original, to re-run them (for example on new data)."""
    return [Step(step["kind"], dict(step.get("params", {}))) for step in variant.recipe.get("steps", [])
            if step.get("kind") != "intake"]


def rerun_recipe(variant: int | str, dataset: int | str | None = None,
                 evaluation: dict[str, Any] | None = None) -> list[Job]:
    source = catalog.get_variant(variant)
    steps = recipe_steps(source)
    if not steps:
        raise InvalidInput(f"variant {source.id} is an original upload; it has no recipe to re-run")
    root = catalog.root_variant(source.model_id)
    return submit_pipeline(steps, variant=root.id, dataset=dataset if dataset is not None else source.dataset_id,
                           evaluation=evaluation)
