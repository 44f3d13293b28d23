"""A search's trials in words: the recipe as people say it, why a trial is out, the best so far in one sentence,
the table of trials and the budget line. Functions of a `SearchStatus` and its `TrialRow`s (jobs.api), nothing else.
"""

from __future__ import annotations

from typing import Any

from jobs.search.record import made_by
from workbench.ui import FAILED, OK, PRUNED, RUNNING, esc

RUNTIME_NAMES = {"pytorch": "PyTorch", "onnxruntime": "ONNX Runtime", "openvino": "OpenVINO", "tensorrt": "TensorRT"}
# quantize methods: the runtime they leave the variant on and the precision they give it
QUANTIZE_WORDS = {
    "torch-dynamic-int8": ("pytorch", "dynamic int8"), "bf16": ("pytorch", "bf16"), "fp16": ("pytorch", "fp16"),
    "ort-dynamic-int8": ("onnxruntime", "dynamic int8"), "ort-static-int8": ("onnxruntime", "static int8"),
    "nncf-int8": ("openvino", "int8 (NNCF)"),
}
STUDENT_WORDS = {"half-layers": "1/2 depth", "third-layers": "1/3 depth", "quarter-layers": "1/4 depth",
                 "small-4x256": "small 4x256 student"}
STATE_ICONS = {"running": RUNNING, "complete": OK, "pruned": PRUNED, "failed": FAILED}
BEST, FRONT = "★", "◆"


def _fraction(value: Any) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    for denominator in (2, 3, 4):
        if abs(number * denominator - round(number * denominator)) < 1e-6 and round(number * denominator) == 1:
            return f"1/{denominator}"
    return f"{number:.0%}"


def _flag(value: Any) -> bool:
    return value is True or str(value).lower() in ("on", "true", "1")


# the search space's backends (jobs/search/space.py) as people say them
BACKEND_WORDS = {
    "pytorch-fp32": "PyTorch fp32", "pytorch-int8": "PyTorch dynamic int8", "pytorch-bf16": "PyTorch bf16",
    "pytorch-fp16": "PyTorch fp16", "onnx-fp32": "ONNX Runtime fp32", "onnx-int8": "ONNX Runtime dynamic int8",
    "onnx-int8-static": "ONNX Runtime static int8", "openvino-fp32": "OpenVINO fp32", "openvino-bf16": "OpenVINO bf16",
    "openvino-int8": "OpenVINO int8 (NNCF)", "tensorrt-fp16": "TensorRT fp16",
}


def point_words(point: dict[str, Any]) -> str:
    """'ONNX Runtime static int8, 1/2 depth, 25% pruned' from a search point (backend, student, prune, ...)."""
    words = [BACKEND_WORDS.get(point["backend"], str(point["backend"]))]
    student = point.get("student")
    if student and student != "none":
        words.append(STUDENT_WORDS.get(student, f"student {student}"))
        if point.get("intermediate") == "on":
            words.append("intermediate-layer distillation")
    prune = str(point.get("prune") or "none")
    if prune != "none":
        amount = prune.rsplit("-", 1)[-1]
        words.append(f"{amount}% of heads and FFN pruned" if amount.isdigit() else f"pruned ({prune})")
        if point.get("recovery") == "finetune":
            words.append("recovery fine-tune")
    if point.get("ort_level") not in (None, "none"):
        words.append(f"graph optimization {point['ort_level']}")
    if point.get("reduce_range") == "on":
        words.append("7-bit weights")
    if point.get("max_length") not in (None, "full"):
        words.append(f"truncated to {point['max_length']} of its length")
    return ", ".join(words)


def trial_recipe(trial: Any) -> str:
    """A trial's recipe in words: from its search point when it has one, else from its steps."""
    params = getattr(trial, "params", None) or {}
    return point_words(params) if "backend" in params else recipe_words(trial.steps)


