"""The wizard's "Search" path: instead of one recommended recipe, many recipes tried within a time budget.

In the goal step the user chooses between "Recommend a recipe" (the rule-based path) and "Search"; a search takes
the same goal (maximum accuracy drop, batch size and length or real traffic) and a budget in minutes, and runs as
one `search` job (jobs/search/, through `jobs.api.submit_search`). Its step follows the job live: budget used and
left, why it stopped, the chart of trials with the Pareto front, the table of trials, the best so far in one
sentence, and "Re-run this recipe" for a chosen trial. The deciding (space, optimizer, front, best) is all in the
core; this module shows it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr
import pandas as pd

from jobs import api
from storage.errors import WorkbenchError
from workbench import roles
from workbench.search_charts import trials_chart
from workbench.search_words import best_sentence, budget_line, trial_recipe, trial_rows
from workbench.ui import esc, fail, ok

REFRESH_S = 2.0
PRIVATE = dict(api_visibility="private")
RECOMMEND, SEARCH = "recommend", "search"
APPROACHES = [("Recommend a recipe", RECOMMEND), ("Search (try many recipes within a time budget)", SEARCH)]
TRAFFIC = [("Batch size x length (above)", "grid"), ("Real traffic: the dataset's own text lengths", "real")]
FINISHED = ("succeeded", "failed", "cancelled")
SEARCH_STEP = 6
DEFAULT_BUDGET_MIN = 60


@dataclass(frozen=True)
class SearchGoal:
    """What the search step launches: everything `api.submit_search` takes, as the goal step set it."""

    model: str
    dataset: str
    max_drop_points: float
    batch_size: int
    seq_len: int
    traffic: str
    device: str
    budget_s: float
    quick: bool
    speedup: float | None = None  # stop early once a trial within the drop is this much faster

    def describe(self) -> str:
        cell = ("real traffic (the test split's own lengths)" if self.traffic == "real"
                else f"{self.seq_len} tokens")
        speed = f"at least {self.speedup:g}x faster (then it stops)" if self.speedup else "as fast as possible"
        return (f"{speed} at batch {self.batch_size} x {cell} on {self.device}, losing at most "
                f"{self.max_drop_points:g} accuracy points, within {self.budget_s / 60:g} minutes")


# ---- the goal step's extra fields ----------------------------------------------------------------------------------


def approach_radio() -> gr.Radio:
    return gr.Radio(APPROACHES, value=RECOMMEND, label="How to find the variant", elem_id="wizard-approach",
                    info="a recipe from rules and what is measured here, or a search over fine-tune, distillation, "
                         "pruning, quantization and runtimes that keeps the best within the goal")


def traffic_and_budget() -> tuple[gr.Radio, gr.Number]:
    with gr.Row():
        traffic = gr.Radio(TRAFFIC, value="grid", label="Measure at", elem_id="wizard-traffic",
                           info="real traffic: batches drawn from the test split, each padded to its longest text; "
                                "the search then also tries reading 3/4 or 1/2 of the tokens the model was trained on")
        budget = gr.Number(DEFAULT_BUDGET_MIN, label="Time budget (minutes)", minimum=1, precision=1, visible=False,
                           elem_id="wizard-budget", info="the search stops when the goal is met or this is spent")
    return traffic, budget


def next_button() -> gr.Button:
    return gr.Button("Next: review the search", variant="primary", visible=False, elem_id="wizard-next-search")


def pick_approach(approach: str | None):
    """Show the fields of the chosen path: the SLO and "recommend" for the rules; budget and "review the search"
    for a search (it looks for the fastest within the tolerance; a speed-up wanted stops it early)."""
    search = approach == SEARCH
    return (gr.update(visible=not search), gr.update(visible=not search), gr.update(visible=search),
            gr.update(visible=search))


# ---- what the search step shows --------------------------------------------------------------------------------


def search_goal(model, dataset, target, max_drop, batch, seq, traffic, budget_min, quick, speedup=0) -> SearchGoal:
    """The goal fields as a SearchGoal; the core checks their ranges when the search is submitted."""
    from storage.errors import InvalidInput

    if not model or not dataset:
        raise InvalidInput("pick a model (step 1) and a dataset (step 2)")
    if budget_min is None or float(budget_min) <= 0:
        raise InvalidInput("the time budget must be a positive number of minutes")
    return SearchGoal(str(model), str(dataset), float(max_drop if max_drop is not None else 1.0), int(batch or 1),
                      int(seq or 128), traffic or "grid", "cuda" if target == "nvidia-gpu" else "cpu",
                      float(budget_min) * 60, bool(quick), float(speedup) if speedup else None)


def review_text(goal: SearchGoal) -> str:
    model, dataset = api.get_model(goal.model), api.get_dataset(goal.dataset)
    lines = [f"**Model** {esc(model.name)} · **Dataset** {esc(dataset.name)}",
             f"**Search:** {esc(goal.describe())}.",
             "Each trial is a real pipeline (make, evaluate, benchmark on this machine); trials that cannot win are "
             "pruned early, the best so far is kept, and any trial's recipe can be re-run afterwards."]
    if goal.quick:
        lines.append("⚡ **Quick:** small samples and short benchmark cells: the figures are rough.")
    return "\n\n".join(lines)


def to_search(model, dataset, target, max_drop, batch, seq, traffic, budget_min, quick, speedup=0):
    """Goal step → search step: the search's goal in words, ready to launch."""
    try:
        goal = search_goal(model, dataset, target, max_drop, batch, seq, traffic, budget_min, quick, speedup)
        text = review_text(goal)
    except WorkbenchError as exc:
        return None, gr.update(), gr.update(), fail(str(exc))
    return goal, text, gr.Walkthrough(selected=SEARCH_STEP), ""


