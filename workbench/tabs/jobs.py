"""Jobs tab: submit a job, a live table with progress bars (refreshed by a timer), a log view and cancel."""

from __future__ import annotations

import json

import gradio as gr

from jobs import api
from storage.errors import WorkbenchError
from workbench import cluster_view, roles
from workbench.choices import NONE, job_choices, named_choices, variant_choices
from workbench.ui import WARNING, Refresh, attempt, esc, fail

REFRESH_S = 1.5
# The log box is re-sent on every refresh, so it holds the end of the log (where a job says why it stopped).
LOG_TAIL_CHARS = 20_000
STATUS_COLORS = {
    "queued": "#888", "running": "#1f77b4", "succeeded": "#2ca02c", "failed": "#d62728", "cancelled": "#ff7f0e",
}


def jobs_html(limit: int = 100) -> str:
    jobs = api.list_jobs(limit=limit)
    if not jobs:
        return "<p>No jobs yet. Add a model (an inspect job is queued for it) or submit one above.</p>"
    rows = []
    for j in jobs:
        color = STATUS_COLORS[j.status.value]
        seconds = f"{j.duration_s:.1f}s" if j.duration_s is not None else ""
        rows.append(
            f"<tr data-job-id='{j.id}' data-status='{j.status.value}'>"
            f"<td>{j.id}</td><td>{esc(j.kind)}</td>"
            f"<td><span class='job-status' style='color:{color};font-weight:600'>{j.status.value}</span></td>"
            f"<td style='min-width:140px'><progress max='1' value='{j.progress:.3f}' style='width:100%'></progress>"
            f" {j.progress:.0%}</td>"
            f"<td>{esc(j.variant_id or '')}</td><td>{esc(j.dataset_id or '')}</td>"
            f"<td>{esc(j.message[:120])}</td><td>{seconds}</td></tr>"
        )
    head = "".join(f"<th>{h}</th>" for h in ("id", "kind", "status", "progress", "variant", "dataset", "message", "time"))
    return f"<table class='jobs-table' id='jobs-table'><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def workers_line() -> str:
    workers = api.live_workers()
    counts = api.job_counts()
    queue_text = " · ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "empty"
    if not workers:
        return (f"{WARNING} **No worker is running**: jobs stay queued. Start one with `workbench worker`. "
                f"Queue: {queue_text}")
    names = ", ".join(f"{w.id} ({'/'.join(w.devices)})" for w in workers)
    return f"**Workers:** {names} · **Queue:** {queue_text}"


def executor_line() -> str:
    """Local worker processes, or the Ray cluster's nodes and what runs on each; never waits on the cluster."""
    return cluster_view.executor_text(api.executor_status())


def job_detail(job_id: str | None) -> tuple[str, str]:
    if not job_id:
        return "Pick a job to see its log.", ""
    try:
        job = api.get_job(job_id)
    except WorkbenchError as exc:
        return fail(str(exc)), ""
    lines = [f"**Job {job.id} · {job.kind} · {job.status.value}** ({job.progress:.0%}) — {esc(job.message)}"]
    if job.params:
        lines.append(f"params: `{json.dumps(job.params)}`")
    if job.error:
        lines.append(f"**error:** {esc(job.error.strip().splitlines()[-1] if job.error.strip() else '')}")
    return "\n\n".join(lines), log_tail_text(job.id)


def log_tail_text(job_id: int) -> str:
    tail = api.job_log_tail(job_id, LOG_TAIL_CHARS)
    if not tail.omitted:
        return tail.text
    _cut_line, _, whole_lines = tail.text.partition("\n")  # the first line was cut somewhere in its middle
    return f"[earlier lines omitted: showing the last {LOG_TAIL_CHARS:,} characters of the log]\n{whole_lines or tail.text}"


def _job_choices():
    return job_choices(api.list_jobs(limit=200))


def _variant_choices():
    return [NONE] + variant_choices(api.list_variants())


def _dataset_choices():
    return [NONE] + named_choices(api.list_datasets())


@roles.editor_only("submit a job")
def submit_job(kind: str, variant: str, dataset: str, params_text: str):
    holder: dict = {}

    def action() -> str:
        try:
            params = json.loads(params_text or "{}")
        except json.JSONDecodeError as exc:
            raise WorkbenchError(f"parameters are not valid JSON: {exc}") from None
        if not isinstance(params, dict):
            raise WorkbenchError("parameters must be a JSON object")
        job = api.submit(kind, params, variant=variant or None, dataset=dataset or None)
        holder["id"] = str(job.id)
        return f"Queued job {job.id} ({job.kind})."

    message = attempt(action)
    return message, jobs_html(), gr.update(choices=_job_choices(), value=holder.get("id"))


@roles.editor_only("cancel a job")
def cancel_job(job_id: str | None):
    if not job_id:
        return fail("pick a job to cancel"), jobs_html()
    return attempt(lambda: f"job {job_id}: {api.cancel_job(job_id).message}"), jobs_html()


def build() -> Refresh:
    workers = gr.Markdown(workers_line, elem_id="workers-line")
    executor = gr.Markdown(executor_line, elem_id="executor-line")
    with gr.Accordion("Submit a job", open=False):
        kinds = api.job_kinds()
        with gr.Row():
            kind = gr.Dropdown(
                choices=[(f"{k['name']}: {k['summary']}", k["name"]) for k in kinds],
                value=kinds[0]["name"] if kinds else None,
                label="Kind",
            )
            variant = gr.Dropdown(label="Model variant", choices=[("(none)", "")], value="")
            dataset = gr.Dropdown(label="Dataset", choices=[("(none)", "")], value="")
        params = gr.Code(label="Parameters (JSON)", language="json", value=json.dumps(api.kind_defaults(kinds[0]["name"])) if kinds else "{}")
        submit = gr.Button("Submit", variant="primary")
    status = gr.Markdown(elem_id="jobs-status")
    table = gr.HTML(jobs_html, elem_id="jobs-html")
    with gr.Row():
        pick = gr.Dropdown(label="Job", choices=[], interactive=True, scale=3)
        cancel = gr.Button("Cancel job", variant="stop", scale=1)
    detail = gr.Markdown()
    log = gr.Textbox(label="Log", lines=14, max_lines=30, autoscroll=True, interactive=False, elem_id="job-log")

    timer = gr.Timer(REFRESH_S)
    timer.tick(lambda j: (jobs_html(), workers_line(), executor_line(), *job_detail(j)), pick,
               [table, workers, executor, detail, log])
    kind.change(lambda k: json.dumps(api.kind_defaults(k)) if k else "{}", kind, params)
    submit.click(submit_job, [kind, variant, dataset, params], [status, table, pick])
    cancel.click(cancel_job, pick, [status, table])
    pick.change(job_detail, pick, [detail, log])

    def refresh():
        return gr.update(choices=_variant_choices()), gr.update(choices=_dataset_choices()), gr.update(choices=_job_choices())

    return Refresh(refresh, [variant, dataset, pick])
