"""Wizard tab: the guided path from a constraint ("4x faster, under 1 point lost") to a recommended variant.

Five steps: model, dataset, goal (target hardware detected and editable, accuracy tolerance, latency SLO or
speed-up), the recommended recipe with one reason per step (its parameters editable as JSON), then review and
launch. After launch one progress bar follows every job of the run; when it is done the tab shows the
comparison with the recommended variant highlighted. A run outlives the page: the address gets `?run=<id>` (opened
on load), and any run can be reopened from the list of recent runs or by its id. All the deciding is in
`jobs.decisions.wizard`, through `jobs.api`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Callable

import gradio as gr
import pandas as pd

from jobs import api
from storage.errors import WorkbenchError
from workbench import compare_charts, roles
from workbench.choices import named_choices
from workbench.formatting import SWEET_SPOT, decision_table, wizard_summary
from workbench.tabs import wizard_search
from workbench.ui import CANCELLED, FAILED, OK, QUEUED, RUNNING, Refresh, esc, fail, ok

REFRESH_S = 2.0
PRIVATE = dict(api_visibility="private")  # UI events, not API endpoints
STATUS_ICONS = {"queued": QUEUED, "running": RUNNING, "succeeded": OK, "failed": FAILED, "cancelled": CANCELLED}
RUN_ICONS = {"queued": QUEUED, "running": RUNNING, "done": OK, "failed": FAILED}
# Put the followed run in the page's address (so a reload reopens it), or take it out (start over); nothing when the
# launch or the reopening failed (its status line starts with FAILED). It runs in the browser before `in_address`.
SET_URL_JS = """(run, status) => { if (!(status || '').startsWith('""" + FAILED + """')) {
  const url = new URL(window.location.href);
  if (run) { url.searchParams.set('run', run); } else { url.searchParams.delete('run'); }
  window.history.replaceState(window.history.state, '', url); }
  return [run, status]; }"""


@dataclass(frozen=True)
class Followed:
    """The run the tab follows: launched here (with its goal) or reopened (goal None: read back from its jobs)."""

    pipeline: str
    goal: Any = None


# ---- what each step shows ----------------------------------------------------------------------------------------


def _model_choices() -> list[tuple[str, str]]:
    return named_choices(api.list_models())


def _dataset_choices() -> list[tuple[str, str]]:
    return named_choices(api.list_datasets())


def _newest(choices: list[tuple[str, str]], current: str | None) -> str | None:
    """The current choice if it is still there, else the newest (highest id), so the only one is preselected."""
    values = [value for _, value in choices]
    if current and str(current) in values:
        return str(current)
    return max(values, key=int) if values else None


def run_label(run) -> str:
    what = " on ".join(esc(x) for x in (run.model_name, run.dataset_name) if x) or "?"
    when = run.created_at.strftime("%Y-%m-%d %H:%M") if run.created_at else ""
    return (f"{RUN_ICONS.get(run.state, '')} {run.pipeline} · {what} · {' → '.join(run.kinds)} · {run.state} "
            f"({run.steps_done}/{len(run.kinds)}) · {when} UTC")


def _run_choices() -> list[tuple[str, str]]:
    return [(run_label(r), r.pipeline) for r in api.recent_wizard_runs()]


def run_id(text: str | None) -> str:
    """A run id from what was typed or pasted: the id itself, or a link holding `run=<id>`."""
    text = (text or "").strip()
    found = re.search(r"[?&]run=([0-9A-Za-z_-]+)", text)
    return found.group(1) if found else text


def _picked(ref: str | None, get: Callable[[str], Any], tab: str) -> tuple[Any, str | None]:
    """What a dropdown picks, or the line to show instead: where to add one when nothing is picked, or the error."""
    if not ref:
        return None, f"*Add a {tab.lower()[:-1]} in the **{tab}** tab, then pick it here.*"
    try:
        return get(ref), None
    except WorkbenchError as exc:
        return None, fail(str(exc))


def model_text(ref: str | None) -> str:
    model, instead = _picked(ref, api.get_model, "Models")
    if instead is not None:
        return instead
    info = model.info or {}
    facts = [f"**{esc(model.name)}**"]
    if info.get("architecture"):
        facts.append(esc(info["architecture"]))
    if info.get("num_parameters"):
        facts.append(f"{info['num_parameters'] / 1e6:.1f}M parameters")
    if info.get("labels"):
        facts.append(f"classifies {esc(', '.join(map(str, info['labels'])))}")
    elif info.get("task_note"):
        facts.append(esc(info["task_note"]))
    return " · ".join(facts)


def dataset_text(ref: str | None) -> str:
    ds, instead = _picked(ref, api.get_dataset, "Datasets")
    if instead is not None:
        return instead
    sizes = ", ".join(f"{k} {v:,}" for k, v in ds.split_sizes.items())
    return f"**{esc(ds.name)}** · {len(ds.labels)} labels: {esc(', '.join(ds.labels))} · {sizes}"


def _value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value).lower() if isinstance(value, bool) else str(value)


def recipe_html(recipe) -> str:
    """The recipe as a table (step, kind, key parameters, why), with the baseline, expectation and notes."""
    rows = "".join(
        f"<tr data-kind='{esc(s.kind)}'><td>{i}</td><td><b>{esc(s.kind)}</b></td>"
        f"<td><code>{esc(', '.join(f'{k}={_value(v)}' for k, v in s.params.items()) or 'defaults')}</code></td>"
        f"<td>{esc(s.why)}</td></tr>"
        for i, s in enumerate(recipe.steps, start=1))
    head = "<tr><th>#</th><th>job</th><th>key parameters</th><th>why</th></tr>"
    notes = "".join(f"<li>{esc(n)}</li>" for n in recipe.notes)
    expected = f"about {recipe.expected_speedup:g}x" if recipe.expected_speedup else "unknown"
    return (
        f"<div class='wizard-recipe'><p><b>Hardware here:</b> {esc(recipe.hardware)}<br>"
        f"<b>Goal:</b> {esc(recipe.goal.describe())}<br><b>Baseline:</b> {esc(recipe.baseline)} · "
        f"<b>expected speed-up:</b> {expected}</p>"
        f"<table class='wizard-recipe-table' id='wizard-recipe-table'><thead>{head}</thead><tbody>{rows}</tbody></table>"
        + (f"<ul class='wizard-notes'>{notes}</ul>" if notes else "") + "</div>"
    )


def recipe_json(recipe) -> str:
    return json.dumps({"steps": [{"kind": s.kind, "params": s.params} for s in recipe.steps],
                       "evaluation": recipe.evaluation}, indent=2)


def review_text(recipe) -> str:
    chain = " → ".join(f"{i}\\. **{esc(s.kind)}**" for i, s in enumerate(recipe.steps, start=1))
    ev = recipe.evaluation
    examples = f"{ev['max_examples']} test examples" if ev.get("max_examples") else "the whole test split"
    lines = [
        f"**Model** {esc(recipe.model_name)} (from variant #{recipe.start_variant_id}) · **Dataset** "
        f"{esc(recipe.dataset_name)} · **Target** {esc(recipe.goal.target)}",
        f"**Goal:** {esc(recipe.goal.describe())}",
        f"**Steps:** {chain}",
        f"Every new variant is evaluated on {examples} and flagged when it is more than "
        f"{ev.get('tolerance_points', 1.0):g} points below its parent"
        + ("; the baseline is evaluated on the same examples first." if recipe.evaluate_start else "."),
    ]
    if recipe.quick:
        lines.append("⚡ **Quick trial:** small samples and short benchmark cells: the figures are rough.")
    return "\n\n".join(lines)


def progress_html(progress) -> str:
    """One bar for the whole run, then a line per step with the evaluation of what it made."""
    pct = f"{progress.fraction:.0%}"
    evaluations: dict[int | None, list] = {}
    for line in progress.lines:
        if line.role == "evaluation":
            evaluations.setdefault(line.number, []).append(line)

    def evaluation_items(number: int | None) -> str:
        items = []
        for ev in evaluations.get(number, []):
            result = f"accuracy {ev.accuracy:.1%}" if ev.accuracy is not None else esc(ev.message[:120])
            items.append(f"<li data-status='{ev.status}'>{STATUS_ICONS.get(ev.status, '')} evaluation of "
                         f"#{ev.variant_id}: {result}</li>")
        return f"<ul>{''.join(items)}</ul>" if items else ""

    steps = []
    for line in progress.lines:
        if line.role != "step":
            continue
        made = f" → variant #{line.variant_id}" if line.variant_id else ""
        detail = "" if line.status == "succeeded" else f" ({line.progress:.0%}) {esc(line.message[:160])}"
        steps.append(f"<li data-kind='{esc(line.kind)}' data-status='{line.status}'>{STATUS_ICONS.get(line.status, '')} "
                     f"<b>{esc(line.kind)}</b> {line.status}{detail}{made}{evaluation_items(line.number)}</li>")
    baseline = evaluation_items(None)
    state = "failed" if progress.failed else "done" if progress.done else "running"
    return (
        f"<div class='wizard-progress' data-state='{state}' data-pipeline='{esc(progress.pipeline)}'>"
        f"<div><progress max='1' value='{progress.fraction:.3f}' style='width:60%'></progress> "
        f"<b class='wizard-percent'>{pct}</b> · {esc(progress.message[:300])}</div>"
        + (f"<div>Baseline{baseline}</div>" if baseline else "")
        + f"<ol>{''.join(steps)}</ol></div>"
    )


def _hidden():
    """The chart, the table and the re-measure button while there is nothing to show: hidden rather than empty
    placeholders."""
    return (gr.update(value=None, visible=False), gr.update(value=pd.DataFrame(), visible=False),
            gr.update(visible=False))


def outcome_views(progress):
    """Summary, chart and decision table once the run is done (chart and table hidden until they have data)."""
    outcome = progress.outcome
    if progress.failed:
        return fail(f"The run stopped: {esc(progress.message)}. See the **Jobs** tab for the log."), *_hidden()
    if outcome is None:
        return "", *_hidden()
    verdict = esc(wizard_summary(outcome))
    summary = f"### {SWEET_SPOT} {verdict}" if outcome.recommended_id else f"### {verdict}"
    remeasure = gr.update(visible=outcome.undecided is not None)
    if outcome.decision is None:
        return summary, *_hidden()[:2], remeasure
    decision = outcome.decision
    summary += ("\n\nEvery chart, other batch sizes and the report are in the **Compare** tab (same hardware "
                f"fingerprint `{esc(outcome.fingerprint or '')}`, batch {decision.batch_size} x {decision.seq_len}); "
                "each variant's lineage and evaluation are in **Variants**.")
    chart = compare_charts.accuracy_vs_latency(decision.points, decision.front, decision.sweet,
                                               sweet_name="recommended", baseline=decision.baseline)
    return (summary, gr.update(value=chart, visible=True),
            gr.update(value=pd.DataFrame(decision_table(decision)), visible=True), remeasure)


# ---- handlers ----------------------------------------------------------------------------------------------------


def _go(step: int):
    return gr.Walkthrough(selected=step)


def to_dataset(model: str | None):
    if not model:
        return gr.update(), fail("pick a model first")
    return _go(2), ""


def to_goal(dataset: str | None):
    if not dataset:
        return gr.update(), fail("pick a dataset first")
    return _go(3), ""


def to_recipe(model, dataset, target, max_drop, slo, speedup, batch, seq, quick, traffic="grid"):
    """Step 3 → 4: the core's recommendation for this goal, or why there is none."""
    if not model or not dataset:
        return None, gr.update(), gr.update(), gr.update(), fail("pick a model (step 1) and a dataset (step 2)")
    try:
        recipe = api.recommend_recipe(
            model, dataset, target=target or None, max_drop_points=float(max_drop if max_drop is not None else 1.0),
            slo_ms=float(slo) if slo else None, speedup=float(speedup) if speedup else None,
            batch_size=int(batch or 1), seq_len=int(seq or 128), quick=bool(quick), traffic=traffic or "grid")
    except WorkbenchError as exc:
        return None, gr.update(), gr.update(), gr.update(), fail(str(exc))
    return recipe, recipe_html(recipe), recipe_json(recipe), _go(4), ""