def _trial_choices(status) -> list[tuple[str, str]]:
    return [(f"trial {t.number}: {trial_recipe(t)}" + ("" if t.variant_id else " (no variant yet)"),
             str(t.number)) for t in sorted(status.trials, key=lambda t: t.number)]


def views(status, axis: str = "accuracy", trial: str | None = None):
    """Budget line, best sentence, chart, table and the trials to re-run, for one SearchStatus."""
    rows = trial_rows(status)
    choices = _trial_choices(status)
    keep = trial if trial and trial in [value for _, value in choices] else (
        str(status.best.number) if status.best is not None else None)
    best = best_sentence(status)
    return (budget_line(status), f"**Best so far:** {esc(best)}" if status.best is not None else esc(best),
            gr.update(value=trials_chart(status, "drop" if axis == "drop" else "accuracy"),
                      visible=bool(status.trials)),
            gr.update(value=pd.DataFrame(rows), visible=bool(rows)), gr.update(choices=choices, value=keep))


def search_choices() -> list[tuple[str, str]]:
    jobs = [j for j in api.list_jobs() if j.kind == "search"]
    return [(f"search job {j.id} · {j.status.value} · "
             + (j.created_at.strftime("%Y-%m-%d %H:%M") if j.created_at else ""), str(j.id)) for j in jobs]


# ---- handlers ----------------------------------------------------------------------------------------------------


@roles.editor_only("launch jobs")
def launch_search(goal: SearchGoal | None):
    """Submit the search job; the timer then follows it."""
    nothing = (None, gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.Timer(active=False), gr.skip())
    if goal is None:
        return nothing[0], fail("no search goal yet: go back to the goal step"), *nothing[2:]
    try:
        job = api.submit_search(goal.model, goal.dataset, max_drop_points=goal.max_drop_points,
                                batch_size=goal.batch_size, seq_len=goal.seq_len, traffic=goal.traffic,
                                device=goal.device, budget_s=goal.budget_s, quick=goal.quick, speedup=goal.speedup)
    except WorkbenchError as exc:
        return nothing[0], fail(str(exc)), *nothing[2:]
    message = ok(f"launched search job {job.id}; reopen it later from **Recent searches**")
    return (job.id, message, gr.update(value=budget_line_queued(goal)), gr.skip(), gr.skip(), gr.skip(),
            gr.Timer(active=True), gr.update(choices=search_choices(), value=str(job.id)))


def budget_line_queued(goal: SearchGoal) -> str:
    return f"**Budget:** {goal.budget_s / 60:g} min · waiting for the search job to start"


def follow_search(job_id: int | None, axis: str = "accuracy", trial: str | None = None):
    """Timer tick (and the axis switch): the search's status now; the timer stops once the job has finished."""
    if job_id is None:
        return (gr.skip(),) * 5 + (gr.Timer(active=False),)
    try:
        status = api.search_status(job_id)
    except WorkbenchError as exc:
        return (fail(str(exc)), *(gr.skip(),) * 4, gr.Timer(active=False))
    return (*views(status, axis, trial), gr.Timer(active=status.state not in FINISHED))


def open_search(ref: str | None, axis: str = "accuracy"):
    """Follow a search again (after a reload, or another one) by its job id."""
    text = (ref or "").strip().removeprefix("search job").strip().split(" ")[0]
    if not text.isdigit():
        return (gr.skip(), fail("pick a recent search or type its job id"), *(gr.skip(),) * 5, gr.skip())
    try:
        status = api.search_status(int(text))
    except WorkbenchError as exc:
        return (gr.skip(), fail(str(exc)), *(gr.skip(),) * 5, gr.skip())
    return (int(text), ok(f"reopened search job {text}"), *views(status, axis),
            gr.Timer(active=status.state not in FINISHED))


