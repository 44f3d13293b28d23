"""A/B tab: two variants side by side on one text, on a whole split with McNemar's test, and in a traffic split.

The tab only calls `jobs.api` (predictions, the test, the routing and the per-arm statistics) and renders them.
"""

from __future__ import annotations

import gradio as gr
import pandas as pd

from jobs import api
from storage.errors import WorkbenchError
from workbench import playground_charts, roles
from workbench.choices import experiment_choices
from workbench.formatting import agreement_line, playground_percent, significance_sentence
from workbench.tabs.predictor import PRIVATE, keep, known_choices, prediction_markdown, ref_label, values
from workbench.ui import FAILED, OK, WARNING, Refresh, esc, fail, ok

SPLITS = ["test", "validation"]
SORTS = {  # "Sort by" choice -> key of a Disagreement, largest first
    "confidence gap": lambda d: d.confidence_gap,
    "A confidence": lambda d: d.confidence_a,
    "B confidence": lambda d: d.confidence_b,
}
DISAGREEMENT_COLUMNS = ["index", "text", "gold", "A label", "A confidence", "B label", "B confidence", "gap"]
ARM_COLUMNS = ["arm", "variant", "requests", "share", "feedback", "correct", "accuracy", "95 % CI"]
REQUEST_COLUMNS = ["request", "time", "user", "arm", "variant", "label", "confidence", "ms", "source", "feedback", "text"]
RECENT = 50
NEED_TWO = "pick variant A and variant B first"
WHOLE_SPLIT = 0  # the default number of examples for "Run on a test set": 0 = every example of the split


def _ab_defaults(choices: dict) -> tuple[str | None, str | None]:
    """B: the newest evaluated variant; A: its parent, else the newest other variant."""
    b = choices["variant_default"]
    others = [v for v in values(choices["variants"]) if v != b and v.isdigit()]  # ids, not registry aliases
    a = choices["parents"].get(b) or (max(others, key=int) if others else None)
    return a, b


# ---- side by side -----------------------------------------------------------------------------------------------


def compare(a: str | None, b: str | None, text: str | None):
    if not a or not b:
        return fail(NEED_TWO), "", "", None
    try:
        side = api.ab_compare(a, b, text or "")
    except WorkbenchError as exc:
        return fail(str(exc)), "", "", None
    verdict = agreement_line(side)
    chart = playground_charts.side_by_side(side.a.probabilities, side.b.probabilities, f"A {ref_label(a)}",
                                           f"B {ref_label(b)}")
    return (f"**A** (variant {esc(ref_label(a))})\n\n{prediction_markdown(side.a)}",
            f"**B** (variant {esc(ref_label(b))})\n\n{prediction_markdown(side.b)}", verdict, chart)


# ---- on a split -------------------------------------------------------------------------------------------------


def summary_markdown(r, dataset_name: str) -> str:
    m = r.mcnemar
    test = "exact binomial form" if m.exact else "chi-square with continuity correction"
    return "\n".join([
        f"**{r.num_examples:,} examples** of the {esc(r.split)} split of **{esc(dataset_name)}** · "
        f"agreement {playground_percent(r.agreement)} · **{len(r.disagreements):,} disagreements**",
        "",
        f"| | A (#{r.variant_a}) | B (#{r.variant_b}) |",
        "|---|---|---|",
        f"| accuracy | {playground_percent(r.accuracy_a, 2)} | {playground_percent(r.accuracy_b, 2)} |",
        f"| ms per example (batched) | {r.ms_per_example_a:.2f} | {r.ms_per_example_b:.2f} |",
        "",
        f"**McNemar's test** ({test}): A right and B wrong on {m.a_only:,}, B right and A wrong on {m.b_only:,}; "
        f"statistic {m.statistic:.3f}, p-value {m.p_value:.4g}.",
        "",
        f"<span class='{'significant' if r.verdict.significant else 'not-significant'}'>"
        f"{significance_sentence(r.verdict)}</span>",
    ])


def disagreement_frame(r, sort: str | None) -> pd.DataFrame:
    if r is None:
        return pd.DataFrame(columns=DISAGREEMENT_COLUMNS)
    rows = sorted(r.disagreements, key=SORTS.get(sort or "", SORTS["confidence gap"]), reverse=True)
    return pd.DataFrame(
        [[d.index, d.text, d.gold, d.label_a, round(d.confidence_a, 4), d.label_b, round(d.confidence_b, 4),
          round(d.confidence_gap, 4)] for d in rows],
        columns=DISAGREEMENT_COLUMNS,
    )