def to_review(recipe, edited: str | None):
    """Step 4 → 5: the recipe with the user's edits (checked as a pipeline), then the review."""
    if recipe is None:
        return None, gr.update(), gr.update(), fail("go back to step 3 for a recipe")
    try:
        data = json.loads(edited or "{}")
    except json.JSONDecodeError as exc:
        return recipe, gr.update(), gr.update(), fail(f"the steps are not valid JSON: {exc}")
    if not isinstance(data, dict):
        return recipe, gr.update(), gr.update(), fail('expected {"steps": [...], "evaluation": {...}}')
    try:
        recipe = api.edit_recipe(recipe, data.get("steps", []), data.get("evaluation"))
    except WorkbenchError as exc:
        return recipe, gr.update(), gr.update(), fail(str(exc))
    return recipe, review_text(recipe), _go(5), ""


def _reopen_note(pipeline: str) -> str:
    return (f"reopen it after a reload from **Recent runs**, by its id, or at this page's address ending in "
            f"[`?run={esc(pipeline)}`](?run={esc(pipeline)})")


@roles.editor_only("launch jobs")
def launch(recipe):
    """Queue the recipe; the timer then follows the run (and the page's address names it)."""
    if recipe is None:
        return None, fail("no recipe yet: go back to step 3"), gr.update(), gr.update(), gr.Timer(active=False), gr.skip()
    try:
        launched = api.launch_recipe(recipe)
    except WorkbenchError as exc:
        return None, fail(str(exc)), gr.update(), gr.update(), gr.Timer(active=False), gr.skip()
    progress = api.wizard_progress(launched.pipeline, launched.goal)
    message = ok(f"launched run {launched.pipeline}: jobs {', '.join(map(str, launched.job_ids))}; "
                 + _reopen_note(launched.pipeline))
    return (Followed(launched.pipeline, launched.goal), message, progress_html(progress), gr.update(interactive=False),
            gr.Timer(active=True), gr.update(choices=_run_choices(), value=launched.pipeline))


