"""Submitting jobs: params are parsed and checked, and inputs resolved, before anything is queued."""

from __future__ import annotations

from typing import Any

from jobs.params import parse_params, to_jsonable
from jobs.registry import get_kind
from storage import catalog, queue, settings
from storage.entities import Job
from storage.errors import InvalidInput


def submit(
    kind_name: str,
    params: dict[str, Any] | None = None,
    *,
    model: int | str | None = None,
    variant: int | str | None = None,
    dataset: int | str | None = None,
    depends_on: int | None = None,
) -> Job:
    kind = get_kind(kind_name)
    parsed = parse_params(kind.params_cls, params)

    variant_entity = catalog.get_variant(variant) if variant is not None else None
    model_entity = catalog.get_model(model) if model is not None else None
    if variant_entity is None and model_entity is not None:
        variant_entity = catalog.root_variant(model_entity.id)
    if kind.needs_variant and variant_entity is None:
        raise InvalidInput(f"job kind {kind.name!r} needs a model or variant (--model or --variant)")
    dataset_entity = catalog.get_dataset(dataset) if dataset is not None else None
    if kind.needs_dataset and dataset_entity is None:
        raise InvalidInput(f"job kind {kind.name!r} needs a dataset (--dataset)")

    return queue.enqueue(
        kind.name,
        to_jsonable(parsed),
        device=kind.device,
        model_id=variant_entity.model_id if variant_entity else None,
        variant_id=variant_entity.id if variant_entity else None,
        dataset_id=dataset_entity.id if dataset_entity else None,
        depends_on_id=depends_on,
        max_attempts=settings.get("WORKBENCH_MAX_ATTEMPTS"),
    )