def run_on_split(a: str | None, b: str | None, dataset: str | None, split: str, limit: float | None, sort: str | None,
                 progress=gr.Progress()):
    nothing = (None, disagreement_frame(None, sort), None)
    if not a or not b:
        return (fail(NEED_TWO), *nothing)
    if not dataset:
        return (fail("pick a dataset (add one in Datasets)"), *nothing)
    if (limit or 0) < 0:  # the core would hand a negative sample size to pandas
        return (fail("the number of examples must be 0 (the whole split) or positive"), *nothing)
    try:
        result = api.ab_test_set(a, b, dataset, split or "test", int(limit or 0),
                                 progress=lambda done, total: progress(done / total, desc=f"{done}/{total} examples"))
        name = api.get_dataset(result.dataset_id).name
    except WorkbenchError as exc:
        return (fail(str(exc)), *nothing)
    chart = playground_charts.accuracies(result.accuracy_a, result.accuracy_b, result.agreement,
                                         f"A #{result.variant_a}", f"B #{result.variant_b}")
    return summary_markdown(result, name), chart, disagreement_frame(result, sort), result


# ---- traffic split ----------------------------------------------------------------------------------------------


def arms_frame(stats) -> pd.DataFrame:
    return pd.DataFrame(
        [[s.arm, f"#{s.variant_id}", s.requests, playground_percent(s.share), s.with_feedback, s.correct,
          playground_percent(s.accuracy),
          "—" if s.ci_low is None else f"{playground_percent(s.ci_low)} – {playground_percent(s.ci_high)}"] for s in stats],
        columns=ARM_COLUMNS,
    )


def requests_frame(requests) -> pd.DataFrame:
    return pd.DataFrame(
        [[r.id, f"{r.created_at:%H:%M:%S}", r.user_id, r.arm, f"#{r.variant_id}", r.label, round(r.confidence, 4),
          round(r.latency_ms, 1), r.source, r.feedback or "", r.text] for r in requests],
        columns=REQUEST_COLUMNS,
    )


def _empty_arms(message: str = ""):
    return message, pd.DataFrame(columns=ARM_COLUMNS), None, pd.DataFrame(columns=REQUEST_COLUMNS)


def arms_view(experiment: str | None):
    """The experiment's description, its per-arm table and chart, and its newest requests."""
    if not experiment:
        return _empty_arms("No experiment yet: pick A and B above, choose B's share and start one.")
    try:
        exp = next((e for e in api.list_experiments() if str(e.id) == str(experiment)), None)
        if exp is None:
            return _empty_arms(fail(f"no experiment {experiment}"))
        stats = api.arm_report(exp.id)
        recent = api.recent_requests(exp.id, RECENT)
    except WorkbenchError as exc:
        return _empty_arms(fail(str(exc)))
    about = (f"**{esc(exp.name)}**: A is variant #{exp.variant_a_id}, B is variant #{exp.variant_b_id}; "
             f"B gets {exp.split_b_percent:g} % of users (the same user always lands in the same arm).")
    return about, arms_frame(stats), playground_charts.arms(stats), requests_frame(recent)


TRAFFIC = "run traffic experiments (start one, send requests, record feedback, simulate traffic)"


@roles.editor_only(TRAFFIC)
def start(a: str | None, b: str | None, split: float, name: str | None):
    if not a or not b:
        return fail(NEED_TWO), gr.skip()
    try:
        exp = api.start_experiment(a, b, split, (name or "").strip() or None)
        choices = experiment_choices(api.list_experiments())
    except WorkbenchError as exc:
        return fail(str(exc)), gr.skip()
    return (ok(f"started experiment #{exp.id} {esc(exp.name)}: B (#{exp.variant_b_id}) gets {exp.split_b_percent:g} %, "
               f"A (#{exp.variant_a_id}) the rest"),
            gr.update(choices=choices, value=str(exp.id)))


@roles.editor_only(TRAFFIC)
def send(experiment: str | None, user: str | None, text: str | None):
    if not experiment:
        return (fail("start or pick an experiment first"), None, "", *arms_view(experiment))
    try:
        routed = api.route_request(experiment, user or "", text or "")
    except WorkbenchError as exc:
        return (fail(str(exc)), gr.skip(), "", *arms_view(experiment))
    r, p = routed.request, routed.prediction
    line = (f"user {esc(r.user_id)} → arm {r.arm} (variant #{r.variant_id}): **{esc(p.label)}** "
            f"{p.confidence * 100:.0f} %, {p.latency_ms:.1f} ms (request #{r.id}). Was it right?")
    if p.truncated:
        line += f"\n\n<span class='truncation-warning'>{WARNING} {esc(p.truncation_note)}</span>"
    return (line, r.id, "", *arms_view(experiment))


def feedback(experiment: str | None, request_id: int | None, correct: bool):
    if request_id is None:
        return (fail("send a request first: feedback is recorded on the last one"), *arms_view(experiment))
    try:
        r = api.record_feedback(request_id, correct)
    except WorkbenchError as exc:
        return (fail(str(exc)), *arms_view(experiment))
    return (ok(f"request #{r.id} (arm {r.arm}) marked {r.feedback}"), *arms_view(experiment))


