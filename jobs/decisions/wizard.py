"""The optimization wizard's core: from a goal ("4x faster, under 1 point lost") to a recipe, a launch and a verdict.

`recommend` turns a model, a dataset and a `Goal` (target hardware, accuracy tolerance, latency SLO or speed-up)
into an ordered `Recipe` of job steps, each with one sentence on why: from the target's instructions and, when
the target is this machine, from the speedups already measured here. `launch` queues the recipe as one pipeline
(plus the baseline's evaluation when it has none) in one transaction. `progress` follows every job of that
pipeline and, once the closing benchmark is in, names the recommended variant: the fastest one within the
tolerance (and the SLO) on the benchmark's own measurements.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from jobs.decisions.compare import Decision, Point, build_comparison, cell_label, decide, sweet_spot
from jobs.ml.lineage import classifies, head_labels, lineage
from jobs.runner.submit import Step, check_pipeline, submit_pipeline
from jobs.runtimes import display_name
from jobs.runtimes.devices import detect
from storage import catalog, queue, settings
from storage.db import session_scope
from storage.entities import Dataset, Job, Model, Variant
from storage.errors import InvalidInput

TARGETS = {
    "cpu-amx": "CPU with AMX: bf16 and int8 tile matmuls (Xeon Sapphire Rapids or newer)",
    "cpu-avx512-vnni": "CPU with AVX-512 VNNI but no AMX: fast int8 dot products, no fast bf16 (Cascade/Ice Lake, Zen 4)",
    "cpu-avx2": "CPU with AVX2 only: no int8 dot-product or bf16 instructions",
    "nvidia-gpu": "NVIDIA GPU: fp16 tensor cores, TensorRT where installed",
}
DISTILL_GAIN = 1.9  # half the encoder layers: ~2x less encoder work, embeddings and head unchanged
DISTILL_WHEN_FASTEST_AND_DROP = 2.0  # "fastest": a half-depth student is worth trying when this many points may go
TRT_MAX_BATCH, TRT_MAX_SEQ = 32, 128
# A quick trial (a first look, or a test) gives every step its kind's `quick_params` (a sample of the data, short
# benchmark cells) and its evaluations the evaluate kind's; each step's share of the progress bar is its kind's
# `progress_weight` (see jobs.runner.registry).


@dataclass(frozen=True)
class Goal:
    """What the user wants: where the model will run, how much accuracy may go, and how fast it must be."""

    target: str
    max_drop_points: float = 1.0
    slo_ms: float | None = None  # p95 at batch_size x seq_len; None = no SLO: the fastest within the tolerance
    speedup: float | None = None  # at least this many times faster than the baseline (p50); None = as fast as possible
    batch_size: int = 1
    seq_len: int = 128
    traffic: str = "grid"  # "grid": batch_size x seq_len; "real": the test split's own lengths (jobs/bench/traffic.py)

    def __post_init__(self) -> None:
        if self.traffic not in ("grid", "real"):
            raise InvalidInput(f"traffic must be grid (batch x length) or real (the test split's lengths), "
                               f"got {self.traffic!r}")
        if self.target not in TARGETS:
            raise InvalidInput(f"target {self.target!r} is not known; use one of {', '.join(TARGETS)}")
        if self.max_drop_points < 0:
            raise InvalidInput(f"the maximum accuracy drop must be 0 points or more, got {self.max_drop_points}")
        if self.slo_ms is not None and self.slo_ms <= 0:
            raise InvalidInput(f"the latency SLO must be a positive number of milliseconds, got {self.slo_ms}")
        if self.speedup is not None and self.speedup < 1:
            raise InvalidInput(f"the speed-up must be at least 1x, got {self.speedup}")
        if not 1 <= self.batch_size <= 1024:
            raise InvalidInput(f"batch size must be between 1 and 1024, got {self.batch_size}")
        if not 2 <= self.seq_len <= 512:
            raise InvalidInput(f"sequence length must be between 2 and 512 tokens, got {self.seq_len}")

    def describe(self) -> str:
        speed = []
        if self.speedup:
            speed.append(f"at least {self.speedup:g}x faster than the baseline")
        if self.slo_ms:
            speed.append(f"p95 at most {self.slo_ms:g} ms")
        return (f"{' and '.join(speed) or 'as fast as possible'}, losing at most {self.max_drop_points:g} accuracy "
                f"points, at {cell_label(self.batch_size, self.cell_seq, tokens=True)} on {self.target}")

    @property
    def cell_seq(self) -> int:
        """The seq_len of the goal's benchmark cell: REAL_TRAFFIC_SEQ on real traffic (no one length)."""
        from jobs.bench.traffic import REAL_TRAFFIC_SEQ

        return REAL_TRAFFIC_SEQ if self.traffic == "real" else self.seq_len


@dataclass(frozen=True)
class RecipeStep:
    kind: str
    params: dict[str, Any]  # only what differs from the kind's defaults
    why: str