def follow(run):
    """Timer tick: the run's progress, and the comparison once it is done (then the timer stops and the list of
    recent runs shows it done)."""
    if run is None:
        return gr.update(), gr.update(), gr.update(), gr.update(), gr.update(), gr.Timer(active=False), gr.skip()
    try:
        progress = api.wizard_progress(run.pipeline, run.goal)
    except WorkbenchError as exc:
        return fail(str(exc)), gr.update(), gr.update(), gr.update(), gr.update(), gr.Timer(active=False), gr.skip()
    if not progress.done:
        return (progress_html(progress), gr.skip(), gr.skip(), gr.skip(), gr.update(visible=False),
                gr.Timer(active=True), gr.skip())
    return (progress_html(progress), *outcome_views(progress), gr.Timer(active=False),
            gr.update(choices=_run_choices()))


def reopen(ref: str | None):
    """Follow a run again (after a reload, or another one): its progress now, the comparison if it is done, and
    the timer on while it runs. Outputs: run, walkthrough, open status, launch status, progress, summary, chart,
    table, timer, runs list."""
    pipeline = run_id(ref)
    if not pipeline:
        return (gr.skip(), gr.skip(), fail("pick a recent run or type a run id"), *(gr.skip(),) * 8)
    try:
        progress = api.wizard_progress(pipeline)
    except WorkbenchError as exc:
        return (gr.skip(), gr.skip(), fail(str(exc)), *(gr.skip(),) * 8)
    summary, chart, table, again = outcome_views(progress) if progress.done else ("", *_hidden())
    return (Followed(pipeline), _go(5), "", ok(f"reopened run {pipeline}; " + _reopen_note(pipeline)),
            progress_html(progress), summary, chart, table, again, gr.Timer(active=not progress.done),
            gr.update(choices=_run_choices(), value=pipeline))


