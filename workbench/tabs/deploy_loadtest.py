"""The Deploy tab's load-test section: for the picked deployment, its newest load test as latency against
throughput (viewers see it), and a form that queues a `loadtest` job (editors), with the job's progress.

Only `jobs.api` is called: the job drives the server, the core stores and reads back the levels.
"""

from __future__ import annotations

import gradio as gr

from jobs import api
from storage.errors import WorkbenchError
from workbench import loadtest_charts, roles
from workbench.choices import named_choices
from workbench.ui import WARNING, attempt, esc, fail

PROGRESS_S = 3.0
PRIVATE = dict(api_visibility="private")
NOTHING = "No load test of this deployment yet."
DEFAULTS = dict(concurrency="1,4,16,32", requests=200, max_seconds=20, warmup=20, slo=0)


def _figure(value: float) -> str:
    return "–" if value is None else f"{value:.1f}"


def levels_table(levels) -> str:
    head = "| concurrency | sent | OK | errors | requests/s | texts/s | p50 ms | p95 ms | p99 ms | load |\n" \
           "|---:|---:|---:|---|---:|---:|---:|---:|---:|---|\n"
    lines = []
    for lv in levels:
        errors = ", ".join(f"{k}: {v}" for k, v in sorted(lv["errors"].items())) or "none"
        load = lv["load"]
        busy = f"{WARNING} busy: others took {load.get('other_cpu_fraction', 0):.0%}" if lv["busy"] else \
            f"others {load.get('other_cpu_fraction', 0):.0%}"
        lines.append(f"| {lv['concurrency']} | {lv['sent']} | {lv['ok']} | {errors} | {lv['requests_per_s']:.1f} | "
                     f"{lv['texts_per_s']:.1f} | {_figure(lv['p50_ms'])} | {_figure(lv['p95_ms'])} | "
                     f"{_figure(lv['p99_ms'])} | {busy} |")
    return head + "\n".join(lines)


def load_test_view(ref: str | None):
    """(markdown, chart) of the picked deployment's newest load test; figures only, no paths or logs."""
    if not ref:
        return NOTHING, None
    try:
        levels = api.latest_load_test(ref)
    except WorkbenchError as exc:
        return fail(str(exc)), None
    if not levels:
        return NOTHING, None
    first = levels[0]
    job = f"job {first['job_id']}" if first["job_id"] else "a load test"
    best = max(levels, key=lambda lv: lv["requests_per_s"])
    summary = (f"**Load test** ({job}, {first['created_at'].replace('T', ' ')}, fingerprint "
               f"`{first['fingerprint_hash']}`): best {best['requests_per_s']:.1f} requests/s at concurrency "
               f"{best['concurrency']}. Client-side latency; the load generator ran on this machine too.")
    busy = [str(lv["concurrency"]) for lv in levels if lv["busy"]]
    if busy:
        summary += (f"  \n{WARNING} The machine was busy at concurrency {', '.join(busy)}: "
                    "those figures are not trustworthy.")
    chart = loadtest_charts.latency_vs_throughput(
        [(f"deployment {first['deployment_id']}", levels)],
        title=f"Deployment {first['deployment_id']}: latency against throughput ({job})")
    return summary + "\n\n" + levels_table(levels), chart


def _whole(value):
    return int(value) if isinstance(value, float) and value.is_integer() else value


@roles.editor_only("run a load test")
def start_load_test(ref: str | None, concurrency: str, requests, max_seconds, warmup, slo, dataset: str | None):
    holder: dict = {}

    def action() -> str:
        if not ref:
            raise WorkbenchError("pick a deployment to load-test")
        params = {"concurrency": (concurrency or "").strip() or DEFAULTS["concurrency"], "requests": _whole(requests),
                  "max_seconds": max_seconds, "warmup": _whole(warmup), "slo_p95_ms": slo or 0}
        job = api.submit_load_test(ref, params, dataset=dataset or None)
        holder["job"] = job.id
        return f"Load test queued as job {job.id}; its progress shows here."

    return attempt(action), {"job": holder.get("job")}


def load_test_progress(ref: str | None, state: dict | None):
    """While the job this page queued runs: its progress; once it ends, its message and the new chart."""
    job_id = (state or {}).get("job")
    if not job_id:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip()
    job = api.get_job(job_id)
    if not job.status.finished:
        return f"Job {job.id} {job.status.value}: {job.progress:.0%} {esc(job.message or '')}", gr.skip(), gr.skip(), \
            gr.skip()
    done = (f"Job {job.id} {job.status.value}: {esc(job.message or '')}" if job.status.value == "succeeded"
            else fail(f"job {job.id} {job.status.value}: {job.message or ''}"))
    summary, chart = load_test_view(ref)
    return done, summary, chart, {}


def build(pick: gr.Dropdown) -> None:
    """The section, below the deployment picker `pick`."""
    with gr.Accordion("Load test: latency against throughput", open=False) as section:
        summary = gr.Markdown(NOTHING, elem_id="loadtest-summary")
        chart = gr.Plot(label="Load test", elem_id="loadtest-chart")
        with gr.Group() as form:
            with gr.Row():
                concurrency = gr.Textbox(DEFAULTS["concurrency"], label="Concurrencies (senders per level)",
                                         elem_id="loadtest-concurrency", scale=2)
                requests = gr.Number(DEFAULTS["requests"], label="Requests per level", precision=0, minimum=1,
                                     elem_id="loadtest-requests")
                seconds = gr.Number(DEFAULTS["max_seconds"], label="Time cap per level (s)", minimum=0.5,
                                    elem_id="loadtest-seconds")
                warmup = gr.Number(DEFAULTS["warmup"], label="Warm-up requests", precision=0, minimum=0,
                                   elem_id="loadtest-warmup")
                slo = gr.Number(DEFAULTS["slo"], label="p95 SLO (ms, 0 = none)", minimum=0, elem_id="loadtest-slo")
                dataset = gr.Dropdown(label="Texts from (blank: the deployment's reference)", choices=[("", "")],
                                      value="", elem_id="loadtest-dataset")
            run = gr.Button("Run load test", elem_id="loadtest-run")
        roles.editor_control(form)
        status = gr.Markdown(elem_id="loadtest-status")
    job = gr.State({})

    gr.on([pick.change, section.expand], load_test_view, pick, [summary, chart], show_progress="hidden", **PRIVATE)
    run.click(start_load_test, [pick, concurrency, requests, seconds, warmup, slo, dataset], [status, job], **PRIVATE)
    gr.Timer(PROGRESS_S).tick(load_test_progress, [pick, job], [status, summary, chart, job], show_progress="hidden",
                              **PRIVATE)
    dataset.focus(dataset_choices, None, dataset, show_progress="hidden", **PRIVATE)


def dataset_choices():
    """Editors only (the form is theirs): the datasets as they are when the list is opened."""
    return gr.update(choices=[("", "")] + named_choices(api.list_datasets()))