@roles.editor_only("launch jobs")
def launch_rerun(job_id: int | None, trial: str | None):
    """Queue the chosen trial's recipe again (the variant's recipe, re-run from the model's original)."""
    if job_id is None:
        return fail("no search is open")
    if not trial:
        return fail("pick a trial to re-run")
    try:
        status = api.search_status(job_id)
        chosen = next((t for t in status.trials if str(t.number) == str(trial)), None)
        if chosen is None:
            return fail(f"search job {job_id} has no trial {trial}")
        if chosen.variant_id:  # its variant's whole recipe, from the model's original (fine-tune included)
            jobs = api.rerun_recipe(chosen.variant_id)
        elif chosen.steps and status.baseline is not None and status.baseline.variant_id:
            # it failed before making a variant: its steps again, from the variant the search started them from
            jobs = api.submit_pipeline([api.Step(s["kind"], dict(s.get("params") or {})) for s in chosen.steps],
                                       variant=status.baseline.variant_id, dataset=api.get_job(job_id).dataset_id)
        else:
            return fail(f"trial {chosen.number} has no recipe to re-run yet ({chosen.state})")
    except WorkbenchError as exc:
        return fail(str(exc))
    return ok(f"re-running trial {chosen.number} ({esc(trial_recipe(chosen))}) as run {jobs[0].pipeline}: "
              f"jobs {', '.join(str(j.id) for j in jobs)}; follow them in the **Jobs** tab")


def search_list():
    return gr.update(choices=search_choices())


# ---- the step ----------------------------------------------------------------------------------------------------


def build_step(walk: gr.Walkthrough, goal_inputs: list[Any], approach: gr.Radio, rule_only: list[Any],
               search_only: list[Any], next_search: gr.Button, goal_status: gr.Markdown) -> None:
    """The search step (inside the wizard's walkthrough) and its events.

    goal_inputs: model, dataset, target, max drop, batch, seq, traffic, budget, quick, speed-up (in that order);
    rule_only: the rule path's SLO and "recommend" button; search_only: budget and `next_search`.
    """
    goal_state = gr.State(None)
    job_state = gr.State(None)
    with gr.Step("Search", id=SEARCH_STEP, elem_id="wizard-step-search"):
        review = gr.Markdown(elem_id="wizard-search-review")
        with gr.Row():
            back = gr.Button("Back", size="sm", elem_id="wizard-search-back")
            launch_button = gr.Button("Launch search", variant="primary", elem_id="wizard-search-launch")
        status = gr.Markdown(elem_id="wizard-search-status")
        with gr.Row():
            searches = gr.Dropdown(label="Recent searches (or type a search job id)", choices=[], value=None,
                                   allow_custom_value=True, interactive=True, scale=4, elem_id="wizard-searches")
            open_button = gr.Button("Open search", size="sm", scale=1, elem_id="wizard-open-search")
        budget = gr.Markdown(elem_id="wizard-search-budget")
        best = gr.Markdown(elem_id="wizard-search-best")
        axis = gr.Radio([("accuracy", "accuracy"), ("points lost", "drop")], value="accuracy", label="Chart's y axis",
                        elem_id="wizard-search-axis")
        chart = gr.Plot(elem_id="wizard-search-chart", show_label=False, visible=False)
        table = gr.Dataframe(label="Trials (★ best so far, ◆ Pareto front)", interactive=False, visible=False,
                             elem_id="wizard-search-table", wrap=True)
        with gr.Row():
            trial = gr.Dropdown(label="Trial", choices=[], value=None, interactive=True, scale=3,
                                elem_id="wizard-search-trial")
            rerun = gr.Button("Re-run this recipe", size="sm", scale=1, elem_id="wizard-search-rerun")
        rerun_status = gr.Markdown(elem_id="wizard-search-rerun-status")
    timer = gr.Timer(REFRESH_S, active=False)

    approach.change(pick_approach, approach, [*rule_only, *search_only], **PRIVATE)
    next_search.click(to_search, goal_inputs, [goal_state, review, walk, goal_status], **PRIVATE).then(
        search_list, None, searches, **PRIVATE)
    back.click(back_to_goal, None, walk, **PRIVATE)
    shown = [budget, best, chart, table, trial]
    launch_button.click(launch_search, goal_state,
                        [job_state, status, budget, best, chart, table, timer, searches], **PRIVATE)
    timer.tick(follow_search, [job_state, axis, trial], [*shown, timer], show_progress="hidden", **PRIVATE)
    axis.change(follow_search, [job_state, axis, trial], [*shown, timer], show_progress="hidden", **PRIVATE)
    gr.on([open_button.click, searches.select], open_search, [searches, axis], [job_state, status, *shown, timer],
          **PRIVATE)
    rerun.click(launch_rerun, [job_state, trial], rerun_status, **PRIVATE)
    gr.on(None, search_list, None, searches, **PRIVATE)  # on page load: the recent searches to reopen


def back_to_goal():
    return gr.Walkthrough(selected=3)