def open_from_url(request: gr.Request):
    """Page load: `?run=<id>` in the address reopens that run."""
    ref = request.query_params.get("run") if request is not None else None
    if not ref:
        return (gr.skip(),) * 11
    return reopen(ref)


def preselect(model: str | None = None, dataset: str | None = None):
    """Step 1 and 2 start on the current choice, else on the newest model and dataset (the only one, if one)."""
    models, datasets = _model_choices(), _dataset_choices()
    return (gr.update(choices=models, value=_newest(models, model)),
            gr.update(choices=datasets, value=_newest(datasets, dataset)))


def in_address(run: str | None, status: str | None) -> None:
    """Nothing on the server: the browser has put the run in the page's address (`SET_URL_JS`) before this."""


@roles.editor_only("launch jobs")
def launch_remeasure(run):
    """'Could not decide': a full benchmark of the same variants, queued into the same run; the timer follows it."""
    if run is None:
        return fail("no run is open"), gr.skip(), gr.Timer(active=False), gr.skip()
    try:
        job_id = api.wizard_remeasure(run.pipeline)
    except WorkbenchError as exc:
        return fail(str(exc)), gr.skip(), gr.Timer(active=False), gr.skip()
    return (ok(f"re-measuring: benchmark job {job_id} (the full stop rule) was added to run {run.pipeline}; the "
               "verdict is made again from it"), gr.update(visible=False), gr.Timer(active=True), "")