@dataclass(frozen=True)
class Recipe:
    model_id: int
    model_name: str
    dataset_id: int
    dataset_name: str
    start_variant_id: int  # what the first step takes
    goal: Goal
    steps: tuple[RecipeStep, ...]
    evaluation: dict[str, Any]  # params of the evaluation of every new variant
    evaluate_start: bool  # the start variant is the baseline and has no comparable evaluation yet: queue one
    baseline: str  # which variant speedups and accuracy drops are measured against
    expected_speedup: float | None  # what the recipe should give, from measurements here or reference figures
    hardware: str  # what this machine is
    notes: tuple[str, ...] = ()
    quick: bool = False

    def pipeline_steps(self) -> list[Step]:
        return [Step(s.kind, dict(s.params)) for s in self.steps]


@dataclass(frozen=True)
class Launched:
    pipeline: str
    job_ids: list[int]
    goal: Goal


@dataclass(frozen=True)
class JobLine:
    """One job of a wizard run as the progress view shows it."""

    job_id: int
    kind: str
    role: str  # "step" (numbered, in pipeline order) or "evaluation" (of a variant a step made, or of the baseline)
    number: int | None  # step number; for an evaluation, the step whose variant it scores (None: the baseline)
    status: str
    progress: float
    message: str
    variant_id: int | None  # the variant a step made, or the one an evaluation scores
    accuracy: float | None = None  # an evaluation's result


# How the recommended variant's speedup meets the goal's: across its whole 95 % interval, at the median only, or not.
SpeedupGoal = Literal["met", "median only", "short"]


@dataclass(frozen=True)
class Outcome:
    recommended_id: int | None
    baseline_id: int | None
    final_id: int | None  # the variant the last step made
    decision: Decision | None  # the benchmark's cell, with `sweet` = the recommended variant (for the highlight)
    speedup: float | None  # p50 ratio of the recommended variant over the baseline
    drop_points: float | None  # accuracy points lost by the recommended variant (negative: it gained)
    meets_goal: bool
    fingerprint: str | None = None
    undecided: str | None = None  # why no variant is recommended, when none is ("could not decide: ...")
    benchmark_job: int | None = None  # the one benchmark job every figure of the verdict comes from
    goal: Goal | None = None  # what the verdict was measured against
    speedup_goal: SpeedupGoal | None = None  # how the speedup meets goal.speedup (None: no speedup goal)
    misses_slo: bool = False  # no variant within the tolerance meets the SLO: the recommended one is the fastest
    # The sentence people read is made from these fields by workbench.formatting.wizard_summary.


@dataclass(frozen=True)
class Progress:
    pipeline: str
    fraction: float
    lines: list[JobLine]
    done: bool
    failed: bool
    message: str
    outcome: Outcome | None = None


# ---- hardware ---------------------------------------------------------------------------------------------------


def detected_target(info: dict[str, Any] | None = None) -> str:
    """The target this machine is: a CUDA GPU first, then the best CPU instruction set it has."""
    info = info if info is not None else detect()
    if "cuda" in info.get("devices", []):
        return "nvidia-gpu"
    flags = set(info.get("cpu_flags", []))
    if flags & {"amx_bf16", "amx_int8", "amx_tile"}:
        return "cpu-amx"
    if "avx512_vnni" in flags:
        return "cpu-avx512-vnni"
    return "cpu-avx2"


FLAG_NAMES = {"avx2": "AVX2", "avx512f": "AVX-512", "avx512_vnni": "AVX-512 VNNI", "avx512_bf16": "AVX-512 BF16",
              "amx_bf16": "AMX bf16", "amx_int8": "AMX int8"}


def hardware_line(info: dict[str, Any] | None = None) -> str:
    """'Intel Xeon, 2 cores, AVX2, AVX-512 VNNI, AMX bf16 → cpu-amx' for the detected machine."""
    info = info if info is not None else detect()
    flags = ", ".join(FLAG_NAMES[f] for f in info.get("cpu_flags", []) if f in FLAG_NAMES) or "no AVX2"
    where = f"{info.get('cpu', 'unknown CPU')}, {info.get('cpu_count', '?')} cores, {flags}"
    if info.get("gpu"):
        where = f"{info['gpu']} (+ {where})"
    return f"{where} → {detected_target(info)}"


def defaults() -> dict[str, Any]:
    """What the wizard's goal form starts with: the detected target and the targets to choose from."""
    info = detect()
    return {"target": detected_target(info), "hardware": hardware_line(info), "targets": dict(TARGETS),
            "goal": {f.name: f.default for f in dataclasses.fields(Goal) if f.name != "target"}}


def _measured(target: str, detected: str, batch_size: int = 1) -> tuple[int, dict[str, Any]]:
    """The batch size and this machine's measured speedups there: the goal's batch size, else batch 1. None apply
    when the target is not this machine."""
    if target != detected:
        return batch_size, {}
    from jobs.decisions.advice import measured_speedups

    device = "cuda" if target == "nvidia-gpu" else "cpu"
    if _fingerprint_here(device) is None:
        return batch_size, {}
    at_goal = measured_speedups(device, batch_size)
    return (batch_size, at_goal) if at_goal or batch_size == 1 else (1, measured_speedups(device, 1))


