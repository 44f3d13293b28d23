"""Cheap trials first: the fastest way of running a model found so far, tried on each smaller model found so far.

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
"""

from __future__ import annotations

from typing import Any

from jobs.search import space as search_space
from jobs.search.status import DROP_EPSILON, TrialRow

SHAPE_DIMS = ("student", "intermediate", "prune", "recovery")  # what makes the model smaller (and costs the time)


def _shaped(params: dict[str, Any]) -> bool:
    return params.get("student", "none") != "none" or params.get("prune", "none") != "none"


def next_combination(rows: list[TrialRow], max_drop_points: float, valid: set[tuple],
                     tried: set[tuple]) -> dict[str, str] | None:
    """The fastest within-drop trial's runtime dimensions on the smaller model of another within-drop trial (the
    fastest such trial first), when that point is one of the space's (`valid`: their keys, `space.key`) and not
    tried yet; else None."""
    within = [r for r in rows if r.eligible and r.speedup and r.drop_points is not None
              and r.drop_points <= max_drop_points + DROP_EPSILON]
    if not within:
        return None
    fastest = max(within, key=lambda r: r.speedup or 0.0)
    runtime = {k: v for k, v in fastest.params.items() if k not in SHAPE_DIMS}
    for row in sorted((r for r in within if _shaped(r.params)), key=lambda r: -(r.speedup or 0.0)):
        point = {**{k: v for k, v in row.params.items() if k in SHAPE_DIMS}, **runtime}
        key = search_space.key(point)
        if key in valid and key not in tried:
            return point
    return None
