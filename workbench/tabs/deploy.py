"""Deploy tab: start a model server for a variant, a live table of deployments (starting → ready, crashed with
why, stopped), stop one, read its log, and watch a ready one's live metrics (requests, rate, p50/p95 latency,
batch sizes, errors) read from its `/metrics` on a timer.

The tab only calls `jobs.api`; the core starts, checks and stops the servers and parses their metrics.
"""

from __future__ import annotations

import gradio as gr

from jobs import api
from storage.errors import WorkbenchError
from workbench import roles, serving_charts
from workbench.choices import ref_choices, variant_choices
from workbench.tabs import deploy_canary, deploy_drift, deploy_export, deploy_loadtest
from workbench.tabs.jobs import STATUS_COLORS as JOB_COLORS
from workbench.tabs.predictor import alias_choices, default_variant, keep, values
from workbench.ui import WARNING, Refresh, attempt, esc, fail

REFRESH_S = 2.0
LOG_TAIL_CHARS = 20_000
PRIVATE = dict(api_visibility="private")  # UI events, not API endpoints
STATUS_COLORS = {"starting": JOB_COLORS["running"], "ready": JOB_COLORS["succeeded"],
                 "crashed": JOB_COLORS["failed"], "stopped": JOB_COLORS["queued"]}
NO_DEPLOYMENT = "Pick a deployment to see its live metrics."
DEFAULTS = dict(max_batch=16, max_wait_ms=5, max_queue=256, timeout_s=10, cache_size=0)


# ---- what is shown ------------------------------------------------------------------------------------------


def shown_reason(reason: str | None, editor: bool = True) -> str | None:
    """Why a deployment is in its state; for a viewer without its log's last line (a traceback names paths)."""
    if reason is None or editor:
        return reason
    return roles.without_paths(reason.split("; its log ends with:")[0])