def _fingerprint_here(device: str) -> str | None:
    """This machine's fingerprint hash for `device`, or None when this process cannot reach CUDA, so nothing
    measured here applies. `detect()` may see a GPU this process's torch cannot use: no torch, a CPU-only build
    (whose CUDA calls raise AssertionError), no driver. Only those count as "no CUDA"; any other error is a bug
    and is raised."""
    from jobs.bench.fingerprint import fingerprint, fingerprint_hash

    if device == "cuda":
        try:
            import torch
        except ImportError:
            return None
        if not torch.cuda.is_available():
            return None
        try:
            return fingerprint_hash(fingerprint(device))
        except RuntimeError:  # a device torch sees but cannot initialise from this process (e.g. after a fork)
            return None
    return fingerprint_hash(fingerprint(device))


def _speed_name(key: str) -> str:
    runtime, _, precision = key.partition(" ")
    return f"{display_name(runtime)} {precision}"


# ---- the recipe ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Option:
    key: str  # "runtime precision", as measured speedups name them
    prior: float  # speedup over PyTorch fp32 at batch 1 expected before anything is measured here
    fact: str  # the hardware fact behind it


OPTIONS = {
    "cpu-amx": [
        _Option("pytorch bf16", 3.7, "this CPU's AMX tiles run bf16 matmuls several times faster than fp32 "
                                     "(3.7-4.6x at batch 1 on MiniLM-L6 on a 2-core AMX Xeon) with near-fp32 accuracy"),
        _Option("pytorch int8", 3.7, "AMX int8 tiles make PyTorch dynamic int8 as fast as bf16 (3.7-4.6x at batch 1 "
                                     "on a 2-core AMX Xeon), at some risk to accuracy"),
        _Option("onnxruntime int8", 2.9, "ONNX Runtime int8 uses VNNI rather than AMX tiles here (about 2.9x at batch 1 "
                                         "on a 2-core AMX Xeon)"),
    ],
    "cpu-avx512-vnni": [
        _Option("onnxruntime int8", 2.5, "AVX-512 VNNI makes int8 dot products fast while bf16 has no fast path, so "
                                         "ONNX Runtime dynamic int8 on a fused graph is the usual winner (about 2-3x)"),
        _Option("pytorch int8", 2.0, "PyTorch dynamic int8 also uses VNNI, with less graph fusion than ONNX Runtime"),
    ],
    "cpu-avx2": [
        _Option("onnxruntime int8", 1.5, "without VNNI or AMX, int8 gains are small (about 1.5x) but still the largest "
                                         "on an AVX2-only CPU; bf16 and fp16 would be slower than fp32"),
        _Option("onnxruntime fp32", 1.2, "a fused fp32 ONNX graph keeps fp32 accuracy for a small gain"),
    ],
    "nvidia-gpu": [
        _Option("tensorrt fp16", 4.0, "TensorRT fp16 engines run on the GPU's tensor cores with fused kernels, "
                                      "typically several times faster than PyTorch fp32"),
        _Option("pytorch fp16", 2.0, "fp16 weights use the GPU's tensor cores (about 2x PyTorch fp32)"),
    ],
}


def _option_steps(key: str, goal: Goal, fusion_ok: bool, start_runtime: str) -> list[tuple[str, dict]]:
    """The job steps that turn an fp32 variant (PyTorch, or ONNX for the ONNX options) into the option's variant."""
    export = {"fusion": True} if fusion_ok else {}
    if key == "pytorch bf16":
        return [("quantize", {"method": "bf16"})]
    if key == "pytorch int8":
        return [("quantize", {"method": "torch-dynamic-int8"})]
    if key == "pytorch fp16":
        return [("quantize", {"method": "fp16"})]
    steps: list[tuple[str, dict]] = []
    if start_runtime == "pytorch":
        steps.append(("export-onnx", dict(export) if key != "tensorrt fp16" else {}))  # TensorRT fuses on its own
    if key == "onnxruntime int8":
        quantize = {"method": "ort-dynamic-int8", "per_channel": True}
        if goal.target == "cpu-avx2":  # no VNNI there: 7-bit weights keep the u8s8 path from saturating
            quantize["reduce_range"] = "on"
        steps.append(("quantize", quantize))
    elif key == "tensorrt fp16":
        steps.append(("build-tensorrt", {
            "precision": "fp16", "opt_batch": goal.batch_size, "max_batch": max(goal.batch_size, TRT_MAX_BATCH),
            "opt_seq": goal.seq_len, "max_seq": max(goal.seq_len, TRT_MAX_SEQ)}))
    return steps


def _fusion_ok(variant: Variant) -> bool:
    """Whether ONNX Runtime's transformer fusion knows the model's type (BERT-family)."""
    from jobs.kinds.export_onnx import FUSION_MODEL_TYPES

    try:
        model_type = json.loads((Path(variant.artifact_dir) / "config.json").read_text()).get("model_type")
    except (OSError, ValueError):
        return False
    return model_type in FUSION_MODEL_TYPES


def _evaluation_count(dataset: Dataset, max_examples: int) -> int:
    test = int(dataset.split_sizes.get("test", 0))
    return min(test, max_examples) if max_examples else test


