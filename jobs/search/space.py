"""The search space: which student, pruning, runtime and precision a trial tries, and the job steps that make it.

A point is a dict of categorical choices, asked dimension by dimension (a dimension that does not apply, e.g. the
ONNX graph optimization level of a PyTorch point, is not asked). The choices offered are those this installation
and this device can run: bf16 only where the CPU has AMX or AVX-512 BF16 (elsewhere it is slower than fp32),
OpenVINO and NNCF only when installed, TensorRT only where its kind is available. A maximum sequence length (the
variant truncated to a fraction of the length it was trained at) is offered only on real traffic: on a fixed batch x
length cell the cell sets the length, so truncation could only lose accuracy. `quick` is a small space with the
kinds' quick params, for a first look and for tests.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any, Callable

from storage.errors import InvalidInput

TRT_MAX_BATCH, TRT_MAX_SEQ = 32, 128
STUDENTS = ("none", "half-layers", "third-layers", "small-4x256")
PRUNINGS = {"none": None, "structured-25": 0.25, "structured-50": 0.5}
INTERMEDIATE = ("off", "on")  # a student also learns its teacher's hidden states at the matching depth
HIDDEN_WEIGHT = 1.0  # the intermediate-layer term's weight (TinyBERT's: its MSE terms unweighted)
# The most of a search's budget one distillation may take at this machine's measured training speed: a student is
# the way to large speed-ups and is reused by every later trial that starts with it, but two of them (1/2 and 1/3
# depth) must still fit with room for the quick quantization trials.
DISTILL_SHARE = 0.4
# What one training text costs a distillation, in steps of the baseline's full fine-tune on the same machine
# (forward and backward through every layer, its validation included), fitted on a 2-core AMD EPYC with
# AVX-512 here whose full fine-tune ran 49.2 texts/s (28,800 texts, two epochs, one search): the teacher's
# logits over the texts, once (a forward pass: 0.49 of a step with a third-depth student, 0.44 with a
# half-depth one), and each epoch the student's own step, about 0.15 (embeddings, tokens, the loss,
# validation) plus 0.9 x its share of the teacher's layers (a third-depth epoch 0.44, a half-depth one 0.57);
# learning the teacher's hidden states runs the teacher forward at every step too (0.70 more: a third-depth
# epoch with them took 662 s, 256 s without).
TEACHER_PASS, STEP_BASE, TEACHER_STEP = 0.5, 0.15, 0.7
STUDENT_DEPTH = {"half-layers": 1 / 2, "third-layers": 1 / 3}  # small-4x256 is costed as a half-depth student
SHALLOWEST_FIRST = ("third-layers", "half-layers")  # the students made from the teacher's own layers, fastest first
RECOVERY = ("none", "finetune")  # after structured pruning: a short fine-tune that wins back accuracy
ORT_LEVELS = ("none", "basic", "extended", "all")
REDUCE_RANGE = ("auto", "off", "on")
ONNX_INT8 = ("onnx-int8", "onnx-int8-static")
# A variant's maximum length as a fraction of its own (the 95th percentile of its training texts' token counts)
TRUNCATIONS = {"full": None, "3/4": 0.75, "1/2": 0.5}
BACKENDS = ("pytorch-fp32", "pytorch-int8", "pytorch-bf16", "pytorch-fp16", "onnx-fp32", "onnx-int8",
            "onnx-int8-static", "openvino-fp32", "openvino-bf16", "openvino-int8", "tensorrt-fp16")
FP32 = "pytorch-fp32"


@dataclass(frozen=True)
class Dimension:
    name: str
    universe: tuple[str, ...]  # every value the workbench knows for it
    applies: Callable[[dict[str, Any]], bool]  # from the choices asked before it
    optional: bool = False  # asked only when the space has it (a space without it implicitly takes its first value)


DIMENSIONS = (
    Dimension("student", STUDENTS, lambda p: True),
    Dimension("intermediate", INTERMEDIATE, lambda p: p["student"] in ("half-layers", "third-layers")),
    Dimension("prune", tuple(PRUNINGS), lambda p: True),
    Dimension("recovery", RECOVERY, lambda p: p["prune"] != "none"),
    Dimension("backend", BACKENDS, lambda p: True),
    Dimension("ort_level", ORT_LEVELS, lambda p: p["backend"].startswith("onnx-")),
    Dimension("reduce_range", REDUCE_RANGE, lambda p: p["backend"] in ONNX_INT8),
    Dimension("max_length", tuple(TRUNCATIONS), lambda p: True, optional=True),
)
BY_NAME = {d.name: d for d in DIMENSIONS}


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def unavailable_backends(device: str) -> dict[str, str]:
    """Backends this machine cannot run for `device`, with the reason."""
    from jobs.runner.registry import get_kind
    from jobs.runtimes.devices import fast_bf16

    out: dict[str, str] = {}
    if device == "cuda":
        for name in BACKENDS:
            if name.startswith(("onnx-", "openvino-")) or name == "pytorch-int8":
                out[name] = "a CPU backend"
        if not fast_bf16("cuda"):
            out["pytorch-bf16"] = "this GPU has no fast bf16"
        ok, why = get_kind("build-tensorrt").availability()
        if not ok:
            out["tensorrt-fp16"] = why
        return out
    out["tensorrt-fp16"] = out["pytorch-fp16"] = "a GPU backend (fp16 is slow on CPUs)"
    if not fast_bf16("cpu"):
        out["pytorch-bf16"] = out["openvino-bf16"] = "this CPU has no AMX or AVX-512 BF16: bf16 is slower than fp32"
    if not _installed("openvino"):
        for name in ("openvino-fp32", "openvino-bf16", "openvino-int8"):
            out[name] = "openvino is not installed"
    elif "openvino-bf16" not in out:
        from jobs.runtimes.openvino_runtime import bf16_here

        ok, why = bf16_here()
        if not ok:
            out["openvino-bf16"] = why
    if not _installed("nncf"):
        out["openvino-int8"] = "nncf is not installed"
    return out


def default_space(device: str, quick: bool, traffic: str = "grid") -> dict[str, tuple[str, ...]]:
    """The choices a search tries by default here: every available backend, 1/2 and 1/3 depth students and
    structured pruning, and on real traffic 3/4 and 1/2 of the maximum length; `quick`: full or half depth, PyTorch
    int8 or ONNX Runtime dynamic int8."""
    if quick:
        backends = ("pytorch-fp32", "pytorch-int8", "onnx-int8") if device == "cpu" else ("pytorch-fp32", "pytorch-fp16")
        return {"student": ("none", "half-layers"), "intermediate": ("off",), "prune": ("none",), "recovery": ("none",),
                "backend": backends, "ort_level": ("basic",), "reduce_range": ("auto",)}
    missing = unavailable_backends(device)
    space = {"student": ("none", "half-layers", "third-layers"), "intermediate": INTERMEDIATE,
             "prune": tuple(PRUNINGS), "recovery": RECOVERY,
             "backend": tuple(b for b in BACKENDS if b not in missing), "ort_level": ("basic", "extended", "all"),
             "reduce_range": ("off", "on")}
    if traffic == "real":
        space["max_length"] = tuple(TRUNCATIONS)
    return space


def build_space(device: str, quick: bool, restrict: dict[str, Any] | None,
                traffic: str = "grid") -> dict[str, tuple[str, ...]]:
    """The default space with the user's restrictions (dimension -> allowed values), checked against what exists
    and what runs here; a restriction may also name a known value the default leaves out (e.g. small-4x256)."""
    space = default_space(device, quick, traffic)
    missing = unavailable_backends(device)
    for name, values in (restrict or {}).items():
        if name not in BY_NAME:
            raise InvalidInput(f"unknown search dimension {name!r}; use {', '.join(BY_NAME)}")
        values = (values,) if isinstance(values, str) else tuple(values)
        unknown = [v for v in values if v not in BY_NAME[name].universe]
        if unknown or not values:
            raise InvalidInput(f"{name} takes {', '.join(BY_NAME[name].universe)}, not {', '.join(map(str, unknown)) or 'nothing'}")
        if name == "max_length" and traffic != "real" and set(values) != {"full"}:
            raise InvalidInput("max_length applies to real traffic only: a batch x length cell sets the length itself, "
                               "so a shorter maximum could only lose accuracy there")
        if name == "backend":
            blocked = [f"{v} ({missing[v]})" for v in values if v in missing]
            if blocked:
                raise InvalidInput(f"backends not available here: {'; '.join(blocked)}")
        space[name] = tuple(dict.fromkeys(values))
    if not points(space):
        raise InvalidInput("the search space has no point besides the fp32 baseline: allow another backend, "
                           "student or pruning")
    return space


def _asked(dim: Dimension, point: dict[str, str], space: dict[str, tuple[str, ...]]) -> bool:
    return dim.applies(point) and (not dim.optional or dim.name in space)


def _choices(space: dict[str, tuple[str, ...]], dim: Dimension) -> tuple[str, ...]:
    """The dimension's values in `space`; its first known value where the space predates the dimension (a search
    recorded by an older version resumes with the choice it implicitly made)."""
    return tuple(space.get(dim.name, dim.universe[:1]))


def suggest(trial: Any, space: dict[str, tuple[str, ...]]) -> dict[str, str]:
    """Ask an Optuna trial for a point, dimension by dimension (define-by-run: only the dimensions that apply)."""
    point: dict[str, str] = {}
    for dim in DIMENSIONS:
        if _asked(dim, point, space):
            point[dim.name] = trial.suggest_categorical(dim.name, list(_choices(space, dim)))
    return point


def baseline_point(space: dict[str, tuple[str, ...]]) -> dict[str, str]:
    """The fp32 baseline as `suggest` names it in `space` (an optional dimension there at its first value, "full")."""
    point = {"student": "none", "prune": "none", "backend": FP32}
    point.update({dim.name: dim.universe[0] for dim in DIMENSIONS if dim.optional and dim.name in space})
    return point


def is_baseline(point: dict[str, str]) -> bool:
    return point.get("student") == "none" and point.get("prune") == "none" and point.get("backend") == FP32 \
        and point.get("max_length", "full") == "full"


def points(space: dict[str, tuple[str, ...]]) -> list[dict[str, str]]:
    """Every point of the space except the baseline itself, in a fixed order."""
    found: list[dict[str, str]] = [{}]
    for dim in DIMENSIONS:
        found = [dict(p, **({dim.name: v} if applies else {}))
                 for p in found for applies in [_asked(dim, p, space)] for v in (_choices(space, dim) if applies else (None,))]
    unique = {tuple(sorted(p.items())): p for p in found}
    return [p for p in unique.values() if not is_baseline(p)]


def key(point: dict[str, str]) -> tuple:
    return tuple(sorted(point.items()))


def size(space: dict[str, tuple[str, ...]]) -> int:
    return len(points(space))


def training_caps(budget_s: float) -> dict[str, int]:
    """What a trial's distillation or recovery fine-tune may train on, from the search's budget.

    Uncapped, one distillation over a whole train split (tens of thousands of texts, three epochs) can take most
    of an hour on a 2-core CPU, leaving the sampler one or two trials. About three training examples per second of
    budget (at least 2,000) and two epochs keep a trial to a fraction of the budget; re-running the trial's recipe
    from the Jobs tab without these caps trains on everything."""
    return {"max_train_examples": int(max(2000, 3 * budget_s)), "max_val_examples": 1000, "epochs": 2}


def distill_cost(student: str, epochs: int, intermediate: bool = False) -> float:
    """What a distillation costs per training text, in full fine-tune steps (TEACHER_PASS, STUDENT_DEPTH)."""
    step = STEP_BASE + 0.9 * STUDENT_DEPTH.get(student, 1 / 2) + (TEACHER_STEP if intermediate else 0.0)
    return TEACHER_PASS + epochs * step


def distill_caps(budget_s: float, train_rate: float | None = None, student: str = "half-layers",
                 intermediate: bool = False) -> dict[str, int]:
    """A distillation's caps: about eight examples per second of budget, more than a recovery fine-tune's three,
    and no more than this machine can train `student` on in DISTILL_SHARE of the budget.

    A student is made once and reused by every later trial that starts with it, and it is data-hungry: on the
    tweet-sentiment split here a half-depth MiniLM student distilled on 10,800 texts lost 0.63 points against its
    teacher (77.57 % vs 78.20 %), and on all 30,526 it gained 0.68 (78.88 %), two epochs each (one run each, 2-core
    Xeon). The price is time: about 25 minutes for that student alone on that machine (an epoch took 700 s).

    Machines differ: a 2-core AMD EPYC with AVX2 here fine-tuned about three times slower than that Xeon, and
    eight examples per second of budget would be a distillation the budget cuts short, which leaves no student
    at all. So with `train_rate` (training examples per second of a full-depth fine-tune epoch on this
    machine, its validation included: `training_rate`) the data is also capped at what DISTILL_SHARE of the
    budget trains, at the student's own cost (`distill_cost`): a shallower student trains faster, so it gets
    more of the data it needs for the same time. At the AVX2 EPYC's 20.9 texts/s, in a 60-minute budget, a
    third-depth student gets about 21,500 texts and a half-depth one about 17,700 (1.4 and 1.7 steps a text
    over two epochs), where one cost for every depth gave both 15,041; a third-depth student distilled there
    on all 30,526 texts was 0.39 points better than its teacher after its second epoch (the best of three).
    The EPYC with AVX-512 trains 49.2 texts/s: eight a second of budget (28,800) is the cap there, and a
    third-depth student on them took 13.5 minutes."""
    caps = {**training_caps(budget_s), "max_train_examples": int(max(2000, 8 * budget_s))}
    if train_rate:
        cost = distill_cost(student, caps["epochs"], intermediate)
        affordable = int(DISTILL_SHARE * budget_s * train_rate / cost)
        caps["max_train_examples"] = max(2000, min(caps["max_train_examples"], affordable))
    return caps


def training_rate(info: dict[str, Any] | None) -> float | None:
    """Training examples per second of a variant's own full fine-tune here (its fastest epoch, validation included),
    from its training record; None when it was not fully fine-tuned by the workbench or the record says too little.

    The fastest epoch, not the median: a shared machine slows some epochs down (on the EPYC here, two epochs that ran
    beside a test suite took 464 and 471 s, the quiet one 287 s), and the distillation it sizes runs in a search
    that has the machine to itself; DISTILL_SHARE and a distillation step's lower cost leave the slack."""
    training = (info or {}).get("training") or {}
    seconds = [e.get("seconds") for e in training.get("history") or [] if e.get("seconds")]
    examples = training.get("train_examples")
    if not seconds or not examples or training.get("mode") not in ("full", None):
        return None
    return examples / min(seconds)