def recipe_words(steps: list[dict[str, Any]] | None) -> str:
    """'ONNX Runtime static int8, 1/2 depth' from a trial's steps ([{kind, params}]); 'PyTorch fp32' for none."""
    runtime, precision, extras = "pytorch", "fp32", []
    for step in steps or []:
        kind, params = step.get("kind"), step.get("params") or {}
        if kind == "export-onnx":
            runtime = "onnxruntime"
            if params.get("fusion"):
                extras.append("fused graph")
            if params.get("optimization") not in (None, "none"):
                extras.append(f"graph optimization {params['optimization']}")
        elif kind == "export-openvino":
            runtime, precision = "openvino", params.get("precision", "fp32")
        elif kind == "build-tensorrt":
            runtime, precision = "tensorrt", params.get("precision", "fp16")
        elif kind == "quantize":
            runtime, precision = QUANTIZE_WORDS.get(params.get("method", "ort-dynamic-int8"),
                                                    (runtime, str(params.get("method"))))
            if _flag(params.get("reduce_range")):
                extras.append("7-bit weights")
            if params.get("per_channel"):
                extras.append("per-channel")
            if params.get("accuracy_control"):
                extras.append("accuracy control")
        elif kind == "distill":
            student = params.get("student", "half-layers")
            depth = params.get("depth") or params.get("layers_fraction")
            extras.append(f"{_fraction(depth)} depth" if depth else STUDENT_WORDS.get(student, f"student {student}"))
            if params.get("hidden_weight") or params.get("intermediate"):
                extras.append("intermediate-layer distillation")
        elif kind == "prune":
            if params.get("method") == "structured":
                extras.append(f"pruned {float(params.get('head_ratio', 0.25)):.0%} heads, "
                              f"{float(params.get('ffn_ratio', 0.25)):.0%} FFN")
            else:
                extras.append(f"{float(params.get('amount', 0.3)):.0%} weights zeroed")
        elif kind == "finetune":
            extras.append("fine-tuned")
        elif kind == "truncate" and params.get("fraction"):
            extras.append(f"truncated to {_fraction(params['fraction'])} of its length")
        if kind != "finetune" and params.get("max_length"):  # a fine-tune's max_length is its training length
            extras.append(f"max {params['max_length']} tokens")
    return ", ".join([f"{RUNTIME_NAMES.get(runtime, runtime)} {precision}", *dict.fromkeys(extras)])


def params_words(params: dict[str, Any] | None) -> str:
    """The optimizer's parameters of a trial, compact: 'runtime=onnxruntime, precision=int8'."""
    return ", ".join(f"{k}={v}" for k, v in (params or {}).items())


def max_drop(status: Any) -> float | None:
    goal = getattr(status, "goal", None) or {}
    value = goal.get("max_drop_points")
    return float(value) if value is not None else None


def out_reason(trial: Any, status: Any) -> str | None:
    """Why a trial can never be the answer (pruned, failed, flagged, too much accuracy lost), or None if it can."""
    if trial.state in ("pruned", "failed"):
        return f"{trial.state}: {trial.reason}" if getattr(trial, "reason", None) else trial.state
    if trial.problems:
        return "flagged: " + "; ".join(trial.problems)
    limit = max_drop(status)
    if limit is not None and trial.drop_points is not None and trial.drop_points > limit + 1e-9:
        return f"loses {trial.drop_points:.2f} points, more than the {limit:g} allowed"
    return None


def _faster(speedup: float) -> str:
    """'3.1x faster', or '1.7x slower' below the baseline's speed (where '0.6x faster' would read as a gain)."""
    return f"{speedup:.1f}x faster" if speedup >= 1 else f"{1 / speedup:.1f}x slower"


def _speed(trial: Any) -> str:
    return _faster(trial.speedup) if trial.speedup is not None else "speed not measured yet"


def _drop(trial: Any) -> str:
    if trial.drop_points is None:
        return "accuracy not measured yet"
    if trial.drop_points < 0:
        return f"{-trial.drop_points:.1f} points gained"
    return f"{trial.drop_points:.1f} points lost"


def best_sentence(status: Any) -> str:
    """'trial 4: ONNX Runtime static int8, 1/2 depth — 3.1x faster, 0.3 points lost', or why there is none yet.

    Once the run-off measured the pick soundly, its same-job figure leads and the trial's own one follows: the
    trial's benchmark and the baseline's ran in different jobs, minutes apart, and this machine drifts between
    jobs; an unsound, failed or running run-off leaves the trial's figure first with what became of the run-off."""
    best = status.best
    if best is None:
        done = sum(t.state != "running" for t in status.trials)
        return f"No trial within the goal yet ({done} of {len(status.trials)} trials finished)."
    c = getattr(status, "confirmation", None)
    if c is not None and c.sound:
        own = f"; the trial benchmark said {best.speedup:.1f}x" if best.speedup is not None else ""
        figures = _runoff_figures(c, in_words=True)
        sentence = (f"trial {best.number}: {trial_recipe(best)} — {figures} measured again in one job with the "
                    f"baseline, {_drop(best)}{own}.")
        return f"{sentence} {_picked(c)}" if c.why else sentence
    sentence = f"trial {best.number}: {trial_recipe(best)} — {_speed(best)}, {_drop(best)}"
    again = confirmation_sentence(status)
    return f"{sentence}. {again}" if again else sentence


