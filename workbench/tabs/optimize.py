"""Optimize tab: pick a variant and a job kind, fill the kind's own form, launch one job or a pipeline of steps.

The form is drawn from `api.job_kinds()` (one field per parameter), so a new kind needs no change here.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from jobs import api
from storage.errors import WorkbenchError
from workbench import roles
from workbench.choices import NONE, named_choices, variant_choices
from workbench.ui import WARNING, Refresh, attempt, esc, fail, ok

FIELDS_PER_ROW = 3
NO_STEPS = "*No steps yet: pick a job kind, set its parameters and click **Add step to pipeline**.*"


def step_kinds() -> list[dict[str, Any]]:
    """Kinds to launch from a variant, benchmark included; evaluate and inspect are queued for you."""
    return [k for k in api.job_kinds() if k["pipeline_step"]]


def _kind_info(name: str | None) -> dict[str, Any] | None:
    return next((k for k in api.job_kinds() if k["name"] == name), None)


def _variant_choices():
    return variant_choices(api.list_variants())


def _dataset_choices():
    return [NONE] + named_choices(api.list_datasets())


def _kind_choices(kinds: list[dict[str, Any]], unavailable: dict[str, str]):
    return [(k["name"] + ("  (unavailable here)" if k["name"] in unavailable else ""), k["name"]) for k in kinds]


def kind_note(name: str | None) -> str:
    """The kind's summary, what it needs, and a warning when this installation cannot run it."""
    info = _kind_info(name)
    if info is None:
        return "<div class='kind-note'>Pick a job kind.</div>"
    needs = " and a dataset" if info["needs_dataset"] else ""
    yields = "" if info.get("yields_variant", True) else "; yields no variant, so in a pipeline it is the last step"
    note = (f"<div class='kind-note'><b>{esc(info['name'])}</b>: {esc(info['summary'])}. "
            f"<span class='kind-needs'>Takes a variant{needs}; runs on {esc(info['device'])}{yields}.</span></div>")
    reason = api.kind_availability().get(info["name"])
    if reason:
        note += (f"<div class='kind-unavailable' id='kind-unavailable'>{WARNING} {esc(info['name'])} is "
                 f"{esc(reason)}</div>")
    return note


# ---- values from the form ------------------------------------------------------------------------------------


def _is_list_type(type_name: str) -> bool:
    return type_name.startswith(("tuple", "list"))


def _is_int_type(type_name: str) -> bool:
    return type_name.split("|")[0].strip() == "int"


def form_values(specs: list[dict[str, Any]], values: tuple) -> dict[str, Any]:
    """What the rendered components hold, as the JSON-like dict the core parses (and checks)."""
    params: dict[str, Any] = {}
    for spec, value in zip(specs, values, strict=True):
        t = spec["type"]
        if value is None:
            continue  # a cleared number: the core's default applies
        if _is_list_type(t):
            value = [item.strip() for item in str(value).split(",") if item.strip()]
        elif _is_int_type(t) and isinstance(value, float) and value.is_integer():
            value = int(value)
        params[spec["name"]] = value
    return params


def _same(value: Any, default: Any) -> bool:
    if isinstance(value, (list, tuple)) or isinstance(default, (list, tuple)):
        return list(value or []) == list(default or [])
    return value == default


def changed_params(kind: str, params: dict[str, Any]) -> dict[str, Any]:
    info = _kind_info(kind)
    defaults = {p["name"]: p["default"] for p in info["params"]} if info else {}
    return {k: v for k, v in params.items() if k not in defaults or not _same(v, defaults[k])}


def _format_value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value)) or "(none)"
    return str(value).lower() if isinstance(value, bool) else str(value)


def step_label(step: dict[str, Any]) -> str:
    """'finetune (epochs=1, max_train_examples=64)': only the parameters that differ from the defaults."""
    changed = changed_params(step["kind"], step["params"])
    args = ", ".join(f"{k}={_format_value(v)}" for k, v in changed.items())
    return step["kind"] + (f" ({args})" if args else "")


def pipeline_text(steps: list[dict[str, Any]]) -> str:
    if not steps:
        return NO_STEPS
    chain = " → ".join(f"{i}\\. **{esc(step_label(s))}**" for i, s in enumerate(steps, start=1))
    return f"{chain}\n\nEach step takes the variant the step before it yields; the first takes *Start from*."


