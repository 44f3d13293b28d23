"""Steps a trial needs that a job outside this search made already: a search run again on the same model and data
(another drop, seed, space or speed-up goal; a budget sizes its distillations) starts its trials from those variants.

A step is the same when its job had the same kind, the same params (after defaults: what `check_pipeline` makes of
them), the same input variant and the same dataset, and succeeded with a variant still in the catalog; its result is
that variant. Its pipeline must also have evaluated what it made as this search does (split, examples), since the
search reads that evaluation to rule a trial out without running it, so a job that ran in no pipeline (a single job
from the Optimize tab) is not taken. Where a job ran (`ran_on`, written by the Ray executor) is not part of what it
made; a step whose output is bound to the machine it ran on is never taken from elsewhere (`machine_bound`).

The kinds train with fixed seeds, so running the step again makes the same model again, at a price: on the 2-core
AMD EPYC here the half-depth distillation of three 60-minute searches (jobs 162, 270 and 319 of one data directory)
made byte-identical weights (the same sha256) in about 16 minutes each time. Run again with this module, the third
of those searches took 3.0 minutes instead of 22.9 for the same three trials and the same pick. As with a build
cache, a variant made by an older version of a kind's code is reused as it is.
"""

from __future__ import annotations

import json
from typing import Any

from jobs.kinds.quantize import ONNX_METHODS
from jobs.runner.params import RAN_ON
from storage import queue


def machine_bound(kind: str, params: dict[str, Any]) -> bool:
    """A step whose output depends on the machine that ran it, which may not be this one (a Ray cluster's nodes
    differ): a TensorRT engine is built for its GPU; ONNX Runtime quantization's `reduce_range=auto` resolves on the
    CPU at hand (other methods take no reduce_range); ONNX Runtime's 'all' level may save a graph tied to that CPU's
    kernels."""
    return kind == "build-tensorrt" \
        or (kind == "quantize" and params.get("method") in ONNX_METHODS and params.get("reduce_range") == "auto") \
        or (kind == "export-onnx" and params.get("optimization") == "all")


def _what_it_makes(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if k != RAN_ON}


def scored_alike(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    """Two evaluations' params give the same accuracy: all but the tolerance that only flags a drop are equal."""
    def scoring(params: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if params is None else {k: v for k, v in params.items() if k != "tolerance_points"}
    return scoring(a) == scoring(b)


def made_elsewhere(start_variant_id: int, steps: list[tuple[str, dict[str, Any]]], dataset_id: int | None,
                   evaluation: dict[str, Any], own_pipelines: str) -> dict[str, Any] | None:
    """The longest prefix of `steps` ((kind, checked params), from `start_variant_id`) made by jobs whose pipelines do
    not start with `own_pipelines` and evaluate what they make as `evaluation` does, as {"trial": None, "steps",
    "variant_id", "job", "pipeline"}: the last of those jobs and its pipeline (where that variant was evaluated),
    else None."""
    found, variant_id = None, start_variant_id
    for length, (kind, params) in enumerate(steps, start=1):
        if machine_bound(kind, params):
            break
        stored = json.loads(json.dumps(params))  # as the job's params read back (tuples are lists there)
        job = next((j for j in queue.made_from(kind, variant_id, dataset_id)
                    if _what_it_makes(j.params) == stored and scored_alike(j.evaluation, evaluation)
                    and j.pipeline and not j.pipeline.startswith(own_pipelines)), None)
        if job is None:
            break
        variant_id = job.produced_variant_id
        found = {"trial": None, "steps": length, "variant_id": variant_id, "job": job.id, "pipeline": job.pipeline}
    return found