def steps(point: dict[str, str], goal: Any, *, quick: bool, fusion_ok: bool,
          train_rate: float | None = None) -> list[dict[str, Any]]:
    """The job steps (kind + params) that make the point's variant from the fp32 start variant; `train_rate`: see
    `distill_caps`."""
    from jobs.runner.registry import get_kind

    caps = {} if quick else training_caps(goal.budget_s)  # a recovery fine-tune's
    made: list[tuple[str, dict[str, Any]]] = []
    if point["student"] != "none":
        on = point.get("intermediate") == "on"
        student_caps = {} if quick else distill_caps(goal.budget_s, train_rate, point["student"], on)
        hidden = {"hidden_weight": HIDDEN_WEIGHT} if on else {}
        made.append(("distill", {"student": point["student"], **hidden, **student_caps}))
    ratio = PRUNINGS[point["prune"]]
    if ratio is not None:
        made.append(("prune", {"method": "structured", "head_ratio": ratio, "ffn_ratio": ratio}))
        if point.get("recovery") == "finetune":  # one epoch at a low rate: recover what pruning lost, not re-learn
            made.append(("finetune", {**caps, "epochs": 1, "learning_rate": 2e-5}))
    backend = point["backend"]
    if backend.startswith("onnx-") or backend == "tensorrt-fp16":
        export: dict[str, Any] = {}
        if backend != "tensorrt-fp16":  # TensorRT fuses on its own
            export = {"fusion": fusion_ok, "optimization": point.get("ort_level", "none")} if fusion_ok else \
                {"optimization": point.get("ort_level", "none")}
        made.append(("export-onnx", export))
    if backend == "pytorch-int8":
        made.append(("quantize", {"method": "torch-dynamic-int8"}))
    elif backend in ("pytorch-bf16", "pytorch-fp16"):
        made.append(("quantize", {"method": backend.split("-")[1]}))
    elif backend == "onnx-int8":
        made.append(("quantize", {"method": "ort-dynamic-int8", "per_channel": True,
                                  "reduce_range": point.get("reduce_range", "auto")}))
    elif backend == "onnx-int8-static":
        made.append(("quantize", {"method": "ort-static-int8", "reduce_range": point.get("reduce_range", "auto")}))
    elif backend.startswith("openvino-"):
        made.append(("export-openvino", {"precision": "bf16"} if backend == "openvino-bf16" else {}))
        if backend == "openvino-int8":
            made.append(("quantize", {"method": "nncf-int8"}))
    elif backend == "tensorrt-fp16":
        made.append(("build-tensorrt", {
            "precision": "fp16", "opt_batch": goal.batch_size, "max_batch": max(goal.batch_size, TRT_MAX_BATCH),
            "opt_seq": goal.seq_len, "max_seq": max(goal.seq_len, TRT_MAX_SEQ)}))
    fraction = TRUNCATIONS.get(point.get("max_length", "full"))
    if fraction:  # last: a truncated trial reuses the whole recipe of the same point at full length
        made.append(("truncate", {"fraction": fraction}))
    return [{"kind": kind, "params": {**get_kind(kind).quick_params, **params} if quick else params}
            for kind, params in made]