@roles.editor_only(TRAFFIC)
def mark_correct(experiment: str | None, request_id: int | None):
    return feedback(experiment, request_id, True)


@roles.editor_only(TRAFFIC)
def mark_wrong(experiment: str | None, request_id: int | None):
    return feedback(experiment, request_id, False)


def show_experiment(experiment: str | None):
    """A picked experiment's results (viewers may look; only editors start, send and record feedback)."""
    return ("", None, "", *arms_view(experiment))


@roles.editor_only(TRAFFIC)
def simulate(experiment: str | None, dataset: str | None, requests: float | None, users: float | None,
             progress=gr.Progress()):
    if not experiment:
        return (fail("start or pick an experiment first"), *arms_view(experiment))
    if not dataset:
        return (fail("pick a dataset to draw the simulated requests from"), *arms_view(experiment))
    try:
        done = api.simulate_traffic(experiment, dataset, "test", int(requests or 0), int(users or 0),
                                    progress=lambda n, total: progress(n / total, desc=f"{n}/{total} requests"))
    except WorkbenchError as exc:
        return (fail(str(exc)), *arms_view(experiment))
    per_arm = {arm: sum(r.arm == arm for r in done) for arm in ("A", "B")}
    correct = sum(r.feedback == "correct" for r in done)
    return (ok(f"{len(done)} simulated requests from {len({r.user_id for r in done})} users: {per_arm['A']} to A, "
               f"{per_arm['B']} to B; {correct} answered the gold label (recorded as feedback)"),
            *arms_view(experiment))


# ---- layout -----------------------------------------------------------------------------------------------------