def _start(model: Model, dataset: Dataset) -> tuple[Variant, bool, str]:
    """The variant the recipe starts from, whether it must be fine-tuned first, and why."""
    from jobs.runtimes.torch_runtime import is_plain_fp32

    labels = list(dataset.labels)
    root = catalog.root_variant(model.id)
    if classifies(root, labels):
        return root, False, f"{model.name} already classifies {dataset.name}'s labels, so it is the baseline as it is"
    latest = catalog.latest_evaluations()
    tuned = [v for v in catalog.list_variants(model.id)
             if v.dataset_id == dataset.id and (v.recipe.get("steps") or [{}])[-1].get("kind") == "finetune"
             and classifies(v, labels) and is_plain_fp32(v)]
    if tuned:
        best = max(tuned, key=lambda v: (latest[v.id].accuracy if v.id in latest else -1.0, v.id))
        accuracy = f" ({latest[best.id].accuracy:.1%})" if best.id in latest else ""
        return best, False, (f"variant #{best.id}{accuracy} is {model.name} already fine-tuned on {dataset.name}, so the "
                             "recipe starts from it instead of fine-tuning again")
    if root.runtime != "pytorch":
        raise InvalidInput(f"{model.name} has no classification head for {dataset.name}'s labels and is a "
                           f"{root.runtime} model: only PyTorch models can be fine-tuned here")
    have = head_labels(root)
    what = (f"its head predicts {', '.join(have)}" if have else "it has no classification head")
    return root, True, (f"{model.name} cannot classify {dataset.name} yet ({what}; the dataset has "
                        f"{len(labels)} labels: {', '.join(labels)})")


def _baseline_latency(model_id: int, goal: Goal, detected: str) -> tuple[float, int, int | None] | None:
    """The newest sound p95 of a PyTorch fp32 variant of this model at the goal's cell, measured here (ms, variant
    id, job id): a full benchmark's stable cell on a quiet machine."""
    if goal.target != detected:
        return None
    fp = _fingerprint_here("cuda" if goal.target == "nvidia-gpu" else "cpu")
    if fp is None:
        return None
    from jobs.decisions.advice import sound_cell
    from jobs.decisions.compare import Rules

    rules = Rules.from_settings()
    variants = {v.id: v for v in catalog.list_variants(model_id)}
    rows = [m for m in catalog.list_measurements(variant_ids=list(variants), fingerprint_hash=fp)
            if (m.batch_size, m.seq_len) == (goal.batch_size, goal.cell_seq) and sound_cell(m, rules)
            and (variants[m.variant_id].runtime, variants[m.variant_id].precision) == ("pytorch", "fp32")]
    return (rows[-1].p95_ms, rows[-1].variant_id, rows[-1].job_id) if rows else None


def _choose(goal: Goal, detected: str, start: Variant) -> tuple[_Option, float, str, list[str]]:
    """The precision option for the target: the best measured here where measured, else the best reference figure.

    Returns the option, its expected speedup over PyTorch fp32, the reason, and notes (options left out).
    """
    from jobs.runner.registry import all_kinds

    measured_batch, measured = _measured(goal.target, detected, goal.batch_size)
    unavailable = {k.name: k.availability()[1] for k in all_kinds() if not k.availability()[0]}
    onnx_start = start.runtime == "onnxruntime"
    options, notes = [], []
    for option in OPTIONS[goal.target]:
        if option.key == "tensorrt fp16" and "build-tensorrt" in unavailable:
            notes.append(f"TensorRT fp16 would be the first choice on a GPU, but build-tensorrt is "
                         f"{unavailable['build-tensorrt']}: PyTorch fp16 instead")
        elif not onnx_start or option.key in ("onnxruntime int8", "tensorrt fp16"):  # an ONNX start stays ONNX
            options.append(option)
    if not options:
        raise InvalidInput(f"no recipe for an ONNX model on {goal.target}: start from the PyTorch model instead")
    def expected(o: _Option) -> float:
        return measured[o.key].ratio if o.key in measured else o.prior

    chosen = max(options, key=expected)  # the first of equals: the usual choice
    reason = chosen.fact
    here = [f"{_speed_name(o.key)} {measured[o.key].cite()}" for o in options if o.key in measured]
    if here:
        reason += f"; measured on this machine at batch {measured_batch} vs PyTorch fp32: {', '.join(here)}"
        if chosen is not options[0]:
            reason += f", so {_speed_name(chosen.key)} is chosen over the usual {_speed_name(options[0].key)}"
    elif goal.target == detected:
        reason += "; nothing is measured on this machine yet, so this is the reference figure"
    else:
        reason += f"; this machine is {detected}, so its measurements do not apply to {goal.target}"
    return chosen, expected(chosen), reason, notes


def _required_speedup(goal: Goal, model: Model, detected: str) -> tuple[float | None, list[str]]:
    """The speed-up the goal needs: the one asked for, or what the SLO needs over a baseline measured here."""
    if not goal.slo_ms:
        return goal.speedup, []
    base = _baseline_latency(model.id, goal, detected)
    if base is None:
        return goal.speedup, [f"no PyTorch fp32 latency of {model.name} is measured here at batch {goal.batch_size} x "
                              f"{goal.seq_len} yet: the benchmark step tells whether the {goal.slo_ms:g} ms SLO is met"]
    need = base[0] / goal.slo_ms
    return max(goal.speedup or 0.0, need), [
        f"measured here: PyTorch fp32 (variant #{base[1]}, job {base[2]}) p95 {base[0]:.2f} ms at batch {goal.batch_size} x "
        f"{goal.seq_len}, so a {goal.slo_ms:g} ms SLO needs about {need:.1f}x"]