def start_over():
    return (None, None, _go(1), "", "", "", *_hidden(), gr.update(interactive=True), gr.Timer(active=False),
            gr.update(value=None))


# ---- the tab -----------------------------------------------------------------------------------------------------


def build() -> Refresh:
    defaults = api.wizard_defaults()
    goal = defaults["goal"]
    gr.Markdown("Know your constraint but not the recipe? Pick a model and a dataset, say how fast and how accurate "
                "it must be on which hardware; the wizard recommends the steps (and says why), runs them as one "
                "pipeline, and ends on the comparison with the recommended variant highlighted.")
    recipe_state = gr.State(None)
    run_state = gr.State(None)
    with gr.Row():
        runs = gr.Dropdown(label="Recent runs (or type a run id)", choices=[], value=None, allow_custom_value=True,
                           interactive=True, scale=4, elem_id="wizard-runs",
                           info="reopen a wizard run to follow it again, e.g. after a page reload")
        open_run = gr.Button("Open run", size="sm", scale=1, elem_id="wizard-open-run")
    open_status = gr.Markdown(elem_id="wizard-open-status")
    with gr.Walkthrough(selected=1, elem_id="wizard-walkthrough") as walk:
        with gr.Step("Model", id=1, elem_id="wizard-step-1"):
            model = gr.Dropdown(label="Model", choices=[], interactive=True, elem_id="wizard-model",
                                info="the model to make faster (fine-tuned first if it has no head for the dataset)")
            model_info = gr.Markdown(model_text(None), elem_id="wizard-model-info")
            next1 = gr.Button("Next: dataset", variant="primary", elem_id="wizard-next-1")
            status1 = gr.Markdown(elem_id="wizard-status-1")
        with gr.Step("Dataset", id=2, elem_id="wizard-step-2"):
            dataset = gr.Dropdown(label="Dataset", choices=[], interactive=True, elem_id="wizard-dataset",
                                  info="for fine-tuning, accuracy and the benchmark's texts")
            dataset_info = gr.Markdown(dataset_text(None), elem_id="wizard-dataset-info")
            with gr.Row():
                back2 = gr.Button("Back", size="sm", elem_id="wizard-back-2")
                next2 = gr.Button("Next: goal", variant="primary", elem_id="wizard-next-2")
            status2 = gr.Markdown(elem_id="wizard-status-2")
        with gr.Step("Goal", id=3, elem_id="wizard-step-3"):
            hardware = gr.Markdown(f"**Detected here:** {esc(defaults['hardware'])}", elem_id="wizard-hardware")
            target = gr.Dropdown(label="Target hardware (detected; change it if the model will run elsewhere)",
                                 choices=[(f"{k}: {v}", k) for k, v in defaults["targets"].items()],
                                 value=defaults["target"], interactive=True, elem_id="wizard-target")
            approach = wizard_search.approach_radio()
            with gr.Row():
                max_drop = gr.Number(goal["max_drop_points"], label="Maximum accuracy drop (points)", minimum=0,
                                     elem_id="wizard-max-drop")
                slo = gr.Number(0, label="p95 latency SLO (ms; 0 = none: the fastest)", minimum=0, elem_id="wizard-slo")
                speedup = gr.Number(0, label="Speed-up wanted (x; 0 = as fast as possible)", minimum=0,
                                    elem_id="wizard-speedup")
            with gr.Row():
                batch = gr.Number(goal["batch_size"], label="Batch size of interest", precision=0, minimum=1,
                                  elem_id="wizard-batch")
                seq = gr.Number(goal["seq_len"], label="Sequence length (tokens)", precision=0, minimum=2,
                                elem_id="wizard-seq")
                quick = gr.Checkbox(False, label="Quick trial: small samples, short benchmark cells (minutes; rough figures)",
                                    elem_id="wizard-quick")
            traffic, budget = wizard_search.traffic_and_budget()
            with gr.Row():
                back3 = gr.Button("Back", size="sm", elem_id="wizard-back-3")
                next3 = gr.Button("Next: recommend a recipe", variant="primary", elem_id="wizard-next-3")
                next_search = wizard_search.next_button()
            status3 = gr.Markdown(elem_id="wizard-status-3")
        with gr.Step("Recipe", id=4, elem_id="wizard-step-4"):
            recipe_view = gr.HTML(elem_id="wizard-recipe")
            with gr.Accordion("Edit the steps and the evaluation (JSON)", open=False):
                params = gr.Code(language="json", interactive=True, elem_id="wizard-params")
            with gr.Row():
                back4 = gr.Button("Back", size="sm", elem_id="wizard-back-4")
                next4 = gr.Button("Next: review", variant="primary", elem_id="wizard-next-4")
            status4 = gr.Markdown(elem_id="wizard-status-4")
        with gr.Step("Review and launch", id=5, elem_id="wizard-step-5"):
            review = gr.Markdown(elem_id="wizard-review")
            with gr.Row():
                back5 = gr.Button("Back", size="sm", elem_id="wizard-back-5")
                launch_button = gr.Button("Launch", variant="primary", elem_id="wizard-launch")
                again = gr.Button("Start over", size="sm", elem_id="wizard-start-over")
            launch_status = gr.Markdown(elem_id="wizard-launch-status")
            progress = gr.HTML(elem_id="wizard-progress")
            summary = gr.Markdown(elem_id="wizard-summary")
            chart = gr.Plot(elem_id="wizard-chart", show_label=False, visible=False)
            table = gr.Dataframe(label="Decision at the goal's cell", interactive=False, elem_id="wizard-table",
                                 visible=False)
            remeasure = gr.Button("Re-measure (full benchmark of the same variants)", visible=False,
                                  elem_id="wizard-remeasure")
        wizard_search.build_step(walk, [model, dataset, target, max_drop, batch, seq, traffic, budget, quick, speedup],
                                 approach, [slo, next3], [budget, next_search], next_search, status3)
    timer = gr.Timer(REFRESH_S, active=False)

    model.change(model_text, model, model_info, show_progress="hidden", **PRIVATE)
    dataset.change(dataset_text, dataset, dataset_info, show_progress="hidden", **PRIVATE)
    next1.click(to_dataset, model, [walk, status1], **PRIVATE)
    next2.click(to_goal, dataset, [walk, status2], **PRIVATE)
    next3.click(to_recipe, [model, dataset, target, max_drop, slo, speedup, batch, seq, quick, traffic],
                [recipe_state, recipe_view, params, walk, status3], **PRIVATE)
    next4.click(to_review, [recipe_state, params], [recipe_state, review, walk, status4], **PRIVATE)
    for button, step in ((back2, 1), (back3, 2), (back4, 3), (back5, 4)):
        button.click(lambda step=step: _go(step), None, walk, **PRIVATE)
    launch_button.click(launch, recipe_state, [run_state, launch_status, progress, launch_button, timer, runs],
                        **PRIVATE).then(in_address, [runs, launch_status], None, js=SET_URL_JS, **PRIVATE)
    timer.tick(follow, run_state, [progress, summary, chart, table, remeasure, timer, runs], show_progress="hidden",
               **PRIVATE)
    remeasure.click(launch_remeasure, run_state, [launch_status, remeasure, timer, summary], **PRIVATE)
    again.click(start_over, None, [recipe_state, run_state, walk, launch_status, progress, summary, chart, table,
                                   remeasure, launch_button, timer, runs], **PRIVATE).then(
        in_address, [runs, launch_status], None, js=SET_URL_JS, **PRIVATE)
    reopened = [run_state, walk, open_status, launch_status, progress, summary, chart, table, remeasure, timer, runs]
    gr.on([open_run.click, runs.select], reopen, runs, reopened, **PRIVATE).then(
        in_address, [runs, open_status], None, js=SET_URL_JS, **PRIVATE)
    gr.on(None, open_from_url, None, reopened, **PRIVATE)  # on page load: ?run=<id> reopens it
    gr.on(None, preselect, None, [model, dataset], **PRIVATE)  # on page load
    tab = gr.context.Context.block  # the Wizard tab the app builds this in: opening it preselects again
    if isinstance(tab, gr.Tab):
        tab.select(preselect, [model, dataset], [model, dataset], **PRIVATE)

    def refresh():
        return (gr.update(choices=_model_choices()), gr.update(choices=_dataset_choices()),
                f"**Detected here:** {esc(api.wizard_defaults()['hardware'])}", gr.update(choices=_run_choices()))

    return Refresh(refresh, [model, dataset, hardware, runs])