def build() -> Refresh:
    gr.Markdown("Two variants on the same inputs: one text side by side, a whole split with McNemar's test, or a "
                "simulated traffic split where each user is routed to an arm and feedback is counted per arm.")
    with gr.Row():
        a = gr.Dropdown(label="Variant A", choices=[], elem_id="ab-a")
        b = gr.Dropdown(label="Variant B", choices=[], elem_id="ab-b")

    gr.Markdown("### Side by side")
    with gr.Row(equal_height=True):
        text = gr.Textbox(label="Text", placeholder="Type a sentence, then Enter or Compare", lines=1, max_lines=8, scale=4,
                          elem_id="ab-text")
        compare_button = gr.Button("Compare", variant="primary", scale=1, elem_id="ab-compare")
    with gr.Row(equal_height=False):
        with gr.Column(scale=2):
            with gr.Row():
                result_a = gr.Markdown(elem_id="ab-result-a", elem_classes=["ab-result"])
                result_b = gr.Markdown(elem_id="ab-result-b", elem_classes=["ab-result"])
            verdict = gr.Markdown(elem_id="ab-verdict")
        chart = gr.Plot(label="Probabilities", elem_id="ab-chart", scale=3)

    gr.Markdown("### Run on a test set")
    with gr.Row():
        dataset = gr.Dropdown(label="Dataset", choices=[], elem_id="ab-dataset")
        split = gr.Radio(SPLITS, value="test", label="Split", elem_id="ab-split-name")
        limit = gr.Number(label="Examples (0 = the whole split)", value=WHOLE_SPLIT, precision=0, minimum=0,
                          elem_id="ab-limit",
                          info="the whole split runs every example through both variants: minutes on a large "
                               "dataset; a few hundred give a first answer")
        run = gr.Button("Run both on the split", variant="primary", elem_id="ab-run")
    with gr.Row(equal_height=False):
        summary = gr.Markdown(elem_id="ab-summary")
        accuracy_chart = gr.Plot(label="Accuracy", elem_id="ab-accuracy-chart")
    sort = gr.Radio(list(SORTS), value="confidence gap", label="Sort disagreements by (largest first)", elem_id="ab-sort")
    disagreements = gr.Dataframe(pd.DataFrame(columns=DISAGREEMENT_COLUMNS), label="Where A and B disagree",
                                 interactive=False, wrap=True, max_height=420, elem_id="ab-disagreements",
                                 column_widths=["6%", "40%", "8%", "9%", "9%", "9%", "9%", "10%"])
    last_run = gr.State(None)

    gr.Markdown("### Traffic split simulation")
    with gr.Row() as start_row:
        share = gr.Slider(0, 100, value=50, step=1, label="B's share of users (%)", elem_id="ab-split")
        name = gr.Textbox(label="Experiment name (optional)", elem_id="ab-name")
        start_button = gr.Button("Start experiment (A and B above)", variant="primary", elem_id="ab-start")
    start_status = gr.Markdown(elem_id="ab-start-status")
    experiment = gr.Dropdown(label="Experiment", choices=[], elem_id="ab-experiment")
    about = gr.Markdown(elem_id="ab-experiment-about")
    with gr.Row(equal_height=True) as send_row:
        user = gr.Textbox(label="User id", placeholder="alice", scale=1, elem_id="ab-user")
        request_text = gr.Textbox(label="Request text", placeholder="Enter sends it", scale=3, elem_id="ab-request-text")
        send_button = gr.Button("Send request", variant="primary", scale=1, elem_id="ab-send")
    routed = gr.Markdown(elem_id="ab-routed")
    with gr.Row() as feedback_row:
        correct = gr.Button(f"{OK} Correct", elem_id="ab-correct")
        wrong = gr.Button(f"{FAILED} Wrong", elem_id="ab-wrong")
    feedback_status = gr.Markdown(elem_id="ab-feedback")
    last_request = gr.State(None)
    with gr.Row(equal_height=True) as simulate_row:
        sim_dataset = gr.Dropdown(label="Simulate traffic from dataset (test split)", choices=[], elem_id="ab-sim-dataset")
        sim_requests = gr.Number(label="Requests", value=200, precision=0, elem_id="ab-sim-requests")
        sim_users = gr.Number(label="Users", value=50, precision=0, elem_id="ab-sim-users")
        simulate_button = gr.Button("Simulate traffic", variant="primary", elem_id="ab-simulate")
    sim_status = gr.Markdown(elem_id="ab-sim-status")
    # viewers see an experiment's results, not these controls; the handlers refuse them anyway
    roles.editor_control(start_row, send_row, feedback_row, simulate_row)
    with gr.Row(equal_height=False):
        arms_table = gr.Dataframe(pd.DataFrame(columns=ARM_COLUMNS), label="Per arm", interactive=False,
                                  elem_id="ab-arms", scale=3)
        arms_chart = gr.Plot(label="Accuracy per arm", elem_id="ab-arms-chart", scale=2)
    recent = gr.Dataframe(pd.DataFrame(columns=REQUEST_COLUMNS), label=f"Newest {RECENT} requests", interactive=False,
                          wrap=True, max_height=360, elem_id="ab-requests")
    known = gr.State({})

    arms_outputs = [about, arms_table, arms_chart, recent]
    for trigger in (compare_button.click, text.submit):
        trigger(compare, [a, b, text], [result_a, result_b, verdict, chart], **PRIVATE)
    run.click(run_on_split, [a, b, dataset, split, limit, sort], [summary, accuracy_chart, disagreements, last_run],
              **PRIVATE)
    sort.change(disagreement_frame, [last_run, sort], disagreements, **PRIVATE)
    start_button.click(start, [a, b, share, name], [start_status, experiment], **PRIVATE)
    experiment.change(show_experiment, experiment, [routed, last_request, feedback_status, *arms_outputs], **PRIVATE)
    for trigger in (send_button.click, request_text.submit):
        trigger(send, [experiment, user, request_text], [routed, last_request, feedback_status, *arms_outputs], **PRIVATE)
    correct.click(mark_correct, [experiment, last_request], [feedback_status, *arms_outputs], **PRIVATE)
    wrong.click(mark_wrong, [experiment, last_request], [feedback_status, *arms_outputs], **PRIVATE)
    simulate_button.click(simulate, [experiment, sim_dataset, sim_requests, sim_users], [sim_status, *arms_outputs],
                          **PRIVATE)

    def fix_values(choices: dict, *current):
        """After a refresh: keep what is picked while it still exists, else pick the defaults."""
        if not choices:
            return (gr.skip(),) * len(current)
        cur_a, cur_b, cur_dataset, cur_sim, cur_exp = current
        variants, datasets = values(choices["variants"]), values(choices["datasets"])
        default_a, default_b = _ab_defaults(choices)
        return (keep(cur_a, variants, default_a), keep(cur_b, variants, default_b),
                keep(cur_dataset, datasets, choices["dataset_default"]), keep(cur_sim, datasets, choices["dataset_default"]),
                keep(cur_exp, values(choices["experiments"]), choices["experiment_default"]))

    known.change(fix_values, [known, a, b, dataset, sim_dataset, experiment], [a, b, dataset, sim_dataset, experiment],
                 **PRIVATE)

    def refresh():
        choices = known_choices()
        experiments = api.list_experiments()
        choices["experiments"] = experiment_choices(experiments)
        choices["experiment_default"] = str(experiments[0].id) if experiments else None
        return (gr.update(choices=choices["variants"]), gr.update(choices=choices["variants"]),
                gr.update(choices=choices["datasets"]), gr.update(choices=choices["datasets"]),
                gr.update(choices=choices["experiments"]), choices)

    return Refresh(refresh, [a, b, dataset, sim_dataset, experiment, known])
