"""Deploy tab, canary section: deploy the picked variant with a canary beside it (its share and the thresholds of
its automatic rollback), and for the picked deployment a per-arm table (share, requests, errors, p95, feedback
accuracy with its Wilson interval), its rollout events, and the share change, Promote and Rollback buttons.

Editors act; viewers see the table and the events. The core (`jobs.serving.rollout` through `jobs.api`) does the
work: this module only formats what comes back.
"""

from __future__ import annotations

import gradio as gr

from jobs import api
from storage.errors import WorkbenchError
from workbench import roles
from workbench.ui import WARNING, attempt, esc, fail

PRIVATE = dict(api_visibility="private")  # UI events, not API endpoints
REFRESH_S = 3.0
NO_PICK = "Pick a deployment to see its arms."
SHOWN_EVENTS = 8


def _ms(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds * 1000:.1f} ms"


def _accuracy(row) -> str:
    if row.accuracy is None:
        return "no feedback yet"
    return (f"{row.accuracy:.1%} [{row.ci_low:.1%}, {row.ci_high:.1%}] "
            f"({row.correct}/{row.with_feedback})")


def arms_html(deployment, rows, scrape_error: str | None = None) -> str:
    head = "".join(f"<th>{h}</th>" for h in ("arm", "variant", "share", "requests", "errors", "p95",
                                             "feedback accuracy (95 % Wilson)"))
    body = "".join(
        f"<tr data-arm='{r.arm}'><td>{r.arm}</td><td>#{r.variant_id}</td><td>{r.share_percent:g} %</td>"
        f"<td>{r.requests:g}</td><td>{r.errors:g}</td><td>{_ms(r.p95_s)}</td><td>{esc(_accuracy(r))}</td></tr>"
        for r in rows)
    note = f"<p>{WARNING} No live figures: {esc(scrape_error)}</p>" if scrape_error else ""
    return (f"{note}<table class='jobs-table' id='canary-arms-table' data-deployment-id='{deployment.id}'>"
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


def events_markdown(events) -> str:
    if not events:
        return "No rollout events yet."
    return "\n".join(f"- {e.created_at:%Y-%m-%d %H:%M:%S} **{e.kind}**: {esc(e.message)}" for e in events)


def canary_view(ref: str | None):
    """(arms table, events) for the picked deployment; read-only, so viewers see it too."""
    if not ref:
        return NO_PICK, ""
    try:
        deployment = api.get_deployment(ref, refresh=False)
        scrape, why = None, None
        if deployment.status == "ready":
            try:
                scrape = api.deployment_metrics(deployment.id)
            except WorkbenchError as exc:
                why = str(exc)
        else:
            why = f"deployment {deployment.id} is {deployment.status}"
        rows = api.canary_report(deployment.id, scrape)
        events = api.deployment_events(deployment.id, SHOWN_EVENTS)
    except WorkbenchError as exc:
        return fail(str(exc)), ""
    return arms_html(deployment, rows, why), events_markdown(events)


def _thresholds(error_rate_increase, p95_ratio, min_requests) -> dict:
    out = {}
    if error_rate_increase not in (None, ""):
        out["rollback_error_rate_increase"] = float(error_rate_increase)
    if p95_ratio not in (None, ""):
        out["rollback_p95_ratio"] = float(p95_ratio)
    if min_requests not in (None, ""):
        value = float(min_requests)
        out["rollback_min_requests"] = int(value) if value.is_integer() else value
    return out


@roles.editor_only("deploy with a canary")
def deploy_with_canary(stable: str | None, canary: str | None, percent, error_rate_increase, p95_ratio,
                       min_requests):
    def action() -> str:
        if not (stable or "").strip():
            raise WorkbenchError("pick the stable variant above (or type NAME@ALIAS)")
        if not (canary or "").strip():
            raise WorkbenchError("pick a canary variant (or type NAME@ALIAS)")
        deployment = api.deploy(stable.strip(), canary=canary.strip(), canary_percent=percent,
                                **_thresholds(error_rate_increase, p95_ratio, min_requests))
        return (f"Deployment {deployment.id} is starting at {deployment.url} with canary variant "
                f"{deployment.canary_variant_id} for {deployment.canary_percent:g} % of users.")

    return attempt(action)


@roles.editor_only("change a canary's share")
def change_percent(ref: str | None, percent):
    if not ref:
        return fail("pick a deployment first"), *canary_view(ref)
    message = attempt(lambda: f"deployment {ref}: the canary now takes "
                              f"{api.set_canary_percent(ref, percent).canary_percent:g} % of users")
    return message, *canary_view(ref)


@roles.editor_only("promote a canary")
def promote_canary(ref: str | None):
    if not ref:
        return fail("pick a deployment first"), *canary_view(ref)
    message = attempt(lambda: api.deployment_events(api.promote_canary(ref).id, 1)[0].message)
    return message, *canary_view(ref)


@roles.editor_only("roll a canary back")
def rollback_canary(ref: str | None):
    if not ref:
        return fail("pick a deployment first"), *canary_view(ref)
    message = attempt(lambda: api.deployment_events(api.rollback_canary(ref).id, 1)[0].message)
    return message, *canary_view(ref)


def canary_choices():
    """The variants (and registry aliases) a canary can be, as the form's variant picker offers them."""
    from workbench.choices import variant_choices
    from workbench.tabs.predictor import alias_choices

    return gr.update(choices=variant_choices(api.variant_tree()) + alias_choices())


def build(variant: gr.Dropdown, pick: gr.Dropdown) -> None:
    """The section, under the deployments table: `variant` is the form's variant (the stable one), `pick` the
    deployment picked below the table."""
    with gr.Accordion("Canary rollout", open=False):
        gr.Markdown("A canary serves a share of users beside the stable variant, chosen by consistent hashing of "
                    "the `X-User-Id` header (without it, of the request's id). Answers carry `arm` and "
                    "`request_id`; `POST <URL>/v1/feedback {\"request_id\", \"correct\"}` says whether one was "
                    "right. The server rolls the canary back by itself when it does worse than the thresholds.")
        with gr.Group() as form:
            with gr.Row():
                canary = gr.Dropdown(label="Canary variant (id, name or NAME@ALIAS)", choices=[],
                                     allow_custom_value=True, elem_id="canary-variant", scale=3)
                percent = gr.Number(10, label="Canary share (%)", minimum=0, maximum=100, elem_id="canary-percent")
            with gr.Row():
                error_rate = gr.Number(None, label="Roll back at error rate + (0.05: five points)", minimum=0,
                                       maximum=1, elem_id="canary-error-rate")
                p95_ratio = gr.Number(None, label="Roll back at p95 × (1.5)", minimum=1, elem_id="canary-p95-ratio")
                min_requests = gr.Number(50, label="Min requests per arm", precision=0, minimum=1,
                                         elem_id="canary-min-requests")
            deploy = gr.Button("Deploy the variant above with this canary", elem_id="canary-deploy")
        roles.editor_control(form)
        status = gr.Markdown(elem_id="canary-status")
        arms = gr.HTML(NO_PICK, elem_id="canary-arms")
        events = gr.Markdown(elem_id="canary-events")
        with gr.Row() as actions:
            new_percent = gr.Number(10, label="New canary share (%)", minimum=0, maximum=100,
                                    elem_id="canary-new-percent", scale=2)
            set_share = gr.Button("Set share", elem_id="canary-set-percent", scale=1)
            promote = gr.Button("Promote", variant="primary", elem_id="canary-promote", scale=1)
            rollback = gr.Button("Rollback", variant="stop", elem_id="canary-rollback", scale=1)
        roles.editor_control(actions)

    deploy.click(deploy_with_canary, [variant, canary, percent, error_rate, p95_ratio, min_requests], status,
                 **PRIVATE)
    gr.on([pick.change], canary_view, pick, [arms, events], show_progress="hidden", **PRIVATE)
    gr.Timer(REFRESH_S).tick(canary_view, pick, [arms, events], show_progress="hidden", **PRIVATE)
    set_share.click(change_percent, [pick, new_percent], [status, arms, events], **PRIVATE)
    promote.click(promote_canary, pick, [status, arms, events], **PRIVATE)
    rollback.click(rollback_canary, pick, [status, arms, events], **PRIVATE)
    canary.focus(canary_choices, None, canary, show_progress="hidden", **PRIVATE)