def _distill_reason(goal: Goal, required: float | None, expected: float, chosen: _Option) -> str | None:
    """Why a half-depth student is worth distilling, or None when the precision step alone should do."""
    if required is not None and required > expected:
        wanted = (f"A {required:.1f}x speed-up is more than {_speed_name(chosen.key)} alone is expected to give "
                  f"(about {expected:.1f}x)")
    elif required is None and goal.max_drop_points >= DISTILL_WHEN_FASTEST_AND_DROP:
        wanted = f"'As fast as possible' with {goal.max_drop_points:g} points to spare leaves room for a smaller model"
    else:
        return None
    return (f"{wanted}, so a student with every other layer (about {DISTILL_GAIN:.1f}x less work) is distilled from "
            f"the variant before it; if it loses more than {goal.max_drop_points:g} points the recommendation stays "
            "with the full-depth variant.")


def recommend(model: int | str, dataset: int | str, goal: Goal, *, quick: bool = False) -> Recipe:
    """The recipe for this model, dataset and goal: ordered steps with their defaults and one reason each.

    Rules: no head for the dataset's labels → fine-tune first (or start from a fine-tuned variant already here);
    then the target's precision step (AMX: bf16; VNNI: fused ONNX → dynamic int8; AVX2: ONNX int8; GPU: ONNX →
    TensorRT fp16, else PyTorch fp16), replaced by another option of the target when this machine measured it
    faster; a half-depth student when the goal needs more speed than that step gives; a closing benchmark.
    `quick` uses small samples and short benchmark cells (a first look in minutes).
    """
    from jobs.runner.registry import get_kind

    model_entity, dataset_entity = catalog.get_model(model), catalog.get_dataset(dataset)
    info = detect()
    detected = detected_target(info)
    start, finetune, start_why = _start(model_entity, dataset_entity)
    if start.runtime not in ("pytorch", "onnxruntime") or start.precision != "fp32":
        raise InvalidInput(f"variant #{start.id} is {start.runtime} {start.precision}: the wizard starts from an fp32 "
                           "PyTorch or ONNX model")
    chosen, expected, reason, notes = _choose(goal, detected, start)
    required, slo_notes = _required_speedup(goal, model_entity, detected)
    notes += slo_notes
    distill_why = _distill_reason(goal, required, expected, chosen) if start.runtime == "pytorch" else None
    if distill_why is not None:
        if required is not None and required > expected * DISTILL_GAIN:
            notes.append(f"even a half-depth student is expected to give about {expected * DISTILL_GAIN:.1f}x, short of "
                         f"{required:.1f}x: the comparison will say how close it gets")
        expected *= DISTILL_GAIN
    steps: list[RecipeStep] = []

    def add(kind: str, params: dict[str, Any], why: str) -> None:
        steps.append(RecipeStep(kind, {**get_kind(kind).quick_params, **params} if quick else params, why))

    if finetune:
        training = " with bf16 autocast (this machine has AMX)" if detected == "cpu-amx" else ""
        add("finetune", {}, f"{start_why}, so it is fine-tuned first (full; epochs, batch size and learning rate auto by "
                            f"dataset size{training}); the fine-tuned fp32 variant is the baseline.")
    precision_steps = _option_steps(chosen.key, goal, _fusion_ok(start), start.runtime)
    fused = any(params.get("fusion") for kind, params in precision_steps if kind == "export-onnx")
    precision_why = {
        "export-onnx": "ONNX Runtime and TensorRT take an ONNX graph; it is checked against PyTorch's logits"
                       + ("; fusion merges attention, LayerNorm and GELU into single kernels." if fused else "."),
        "quantize": f"Target {goal.target}: {reason}.",
        "build-tensorrt": f"Target {goal.target}: {reason}; the engine is tuned for batch {goal.batch_size} x "
                          f"{goal.seq_len} tokens.",
    }

    def add_precision(for_student: bool) -> None:
        for kind, params in precision_steps:
            why = precision_why[kind]
            add(kind, dict(params), f"The same for the student. {why}" if for_student else why)

    if distill_why is not None and goal.target == "nvidia-gpu":  # a GPU engine cannot teach on a CPU worker
        add("distill", {"student": "half-layers"}, distill_why)
        add_precision(False)
    else:
        add_precision(False)
        if distill_why is not None:
            add("distill", {"student": "half-layers"}, distill_why)
            add_precision(True)

    device = "cuda" if goal.target == "nvidia-gpu" else "cpu"
    if device == "cuda":
        where = "this machine's GPU" if detected == "nvidia-gpu" else "a GPU worker"
    else:
        where = "this machine's CPU" + ("" if goal.target == detected else f" ({detected}, not {goal.target})")
        if goal.target != detected:
            notes.append(f"this machine is {detected}, not {goal.target}: the benchmark measures this machine; run the "
                         f"benchmark again on {goal.target} hardware before deciding")
    slo = f" and p95 within {goal.slo_ms:g} ms" if goal.slo_ms else ""
    cell = {"traffic": "real"} if goal.traffic == "real" else {"seq_lens": [goal.seq_len]}
    add("benchmark", {"compare_with_lineage": True, "batch_sizes": [goal.batch_size], **cell,
                      **({"device": "cuda"} if device == "cuda" else {})},
        f"Measures the baseline and every variant the recipe makes, interleaved in one job on {where} at "
        f"{cell_label(goal.batch_size, goal.cell_seq, tokens=True)}, so the comparison can pick the fastest within "
        f"{goal.max_drop_points:g} accuracy points{slo}.")
    if device == "cuda" and not any("cuda" in w.devices for w in queue.live_workers(settings.get("WORKBENCH_STALE_AFTER_S"))):
        notes.append("no worker with a GPU is running: the GPU steps wait until one starts (`workbench worker` on a "
                     "GPU machine)")

    evaluation = {"max_examples": 0, **(get_kind("evaluate").quick_params if quick else {}),
                  "tolerance_points": goal.max_drop_points}
    count = _evaluation_count(dataset_entity, evaluation["max_examples"])
    evaluate_start = not finetune and not any(
        ev.dataset_id == dataset_entity.id and ev.num_examples == count for ev in catalog.list_evaluations(start.id))
    if not finetune:
        notes.insert(0, start_why)
    return Recipe(
        model_id=model_entity.id, model_name=model_entity.name, dataset_id=dataset_entity.id,
        dataset_name=dataset_entity.name, start_variant_id=start.id, goal=goal, steps=tuple(steps),
        evaluation=evaluation, evaluate_start=evaluate_start,
        baseline="the fine-tuned fp32 variant (step 1)" if finetune else f"#{start.id} {start.name}",
        expected_speedup=round(expected, 2), hardware=hardware_line(info), notes=tuple(notes), quick=quick,
    )