def deployments_html(deployments=None, editor: bool = True) -> str:
    deployments = api.list_deployments() if deployments is None else deployments
    if not deployments:
        return "<p>No deployments yet. Pick a variant above and deploy it.</p>"
    rows = []
    for d in deployments:
        color = STATUS_COLORS.get(d.status, "#888")
        why = shown_reason(d.reason, editor)
        reason = f"<br><span class='deploy-reason'>{esc(why)}</span>" if why else ""
        url = f"<a href='{esc(d.url)}/docs' target='_blank'>{esc(d.url)}</a>" if d.running else esc(d.url)
        started = (d.started_at or d.created_at).strftime("%Y-%m-%d %H:%M:%S")
        variant = f"#{d.variant_id}" + (f" ({esc(d.alias)})" if d.alias else "")
        if d.canary_variant_id is not None:  # the rest of the rollout is in the "Canary rollout" section
            variant += f" + canary #{d.canary_variant_id} at {d.canary_percent:g} %"
        rows.append(
            f"<tr data-deployment-id='{d.id}' data-status='{d.status}'><td>{d.id}</td><td>{esc(d.name)}</td>"
            f"<td>{variant}</td><td><span class='deploy-status' style='color:{color};font-weight:600'>{d.status}"
            f"</span>{reason}</td><td>{url}</td><td>{started}</td></tr>")
    head = "".join(f"<th>{h}</th>" for h in ("id", "name", "variant", "status", "URL", "started"))
    return (f"<table class='jobs-table' id='deployments-table'><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def deployment_choices(deployments) -> list[tuple[str, str]]:
    return ref_choices(deployments, lambda d: f"{d.name} · {d.status}")


def _ms(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds * 1000:.1f} ms"


def metrics_view(deployment, previous, editor: bool = True):
    """(markdown, chart, this scrape) for a deployment; only a ready one is asked for its metrics."""
    if deployment is None:
        return NO_DEPLOYMENT, None, None
    if deployment.status != "ready":
        reason = shown_reason(deployment.reason, editor)
        why = f" ({esc(reason)})" if reason else ""
        when = "live metrics show once it is ready" if deployment.running else "no live metrics, its server is not running"
        return f"Deployment {deployment.id} is **{deployment.status}**{why}: {when}.", None, None
    try:
        now = api.deployment_metrics(deployment.id)
    except WorkbenchError as exc:
        return f"{WARNING} No metrics from deployment {deployment.id}: {esc(exc)}", None, None
    same_server = previous is not None and previous[0] == deployment.id
    rate = now.requests_per_s(previous[1] if same_server else None)
    latency = now.predict_latency
    errors = now.errors_by_reason()
    rate_text = (f"{rate:.2f}/s over the last {now.taken_at - previous[1].taken_at:.1f} s" if rate is not None
                 else "rate from the next poll")
    lines = [
        f"**Requests** {now.request_count():g} predict requests so far · {rate_text}",
        f"**Latency** p50 {_ms(latency.quantile(0.5) if latency else None)} · "
        f"p95 {_ms(latency.quantile(0.95) if latency else None)} · "
        f"mean {_ms(latency.mean if latency else None)} (p50/p95 estimated from the histogram's buckets)",
        f"**Batches** {now.batch_size.count if now.batch_size else 0:g} · mean "
        f"{(now.batch_size.mean or 0) if now.batch_size else 0:.1f} texts · **queue** {now.queue_depth:g} waiting",
        f"**Errors** {now.error_count():g}" + (" (" + ", ".join(f"{k} {v:g}" for k, v in errors.items()) + ")"
                                              if errors else "")
        + f" · **cache** {now.cache_hits:g} hits / {now.cache_misses:g} misses",
    ]
    chart = serving_charts.live_metrics(
        latency.per_bucket(scale=1000) if latency else [], now.batch_size.per_bucket() if now.batch_size else [],
        list(errors.items()), title=f"Deployment {deployment.id} ({deployment.name}) since its server started")
    return "\n\n".join(lines), chart, (deployment.id, now)


def _find(deployments, ref: str | None):
    return next((d for d in deployments if str(d.id) == str(ref)), None) if ref else None


def _whole(value):
    """Gradio numbers arrive as floats; the core wants whole numbers as ints (and refuses anything else)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


# ---- handlers -----------------------------------------------------------------------------------------------


def tick(ref: str | None, seen: dict | None, request: gr.Request = None):
    """Every few seconds: the table, the picked deployment's metrics, and the picker's choices when they changed
    (re-sent every time, they would close the list under someone choosing from it)."""
    seen = seen or {}
    deployments = api.list_deployments()
    editor = roles.is_editor(request)
    text, chart, scrape = metrics_view(_find(deployments, ref), seen.get("scrape"), editor)
    choices = deployment_choices(deployments)
    pick = gr.update(choices=choices) if choices != seen.get("choices") else gr.skip()
    return deployments_html(deployments, editor), pick, text, chart, {"choices": choices, "scrape": scrape}


@roles.editor_only("deploy a variant")
def deploy_variant(variant: str | None, name: str | None, max_batch, max_wait_ms, max_queue, timeout_s, cache_size):
    holder: dict = {}

    def action() -> str:
        if not (variant or "").strip():
            raise WorkbenchError("pick a variant (or type NAME@ALIAS) to deploy")
        # returns at once (`starting`): the table's refresh shows it become ready, or crash with the reason
        deployment = api.deploy(variant.strip(), max_batch=_whole(max_batch), max_wait_ms=max_wait_ms,
                                max_queue=_whole(max_queue), timeout_s=timeout_s, cache_size=_whole(cache_size),
                                name=(name or "").strip() or None)
        holder["id"] = str(deployment.id)
        return f"Deployment {deployment.id} is starting at {deployment.url}: the table shows when it is ready."

    message = attempt(action)
    deployments = api.list_deployments()
    pick = gr.update(choices=deployment_choices(deployments), value=holder["id"]) if holder else gr.skip()
    return message, deployments_html(deployments), pick


@roles.editor_only("stop a deployment")
def stop_deployment(ref: str | None):
    if not ref:
        return fail("pick a deployment to stop"), gr.skip()
    message = attempt(lambda: f"deployment {ref}: {api.stop_deployment(ref).reason}")
    return message, deployments_html()


def deployment_log(ref: str | None) -> str:
    """Editor-only (not on the viewer allow-list): a server's log names paths on the server."""
    if not ref:
        return ""
    try:
        tail = api.deployment_logs(ref, LOG_TAIL_CHARS)
    except WorkbenchError as exc:
        return fail(str(exc))
    if not tail.omitted:
        return tail.text
    _cut, _, whole_lines = tail.text.partition("\n")  # the first line was cut in its middle
    return f"[earlier lines omitted: showing the last {LOG_TAIL_CHARS:,} characters]\n{whole_lines or tail.text}"


# ---- layout -------------------------------------------------------------------------------------------------


def build() -> Refresh:
    gr.Markdown("Serve a variant over HTTP (`POST <URL>/v1/predict` with `{\"text\": …}` or `{\"texts\": […]}`), "
                "batched dynamically, with Prometheus metrics at `<URL>/metrics`. Each deployment is its own "
                "process on this machine; it keeps running when the app stops, until it is stopped here.")
    with gr.Group() as form:
        with gr.Row():
            variant = gr.Dropdown(label="Variant (or type NAME@ALIAS)", choices=[], allow_custom_value=True,
                                  elem_id="deploy-variant", scale=3)
            name = gr.Textbox(label="Name (blank: the variant's)", elem_id="deploy-name", scale=2)
        with gr.Row():
            max_batch = gr.Number(DEFAULTS["max_batch"], label="Max batch (texts)", precision=0, minimum=1,
                                  elem_id="deploy-max-batch")
            max_wait = gr.Number(DEFAULTS["max_wait_ms"], label="Max wait (ms)", minimum=0, elem_id="deploy-max-wait")
            max_queue = gr.Number(DEFAULTS["max_queue"], label="Max queue (requests)", precision=0, minimum=1,
                                  elem_id="deploy-max-queue")
            timeout = gr.Number(DEFAULTS["timeout_s"], label="Timeout (s)", minimum=0, elem_id="deploy-timeout")
            cache = gr.Number(DEFAULTS["cache_size"], label="Cache size (0: none)", precision=0, minimum=0,
                              elem_id="deploy-cache")
        button = gr.Button("Deploy", variant="primary", elem_id="deploy-button")
    roles.editor_control(form)
    deploy_export.build(variant)  # "Ship it": the picked variant as a bundle that runs without the workbench
    status = gr.Markdown(elem_id="deploy-status")
    table = gr.HTML(elem_id="deployments-html")
    with gr.Row():
        pick = gr.Dropdown(label="Deployment", choices=[], interactive=True, elem_id="deploy-pick", scale=3)
        stop = gr.Button("Stop", variant="stop", elem_id="deploy-stop", scale=1)
    roles.editor_control(stop)
    metrics = gr.Markdown(NO_DEPLOYMENT, elem_id="deploy-metrics")
    chart = gr.Plot(label="Live metrics", elem_id="deploy-chart")
    deploy_drift.build(pick)
    deploy_loadtest.build(pick)  # latency against throughput of the picked deployment, and a load test to run
    deploy_canary.build(variant, pick)  # a canary beside the form's variant; the picked deployment's arms
    with gr.Accordion("Server log", open=False) as log_section:
        log = gr.Textbox(label="Log (its end)", lines=12, max_lines=30, autoscroll=True, interactive=False,
                         elem_id="deploy-log")
        log_button = gr.Button("Refresh log", elem_id="deploy-log-refresh")
    roles.editor_control(log_section)
    # the picker's last choices, and the last scrape (deployment id, ServerMetrics) for requests/s between polls
    seen = gr.State({})

    gr.Timer(REFRESH_S).tick(tick, [pick, seen], [table, pick, metrics, chart, seen],
                             show_progress="hidden", **PRIVATE)
    button.click(deploy_variant, [variant, name, max_batch, max_wait, max_queue, timeout, cache],
                 [status, table, pick], **PRIVATE)
    stop.click(stop_deployment, pick, [status, table], **PRIVATE)
    gr.on([pick.change, log_button.click], deployment_log, pick, log, show_progress="hidden", **PRIVATE)

    def refresh(request: gr.Request = None):
        tree = api.variant_tree()
        deployments = api.list_deployments()
        choices = variant_choices(tree) + alias_choices()
        return (gr.update(choices=choices), deployments_html(deployments, roles.is_editor(request)),
                gr.update(choices=deployment_choices(deployments)), {"values": values(choices),
                                                                     "default": default_variant(tree)})

    known = gr.State({})

    def fix_values(choices: dict, current: str | None):
        """After a refresh: keep the picked variant while it still exists (or a typed alias), else the default."""
        if not choices or (current and "@" in current):
            return gr.skip()
        return keep(current, choices["values"], choices["default"])

    known.change(fix_values, [known, variant], variant, **PRIVATE)
    return Refresh(refresh, [variant, table, pick, known])
