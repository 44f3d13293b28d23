"""Cheap trials first: the runtime that gains most found so far, tried on each smaller model found so far.

A search's expensive steps make a smaller model (a distillation takes a fifth to two fifths of a 60-minute budget on
a 2-core CPU); its cheap ones change how that model runs (export, quantize: a minute or two). TPE draws the
dimensions with a dozen trials to learn from, and may never put the best runtime on the student it has already paid
for: on the 2-core AMD EPYC here a 60-minute search made a half-depth student within the drop (1.41x in OpenVINO
int8, 1.53x in PyTorch fp32) and found ONNX Runtime dynamic int8 the fastest on the full model (2.33x), and spent its
last twenty minutes on a pruned student instead of trying the two together.

So once both exist, their combination is enqueued (Optuna's `enqueue_trial`, as the wizard's recipe is) before the
sampler is asked again. Its first steps are the student's trial's, so it reuses that student and costs minutes. This
is a rule for the order of trials, not an optimizer of its own: each combination is a trial measured like any
other, and the sampler learns from it.

A smaller model counts from its own evaluation, not only from a complete trial: every step's variant is evaluated,
and a trial that distils a good student and then prunes it past the drop has still made that student. In the
EPYC run the first half-depth student was within the drop at 21 minutes (+0.05 points), inside a trial the pruning
ended; the first complete trial on it came 25 minutes later.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jobs.search import space as search_space
from jobs.search.outcomes import evaluation_in, making_steps
from jobs.search.status import TrialRow, within_drop
from storage import queue
from storage.entities import Evaluation

SHAPE_DIMS = ("student", "intermediate", "prune", "recovery")  # what makes the model smaller (and costs the time)


def _shaped(params: dict[str, Any]) -> bool:
    return params.get("student", "none") != "none" or params.get("prune", "none") != "none"


def shape_of(params: dict[str, Any]) -> dict[str, str]:
    """The dimensions of a point that make its model (its student and pruning), without those that run it."""
    return {k: v for k, v in params.items() if k in SHAPE_DIMS}


def student_shape(params: dict[str, Any]) -> dict[str, str]:
    """The shape of the student a point distils, before any pruning: its first step's variant."""
    return {**{k: v for k, v in params.items() if k in ("student", "intermediate")}, "prune": "none"}


def students_within(rows: list[TrialRow], hopeless: Callable[[Evaluation], str | None]) -> list[dict[str, str]]:
    """The shapes (`student_shape`) of the students trials distilled as their first step that their own evaluation
    does not rule out (`hopeless(evaluation)` gives why it would, or None), whatever the trial did with them after."""
    shapes: list[dict[str, str]] = []
    for row in rows:
        if row.params.get("student", "none") == "none" or not row.pipeline:
            continue
        if row.reused and row.reused.get("trial") is not None:
            continue  # a student reused within the search counts once, in the trial that made it
        # made outside this search: read where it was made (a student that pipeline reused in turn is not found)
        pipeline = (row.reused or {}).get("pipeline") or row.pipeline
        jobs = queue.pipeline_jobs(pipeline)
        made = making_steps(jobs)
        if not made or made[0].kind != "distill" or made[0].status.value != "succeeded":
            continue
        evaluation = evaluation_in(jobs, made[0].produced_variant_id)
        shape = student_shape(row.params)
        if evaluation is not None and hopeless(evaluation) is None and shape not in shapes:
            shapes.append(shape)
    return shapes


def runtime_gain(row: TrialRow, rows: list[TrialRow]) -> float | None:
    """How many times faster the trial's runtime runs its model than PyTorch fp32 runs the same model: its speed-up
    over the baseline, divided by that of the same model in PyTorch fp32 at full length (1 for the full model: the
    baseline itself); None when that is not measured. A trial's own speed-up mixes its model with its runtime: in
    the EPYC run a half-depth student in PyTorch fp32 measured 3.48x, and taken as "the fastest runtime" it made
    fp32 the runtime to try on other students, while ONNX Runtime int8 ran the full model 2.7x faster than fp32."""
    if not row.speedup:
        return None
    if not _shaped(row.params):
        return row.speedup
    shape = shape_of(row.params)
    same = [r.speedup for r in rows if r.eligible and r.speedup and shape_of(r.params) == shape
            and r.params.get("backend") == "pytorch-fp32" and r.params.get("max_length", "full") == "full"]
    return row.speedup / max(same) if same else None


def next_combination(rows: list[TrialRow], max_drop_points: float, valid: set[tuple], tried: set[tuple],
                     students: list[dict[str, str]] = ()) -> dict[str, str] | None:
    """The runtime dimensions of the within-drop trial whose runtime gains most (`runtime_gain`) on a smaller model,
    when that point is one of the space's (`valid`: their keys, `space.key`) and not tried yet; else None. The
    smaller models: those of the within-drop trials (the fastest first), then `students` (shapes, `student_shape`):
    students distilled within the drop by their own evaluation, in trials that went on to lose more."""
    within = [r for r in within_drop(rows, max_drop_points) if r.speedup]
    if not within:
        return None
    gains = {r.number: gain for r in within if (gain := runtime_gain(r, rows)) is not None}
    if not gains:
        return None
    fastest = max((r for r in within if r.number in gains), key=lambda r: gains[r.number])
    runtime = {k: v for k, v in fastest.params.items() if k not in SHAPE_DIMS}
    shapes = [shape_of(r.params) for r in sorted(within, key=lambda r: -(r.speedup or 0.0)) if _shaped(r.params)]
    for shape in [*shapes, *students]:
        point = {**shape, **runtime}
        key = search_space.key(point)
        if key in valid and key not in tried:
            return point
    return None