def edit(recipe: Recipe, steps: list[dict[str, Any]], evaluation: dict[str, Any] | None = None) -> Recipe:
    """The recipe with steps as the user edited them ([{"kind", "params"}]), checked as a pipeline first.

    A step that keeps its kind at its place keeps its reason; any other says it was the user's choice.
    """
    if not isinstance(steps, list) or not all(isinstance(s, dict) and isinstance(s.get("kind"), str) for s in steps):
        raise InvalidInput('steps must be a list of {"kind": ..., "params": {...}} objects')
    edited = []
    for index, step in enumerate(steps):
        params = step.get("params") or {}
        if not isinstance(params, dict):
            raise InvalidInput(f"step {index + 1} ({step['kind']}): params must be a JSON object")
        old = recipe.steps[index] if index < len(recipe.steps) else None
        why = old.why if old is not None and old.kind == step["kind"] else "Added or changed by you."
        edited.append(RecipeStep(step["kind"], dict(params), why))
    if evaluation is not None and not isinstance(evaluation, dict):
        raise InvalidInput("evaluation must be a JSON object, e.g. {\"max_examples\": 64}")
    result = dataclasses.replace(recipe, steps=tuple(edited),
                                 evaluation={**recipe.evaluation, **(evaluation or {})})
    check(result)
    return result


def check(recipe: Recipe) -> None:
    """Everything a launch checks, without queueing (params, availability, runtime chain, evaluation params)."""
    check_pipeline(recipe.pipeline_steps(), variant=recipe.start_variant_id, dataset=recipe.dataset_id)
    _evaluation_params(recipe.evaluation)


def _evaluation_params(evaluation: dict[str, Any]) -> dict[str, Any]:
    from jobs.runner.submit import check_evaluation_params

    return check_evaluation_params(evaluation) or {}


# ---- launch and progress ---------------------------------------------------------------------------------------


def launch(recipe: Recipe) -> Launched:
    """Queue the recipe as one pipeline, and the baseline's evaluation with it, in one transaction."""
    from jobs.kinds.evaluate import EVALUATION_PRIORITY

    evaluation = _evaluation_params(recipe.evaluation)
    with session_scope() as s:
        jobs = submit_pipeline(recipe.pipeline_steps(), variant=recipe.start_variant_id, dataset=recipe.dataset_id,
                               evaluation=evaluation, session=s)
        if recipe.evaluate_start:
            jobs.append(queue.enqueue(
                "evaluate", evaluation, device="cpu", model_id=recipe.model_id, variant_id=recipe.start_variant_id,
                dataset_id=recipe.dataset_id, pipeline=jobs[0].pipeline, priority=EVALUATION_PRIORITY,
                max_attempts=settings.get("WORKBENCH_MAX_ATTEMPTS"), session=s))
    return Launched(jobs[0].pipeline, [j.id for j in jobs], recipe.goal)


def remeasure(pipeline: str) -> int:
    """Queue a full benchmark of what a run's last benchmark measured (the default stop rule, not the quick
    trial's), in the same run, so its verdict can be made again from sound cells. Returns the new job's id."""
    jobs = queue.pipeline_jobs(pipeline)
    bench = next((j for j in reversed(jobs) if j.kind == "benchmark"), None)
    if bench is None:
        raise InvalidInput(f"run {pipeline} has no benchmark to repeat")
    if not all(j.status.finished for j in jobs):
        raise InvalidInput(f"run {pipeline} is still running: re-measure once it is done")
    if bench.status.value != "succeeded":
        raise InvalidInput(f"the benchmark of run {pipeline} (job {bench.id}) {bench.status.value}: see its log")
    from jobs.runner.registry import get_kind

    quick_only = set(get_kind("benchmark").quick_params)
    params = {k: v for k, v in bench.params.items() if k not in quick_only}
    job = queue.enqueue("benchmark", params, device=bench.device, model_id=bench.model_id,
                        variant_id=bench.variant_id, dataset_id=bench.dataset_id, depends_on_id=bench.id,
                        pipeline=pipeline, max_attempts=bench.max_attempts)
    return job.id