def explain_text(kind: str | None, params: dict[str, Any], dataset: str | None) -> str:
    """'epochs: auto → 3 (30,526 training examples)' for each parameter left on auto (0), or why not."""
    if not kind:
        return ""
    info = _kind_info(kind)
    try:
        explained = api.explain_defaults(kind, params, dataset or None)
    except WorkbenchError as exc:
        return fail(str(exc))
    advice = "".join(f"\n- ⚙ {esc(note)}" for note in api.hardware_advice(kind, params))
    advice = f"\n\n**Hardware advice:**{advice}" if advice else ""
    if explained:
        lines = "\n".join(f"- {esc(name)}: auto → {esc(text)}" for name, text in explained.items())
        return f"**Parameters left on auto (0) become:**\n{lines}{advice}"
    if not dataset and info and info["needs_dataset"]:
        return "*Pick a dataset to see what the parameters left on auto (0) become.*" + advice
    return advice.strip()


def _evaluation(examples: float | None, tolerance: float | None) -> dict[str, Any]:
    return {
        "max_examples": int(examples) if examples is not None else 0,
        "tolerance_points": float(tolerance) if tolerance is not None else 1.0,
    }


def launch_job(kind: str | None, params: dict[str, Any], start: str | None, dataset: str | None,
               examples: float | None, tolerance: float | None) -> str:
    if not kind:
        return fail("pick a job kind")
    if not start:
        return fail("pick a variant to start from")

    def action() -> str:
        job = api.submit(kind, params, variant=start, dataset=dataset or None, evaluation=_evaluation(examples, tolerance))
        info = _kind_info(job.kind) or {}
        where = ("its variant appears in the Variants tab" if info.get("yields_variant", True)
                 else "it yields no variant: its result is in the Jobs tab, measurements in the Compare tab")
        return f"queued job {job.id} ({job.kind}) — follow it in the Jobs tab; {where}"

    return attempt(action)


def add_step(steps: list[dict[str, Any]], kind: str | None, params: dict[str, Any], start: str | None,
             dataset: str | None):
    """Append a step once the pipeline with it passes the core's dry run (params, availability, runtime chain)."""
    if not kind:
        return steps, pipeline_text(steps), fail("pick a job kind")
    candidate = [*steps, {"kind": kind, "params": params}]
    try:
        api.check_pipeline([api.Step(s["kind"], s["params"]) for s in candidate], variant=start or None,
                           dataset=dataset or None)
    except WorkbenchError as exc:
        return steps, pipeline_text(steps), fail(str(exc))
    steps = candidate
    return steps, pipeline_text(steps), ok(f"added step {len(steps)}: {step_label(steps[-1])}")


def launch_pipeline(steps: list[dict[str, Any]], start: str | None, dataset: str | None,
                    examples: float | None, tolerance: float | None) -> str:
    if not steps:
        return fail("the pipeline has no steps yet: add at least one with **Add step to pipeline**")
    if not start:
        return fail("pick a variant to start from")

    def action() -> str:
        jobs = api.submit_pipeline(
            [api.Step(s["kind"], s["params"]) for s in steps], variant=start, dataset=dataset or None,
            evaluation=_evaluation(examples, tolerance),
        )
        ids = ", ".join(str(j.id) for j in jobs)
        return (f"queued pipeline {jobs[0].pipeline}: jobs {ids} — follow them in the Jobs tab; "
                "variants appear in the Variants tab")

    return attempt(action)


# ---- the form ------------------------------------------------------------------------------------------------


def param_component(kind: str, spec: dict[str, Any]):
    """One input for one parameter, chosen by its type; elem_id param-<kind>-<name>."""
    name, t, default = spec["name"], spec["type"], spec["default"]
    common = {"label": name, "info": spec.get("help") or None, "elem_id": f"param-{kind}-{name}", "interactive": True}
    if spec.get("choices"):
        return gr.Dropdown(choices=list(spec["choices"]), value=default, **common)
    if t == "bool":
        return gr.Checkbox(value=bool(default), **common)
    if _is_list_type(t):
        return gr.Textbox(value=", ".join(map(str, default or [])), placeholder="comma-separated", **common)
    if _is_int_type(t):
        return gr.Number(value=default, precision=0, **common)
    if t.split("|")[0].strip() == "float":
        return gr.Number(value=default, **common)
    return gr.Textbox(value="" if default is None else str(default), **common)