def distributions(point: dict[str, str], space: dict[str, tuple[str, ...]]) -> dict[str, Any] | None:
    """Optuna's distributions of a recorded point, to add it back to a rebuilt study; None when a value is no longer
    in the space (the study then does without it; the search's own record still has it)."""
    from optuna.distributions import CategoricalDistribution

    if any(name not in space or value not in space[name] for name, value in point.items()):
        return None
    return {name: CategoricalDistribution(list(space[name])) for name in point}


# The wizard's first choice per target (jobs.decisions.wizard.OPTIONS) as a point: the search tries it first, so the
# expert's recipe is always measured and the sampler only has to beat it.
WIZARD_BACKENDS = {"pytorch bf16": "pytorch-bf16", "pytorch int8": "pytorch-int8", "onnxruntime int8": "onnx-int8",
                   "tensorrt fp16": "tensorrt-fp16", "pytorch fp16": "pytorch-fp16"}


def wizard_point(space: dict[str, tuple[str, ...]], device: str) -> dict[str, str] | None:
    """The wizard's recommended precision step for this machine as a point of `space`, or None when it is not in it."""
    from jobs.decisions.wizard import OPTIONS, detected_target
    from jobs.runtimes.devices import detect

    # on a GPU machine searching for its CPU, the CPU's own target
    target = "nvidia-gpu" if device == "cuda" else detected_target({**detect(), "devices": ["cpu"]})
    backend = WIZARD_BACKENDS.get(OPTIONS[target][0].key)
    point = {"student": "none", "prune": "none", "backend": backend or ""}
    if "max_length" in space:
        point["max_length"] = "full"
    if backend == "onnx-int8":
        point.update(ort_level="basic" if "basic" in space["ort_level"] else space["ort_level"][0],
                     reduce_range="on" if target == "cpu-avx2" else "off")
    if any(value not in space.get(name, ()) for name, value in point.items()):
        return None
    return point