def _yields_variant(kind: str) -> bool:
    from jobs.runner.registry import get_kind

    try:
        return get_kind(kind).output_runtime is not None
    except InvalidInput:
        return False


def _progress_weight(kind: str) -> float:
    from jobs.runner.registry import get_kind

    try:
        return get_kind(kind).progress_weight
    except InvalidInput:  # a kind no longer installed counts as an ordinary step
        return 1.0


def progress(pipeline: str, goal: Goal | None = None) -> Progress:
    """Where a wizard run is: one fraction over all its jobs, a line per job, and the outcome once done.

    Without `goal`, the tolerance comes from the evaluations' settings and the cell from the benchmark's params
    (no SLO).
    """
    jobs = queue.pipeline_jobs(pipeline)
    if not jobs:
        raise InvalidInput(f"no wizard run or pipeline {pipeline!r}")
    steps = [j for j in jobs if j.kind != "evaluate" or j.depends_on_id is not None]
    evaluations = [j for j in jobs if j not in steps]
    made = {j.produced_variant_id: n for n, j in enumerate(steps, start=1) if j.produced_variant_id}
    lines = [JobLine(j.id, j.kind, "step", n, j.status.value, 1.0 if j.status.finished else j.progress, j.message,
                     j.produced_variant_id) for n, j in enumerate(steps, start=1)]
    for ev in evaluations:
        lines.append(JobLine(ev.id, ev.kind, "evaluation", made.get(ev.variant_id), ev.status.value,
                             1.0 if ev.status.finished else ev.progress, ev.message, ev.variant_id,
                             ev.result.get("accuracy") if ev.status.value == "succeeded" else None))
    # Evaluations not queued yet (their variant is not made yet) still count, so the bar never runs backwards.
    expected_evals = sum(_yields_variant(j.kind) for j in steps) + sum(1 for e in evaluations if e.variant_id not in made)
    pending = max(0, expected_evals - len(evaluations))
    weight = sum(_progress_weight(j.kind) for j in jobs) + pending * _progress_weight("evaluate")
    fraction = sum(_progress_weight(line.kind) * line.progress for line in lines) / weight if weight else 0.0
    failed_step = next((j for j in steps if j.status.value in ("failed", "cancelled")), None)
    # A step's evaluation is queued in the transaction that finishes the step: once nothing is left to run, every
    # evaluation there will be has run too.
    done = all(j.status.finished for j in jobs)
    if failed_step is not None:
        number = steps.index(failed_step) + 1
        message = f"step {number} ({failed_step.kind}) {failed_step.status.value}: {failed_step.message}"
    elif done:
        message = "done"
    else:
        active = next((j for j in jobs if j.status.value == "running"), None)
        if active is None:
            message = "queued: waiting for a worker"
            if not queue.live_workers(settings.get("WORKBENCH_STALE_AFTER_S")):
                message += " (none is running: start one with `workbench worker`)"
        elif active.kind == "evaluate":
            message = f"evaluating variant #{active.variant_id}: {active.message}"
        else:
            message = f"step {steps.index(active) + 1} of {len(steps)} ({active.kind}): {active.message}"
    outcome = None
    if done and failed_step is None:
        outcome = _outcome(steps, goal)
        fraction = 1.0
    return Progress(pipeline, round(min(fraction, 1.0), 4), lines, done, failed_step is not None, message, outcome)


def _goal_of(steps: list[Job], bench: Job | None) -> Goal:
    """The goal a run was launched with, as far as its jobs tell (tolerance, cell, device); no SLO."""
    tolerance = next((j.evaluation.get("tolerance_points") for j in steps if j.evaluation), 1.0)
    params = bench.params if bench is not None else {}
    target = "nvidia-gpu" if params.get("device") == "cuda" else detected_target()
    return Goal(target=target, max_drop_points=float(tolerance),
                batch_size=int((params.get("batch_sizes") or [1])[0]), seq_len=int((params.get("seq_lens") or [128])[0]),
                traffic="real" if params.get("traffic") == "real" else "grid")


def _baseline_of(final: Variant, measured: set[int]) -> Variant | None:
    """The first plain fp32 PyTorch variant on the final variant's lineage that the benchmark measured."""
    return next((v for v in lineage(final) if v.id in measured and (v.runtime, v.precision) == ("pytorch", "fp32")), None)