def _picked(c: Any) -> str:
    """How a runner-up beat the search's own pick in the run-off (`c.why`): 'Picked in the run-off: …'."""
    return f"Picked in the run-off: {c.why}."


def _runoff_figures(c: Any, in_words: bool = False) -> str:
    """'3.9x (3.45 vs 13.41 ms p50)' ('3.9x faster (…)' `in_words`), with the run-off job it came from when an
    earlier one was redone."""
    ratio = _faster(c.speedup) if in_words else f"{c.speedup:.1f}x"
    return f"{ratio} ({c.best_p50_ms:.2f} vs {c.baseline_p50_ms:.2f} ms p50){c.which_job}"


def confirmation_sentence(status: Any) -> str:
    """The run-off once the search stopped (the best, its runners-up and the baseline in one job): 'Measured again
    in one job with the baseline: 3.9x (3.45 vs 13.41 ms p50).', led by how a runner-up beat the search's pick, with
    which run-off job it is when an earlier one was measured again, what makes it unsound, or where it is."""
    c = getattr(status, "confirmation", None)
    if c is None:
        return ""
    if c.state == "running":
        runners_up = ", its runners-up" if len(c.entrants) > 1 else ""
        return f"Measuring trial {c.trial}{runners_up} and the baseline again in one job{c.which_job}…"
    if c.state != "complete":
        return f"Not measured again in one job with the baseline: {c.reason}"
    lead = f"{_picked(c)} " if c.why else ""
    if c.problems:
        return f"{lead}Measured again in one job with the baseline: {_runoff_figures(c)}, not sound: " \
            f"{'; '.join(c.problems)}."
    return f"{lead}Measured again in one job with the baseline: {_runoff_figures(c)}."


def budget_line(status: Any) -> str:
    """'12.3 of 60 min used, 47.7 left · 14 trials: 9 complete, 3 pruned, 2 failed · stopped: goal met'."""
    used, budget = (status.elapsed_s or 0.0) / 60, (status.budget_s or 0.0) / 60
    counts: dict[str, int] = {}
    for trial in status.trials:
        counts[trial.state] = counts.get(trial.state, 0) + 1
    states = ", ".join(f"{n} {state}" for state, n in counts.items())
    line = (f"**Budget:** {used:.1f} of {budget:g} min used, {max(budget - used, 0.0):.1f} left · "
            f"**{len(status.trials)} trials**" + (f": {states}" if states else "") + f" · search {status.state}")
    if getattr(status, "restarts", 0):
        line += f" · resumed after {status.restarts} restart{'s' if status.restarts > 1 else ''}"
    if status.stop_reason:
        line += f" · **stopped:** {esc(status.stop_reason)}"
    elif getattr(status, "message", ""):
        line += f" · {esc(status.message)}"
    return line


def _number(value: float | None, fmt: str) -> Any:
    return format(value, fmt) if value is not None else ""


def trial_rows(status: Any) -> list[dict[str, Any]]:
    """One row per trial, newest last: marks (★ best, ◆ Pareto front), state, recipe in words, params, figures,
    problems or the reason it is out."""
    front = set(status.front)
    best = status.best.number if status.best is not None else None
    baseline = status.baseline.number if status.baseline is not None else None
    rows = []
    for trial in sorted(status.trials, key=lambda t: t.number):
        marks = (BEST if trial.number == best else "") + (FRONT if trial.number in front else "")
        recipe = trial_recipe(trial) + (" (baseline)" if trial.number == baseline else "")
        reused = getattr(trial, "reused", None)
        if reused:
            which = "all its steps" if getattr(trial, "reused_whole", False) else f"its first {reused['steps']} step(s)"
            recipe += f" ({which} made already by {made_by(reused)})"
        rows.append({
            "trial": f"{marks} {trial.number}".strip(), "state": f"{STATE_ICONS.get(trial.state, '')} {trial.state}",
            "recipe": recipe, "params": params_words(trial.params),
            "accuracy %": _number(trial.accuracy * 100 if trial.accuracy is not None else None, ".2f"),
            "drop (points)": _number(trial.drop_points, ".2f"), "p50 ms": _number(trial.p50_ms, ".2f"),
            "speedup": _number(trial.speedup, ".2f"), "variant": f"#{trial.variant_id}" if trial.variant_id else "",
            "problems / reason": out_reason(trial, status) or "",
        })
    return rows