def student_point(space: dict[str, tuple[str, ...]], wizard: dict[str, str] | None) -> dict[str, str] | None:
    """The search's second trial: the shallowest student in `space` made from the teacher's own layers, from its
    logits only, run as `wizard` (the wizard's recipe as a point: `wizard_point`) runs, or as the baseline
    runs when that is None; None when the space has no such student.

    A student is the way to large speed-ups and a search's costliest step, and the shallowest one is both the
    cheapest to train and the fastest to run: within the drop, no deeper student beats it on the same runtime, and
    outside it the sampler learns that from one trial. Left to the sampler's random start-up trials the depth was a
    coin toss, and a 60-minute budget on a 2-core CPU affords two students at most: on the AMD EPYC here a search
    made a half-depth student (4.4x at batch 1 in ONNX Runtime int8), where a third-depth one distilled on the whole
    split ran 6.4x within the drop. Its logits only: learning the teacher's hidden states costs a teacher pass a
    step (TEACHER_STEP), and the sampler may still try it."""
    student = next((s for s in SHALLOWEST_FIRST if s in space.get("student", ())), None)
    if student is None:
        return None
    point = wizard or baseline_point(space)
    hidden = _choices(space, BY_NAME["intermediate"])
    point = {**point, "student": student, "intermediate": "off" if "off" in hidden else hidden[0]}
    valid = {key(p) for p in points(space)}
    return point if key(point) in valid else None


def opening_points(space: dict[str, tuple[str, ...]], device: str) -> list[dict[str, str]]:
    """The trials a search starts with, in order, before its sampler chooses: the wizard's recipe, then the
    shallowest student (`student_point`)."""
    wizard = wizard_point(space, device)
    return [p for p in (wizard, student_point(space, wizard)) if p is not None]