def _outcome(steps: list[Job], goal: Goal | None) -> Outcome:
    bench = next((j for j in reversed(steps) if j.kind == "benchmark"), None)
    goal = goal or _goal_of(steps, bench)
    final_id = next((j.produced_variant_id for j in reversed(steps) if j.produced_variant_id), None)
    if bench is None or bench.status.value != "succeeded" or not bench.result.get("variants"):
        return Outcome(final_id, None, final_id, None, None, None, False, goal=goal)  # no benchmark: nothing compared
    measured = set(bench.result["variants"])
    final = catalog.get_variant(bench.variant_id) if bench.variant_id else None
    baseline = _baseline_of(final, measured) if final else None
    comparison = build_comparison(bench.dataset_id, bench.result.get("fingerprint_hash"), run=bench.id)
    rows = [r for r in comparison.rows if r["variant_id"] in measured]
    cells = sorted({(r["batch_size"], r["seq_len"]) for r in rows})
    if not cells:
        return Outcome(None, baseline.id if baseline else None, final_id, None, None, None, False,
                       benchmark_job=bench.id, goal=goal)  # the benchmark ran but stored no measurements
    batch, seq = (goal.batch_size, goal.cell_seq) if (goal.batch_size, goal.cell_seq) in cells else cells[0]
    decision = decide(rows, batch, seq, baseline.id if baseline else None, goal.slo_ms, goal.max_drop_points)
    recommended = decision.sweet
    misses_slo = False
    if recommended is None and goal.slo_ms and decision.candidates and decision.baseline is not None \
            and not decision.baseline.degenerate:  # nothing meets the SLO: the fastest within the tolerance, said so
        recommended = sweet_spot(decision.candidates, decision.baseline.accuracy, goal.max_drop_points, None)
        misses_slo = recommended is not None
    decision = dataclasses.replace(decision, sweet=recommended,  # what the charts highlight and the table stars
                                   undecided=None if recommended else decision.undecided)
    fp = comparison.fingerprint.hash if comparison.fingerprint else None
    if recommended is None:
        return Outcome(None, decision.baseline.variant_id if decision.baseline else None, final_id, decision, None,
                       None, False, fp, decision.undecided, bench.id, goal)
    ratio, drop, met, reach = _verdict(decision, recommended, goal, misses_slo)
    return Outcome(recommended.variant_id, decision.baseline.variant_id if decision.baseline else None, final_id,
                   decision, ratio, drop, met, fp, None, bench.id, goal, reach, misses_slo)


def _verdict(decision: Decision, rec: Point | None, goal: Goal,
             misses_slo: bool) -> tuple[float | None, float | None, bool, SpeedupGoal | None]:
    """Speedup, accuracy points lost, whether the goal is met, and how the speedup meets goal.speedup."""
    base = decision.baseline
    if rec is None or base is None:
        return None, None, False, None
    interval = decision.ratios[rec.variant_id]
    ratio = interval["speedup"]
    drop = (base.accuracy - rec.accuracy) * 100 if base.accuracy is not None and rec.accuracy is not None else None
    reach: SpeedupGoal | None = None
    if goal.speedup:
        if ratio < goal.speedup:
            reach = "short"
        elif interval.get("low", ratio) < goal.speedup:
            reach = "median only"
        else:
            reach = "met"
    met = reach != "short" and not (goal.slo_ms and misses_slo)
    return ratio, drop, met, reach



# ---- reopening a run ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WizardRun:
    """A wizard run as the list of recent runs shows it (to reopen it after a page reload)."""

    pipeline: str
    created_at: Any  # datetime (UTC) of its first job
    model_name: str | None
    dataset_name: str | None
    kinds: tuple[str, ...]  # its steps, in order
    state: str  # "queued", "running", "done" or "failed" (a step failed or was cancelled)
    steps_done: int


def _is_wizard_benchmark(job: Job) -> bool:
    """The closing step of a wizard run: a pipeline step benchmarking the variant against its lineage."""
    return bool(job.pipeline and job.depends_on_id is not None and job.params.get("compare_with_lineage"))


def recent_runs(limit: int = 10) -> list[WizardRun]:
    """The newest wizard runs first: the pipelines whose last step benchmarks against the lineage (as `launch`
    queues them; a pipeline submitted by hand the same way is listed too)."""
    pipelines: list[str] = []
    for job in queue.list_jobs(kind="benchmark", limit=max(limit * 5, 50)):
        if _is_wizard_benchmark(job) and job.pipeline not in pipelines:
            pipelines.append(job.pipeline)
    runs = []
    for pipeline in pipelines[:limit]:
        jobs = queue.pipeline_jobs(pipeline)
        steps = [j for j in jobs if j.kind != "evaluate" or j.depends_on_id is not None]
        if not steps or not _is_wizard_benchmark(steps[-1]):
            continue
        first = steps[0]
        if any(j.status.value in ("failed", "cancelled") for j in steps):
            state = "failed"
        elif all(j.status.finished for j in jobs):
            state = "done"
        elif any(j.status.value != "queued" for j in jobs):
            state = "running"
        else:
            state = "queued"
        runs.append(WizardRun(pipeline, first.created_at, _name_of(catalog.get_model, first.model_id),
                              _name_of(catalog.get_dataset, first.dataset_id), tuple(j.kind for j in steps), state,
                              sum(j.status.value == "succeeded" for j in steps)))
    return runs


def _name_of(get, ref: int | None) -> str | None:
    from storage.errors import NotFound

    if ref is None:
        return None
    try:
        return get(ref).name
    except NotFound:  # deleted since
        return None