def build() -> Refresh:
    kinds = step_kinds()
    unavailable = api.kind_availability()
    first = next((k["name"] for k in kinds if k["name"] == "finetune"), kinds[0]["name"] if kinds else None)

    gr.Markdown(
        "Start from a variant, pick what to do to it and set the parameters, then **launch it alone** or "
        "**add it as a step** of a pipeline (e.g. finetune → export-onnx → quantize). Every variant a job yields "
        "is evaluated against its parent; see them in **Variants**."
    )
    with gr.Row():
        start = gr.Dropdown(label="Start from", choices=[], interactive=True, scale=3, elem_id="start-variant",
                            info="the variant the job, or the pipeline's first step, works on")
        dataset = gr.Dropdown(label="Dataset", choices=[("(none)", "")], value="", interactive=True, scale=2,
                              elem_id="optimize-dataset", info="for training, calibration and evaluation")
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            kind = gr.Dropdown(label="Job kind", choices=_kind_choices(kinds, unavailable), value=first,
                               interactive=True, elem_id="job-kind")
            note = gr.HTML(kind_note(first), elem_id="kind-note")
            # The parameter form, drawn again whenever the kind changes. Its handlers read components
            # created further down; they are bound by the time the form is first drawn (on page load).
            @gr.render(inputs=[kind])
            def form(kind_name: str | None):
                info = _kind_info(kind_name)
                if info is None:
                    gr.Markdown("*Pick a job kind to see its parameters.*")
                    specs, components = [], []
                else:
                    specs = info["params"]
                    components = []
                    if not specs:
                        gr.Markdown(f"*{kind_name} has no parameters.*")
                    for i in range(0, len(specs), FIELDS_PER_ROW):
                        with gr.Row():
                            components += [param_component(kind_name, s) for s in specs[i:i + FIELDS_PER_ROW]]

                # Handlers live here so that they read this kind's components; a re-render replaces them.
                def values(*raw):
                    return form_values(specs, raw)

                # Writes (and the pipeline builder that leads to one): refused on the server for viewers.
                @roles.editor_only("launch a job")
                def launch_one_job(s, d, n, t, *raw):
                    return launch_job(kind_name, values(*raw), s, d, n, t)

                @roles.editor_only("build a pipeline")
                def add_pipeline_step(st, s, d, *raw):
                    return add_step(st, kind_name, values(*raw), s, d)

                launch.click(launch_one_job, [start, dataset, examples, tolerance, *components], status)
                add.click(add_pipeline_step, [steps, start, dataset, *components], [steps, pipeline_md, status])
                gr.on(
                    [dataset.change, *(c.change for c in components)],
                    lambda d, *raw: explain_text(kind_name, values(*raw), d),
                    [dataset, *components], explain, show_progress="hidden",
                )

            explain = gr.Markdown(elem_id="auto-defaults")
        # Actions and their outcome stay together at the top, however long the form is.
        with gr.Column(scale=2):
            with gr.Group():
                gr.Markdown("#### Evaluation of each new variant", padding=True)
                examples = gr.Number(label="Evaluation examples (0 = whole test split)", value=0, precision=0,
                                     minimum=0, elem_id="eval-examples")
                tolerance = gr.Number(label="Accuracy tolerance (points)", value=1.0, minimum=0, elem_id="eval-tolerance",
                                      info="flag a variant whose accuracy is more than this below its parent's")
            with gr.Row():
                launch = gr.Button("Launch job", variant="primary", elem_id="launch-job")
                add = gr.Button("Add step to pipeline", elem_id="add-step")
            gr.Markdown("#### Pipeline")
            pipeline_md = gr.Markdown(NO_STEPS, elem_id="pipeline-steps")
            with gr.Row():
                pop = gr.Button("Remove last step", size="sm", elem_id="pop-step")
                clear = gr.Button("Clear pipeline", size="sm", elem_id="clear-pipeline")
            launch_pipe = gr.Button("Launch pipeline", variant="primary", elem_id="launch-pipeline")
            status = gr.Markdown(elem_id="optimize-status")
    steps = gr.State([])

    def pick_kind(name: str | None, d: str | None):
        return kind_note(name), explain_text(name, {}, d)

    kind.change(pick_kind, [kind, dataset], [note, explain], show_progress="hidden")

    def pick_start(ref: str | None, d: str | None):
        """A variant trained on a dataset suggests that dataset."""
        if not ref or d:
            return gr.update()
        try:
            v = api.get_variant(ref)
        except WorkbenchError:
            return gr.update()
        return gr.update(value=str(v.dataset_id)) if v.dataset_id is not None else gr.update()

    start.change(pick_start, [start, dataset], dataset, show_progress="hidden")
    launch_pipe.click(roles.editor_only("launch a pipeline")(launch_pipeline), [steps, start, dataset, examples, tolerance],
                      status)
    pop.click(lambda st: (st[:-1], pipeline_text(st[:-1])), steps, [steps, pipeline_md])
    clear.click(lambda: ([], NO_STEPS, ""), None, [steps, pipeline_md, status])

    def refresh():
        current = step_kinds()
        return (
            gr.update(choices=_variant_choices()),
            gr.update(choices=_dataset_choices()),
            gr.update(choices=_kind_choices(current, api.kind_availability())),
        )

    return Refresh(refresh, [start, dataset, kind])
