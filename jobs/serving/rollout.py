"""A deployment's canary rollout, from the workbench's side: what `deploy` needs to start one, and the changes a
user makes to a running one (the canary's share, promote, rollback), each told to its server through /v1/admin/*
and then written to the record with an event; and the per-arm report the Deploy tab and the CLI show.

The server's admin calls are authorised by a token made at deploy: it reaches the server in its environment (never
its command line) and is kept for later calls in a file only this user can read, never in the database (whose
records the CLI prints).

Promote: the canary becomes the stable variant in the running server (no restart), the record follows, and when the
deployment was made from NAME@ALIAS the alias moves to the canary's registered version. A canary with no version of
that registered model yet is registered first (`model_registry.register_variant`), so promoting a canary never
needs a step by hand; a degenerate canary is refused unless forced, like any promote of an alias.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from typing import Any

from jobs.serving import ADMIN_TOKEN_ENV
from jobs.serving.canary import CANARY, STABLE, RolloutPolicy
from storage import rollouts, settings
from storage.entities import Deployment, DeploymentEvent, Variant
from storage.errors import Conflict, InvalidInput, WorkbenchError

# deploy's keyword -> RolloutPolicy's field
POLICY_OPTIONS = {"canary_percent": "percent", "rollback_error_rate_increase": "error_rate_increase",
                  "rollback_p95_ratio": "p95_ratio", "rollback_min_requests": "min_requests",
                  "rollback_window_s": "window_s"}
ADMIN_TIMEOUT_S = 30.0  # a promote waits for nothing but a swap; a server this slow to answer is in trouble
CONFIDENCE = 0.95


# ---- at deploy ------------------------------------------------------------------------------------------


def policy_for(canary: int | str | None, options: dict[str, Any]) -> RolloutPolicy | None:
    """The canary's share and rollback thresholds from deploy's keywords; None without a canary."""
    unknown = sorted(set(options) - set(POLICY_OPTIONS))
    if unknown:
        raise InvalidInput(f"unknown deploy option {unknown[0]!r}")
    given = {k: v for k, v in options.items() if v is not None}
    if canary is None or (isinstance(canary, str) and not canary.strip()):
        if given:
            raise InvalidInput(f"{next(iter(given))} needs a canary to apply to (--canary VARIANT_OR_NAME@ALIAS)",
                               inputs=["canary"])
        return None
    try:
        return RolloutPolicy(**{POLICY_OPTIONS[k]: v for k, v in given.items()})
    except ValueError as exc:
        name = str(exc).split(" ", 1)[0]
        raise InvalidInput(str(exc), inputs=[name] if name in POLICY_OPTIONS else []) from None


def resolve_canary(canary: int | str, stable: Variant) -> Variant:
    from jobs.tracking.variant_refs import resolve_variant

    variant = resolve_variant(canary.strip() if isinstance(canary, str) else canary)
    if variant.id == stable.id:
        raise InvalidInput(f"the canary is variant {variant.id}, the stable variant itself: pick another one",
                           inputs=["canary"])
    return variant


def record_fields(canary: int | str, variant: Variant, policy: RolloutPolicy) -> dict[str, Any]:
    return {"canary_variant_id": variant.id, "canary_variant_sha256": variant.sha256,
            "canary_ref": str(canary).strip()[:520], "canary_percent": policy.percent,
            "rollout": policy.thresholds()}


def server_args(variant: Variant, policy: RolloutPolicy) -> list[str]:
    return ["--canary-variant-id", str(variant.id), *policy.server_args()]


def _token_path(deployment_id: int):
    return settings.home() / "deployments" / f"{deployment_id}.admin-token"


def new_admin_token(deployment_id: int) -> dict[str, str]:
    """A fresh token for the deployment's server, kept readable by this user only; the server's environment."""
    token = secrets.token_urlsafe(32)
    path = _token_path(deployment_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token)
    return {ADMIN_TOKEN_ENV: token}


def started_event(deployment: Deployment) -> DeploymentEvent:
    return rollouts.add_event(
        deployment.id, "canary", f"canary variant {deployment.canary_variant_id} deployed beside variant "
        f"{deployment.variant_id} for {deployment.canary_percent:g} % of users",
        {"canary_variant_id": deployment.canary_variant_id, "canary_ref": deployment.canary_ref,
         "percent": deployment.canary_percent, "thresholds": deployment.rollout})


# ---- changes to a running rollout ----------------------------------------------------------------------


def _with_canary(ref: int | str) -> Deployment:
    from jobs.serving import deployments

    deployment = deployments.get_deployment(ref)
    if deployment.canary_variant_id is None:
        last = rollouts.list_events(deployment.id, 1)
        why = f" ({last[0].message})" if last and last[0].kind in ("auto_rollback", "rollback", "promote") else ""
        undo = ""
        moved = (last[0].details or {}) if last and last[0].kind == "promote" else {}
        if moved.get("alias") and moved.get("alias_previous_version"):
            # a promote is undone in the registry (its history knows the previous version), then redeployed
            undo = (f"; to undo that promote: `workbench registry rollback {moved['registered_model']} --alias "
                    f"{moved['alias']}` moves the alias back to version {moved['alias_previous_version']}, then "
                    f"deploy {deployment.alias} again")
        raise Conflict(f"deployment {deployment.id} has no canary now{why}{undo}")
    if deployment.status != "ready":
        raise Conflict(f"deployment {deployment.id} is {deployment.status}: its server cannot change its rollout")
    return deployment


def _admin_call(deployment: Deployment, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """POST `body` (GET without one) to the server's admin `path` with the deployment's token; its JSON answer."""
    import httpx

    from jobs.serving import deployments

    try:
        token = _token_path(deployment.id).read_text().strip()
    except FileNotFoundError:
        raise Conflict(f"deployment {deployment.id}'s admin token is gone ({_token_path(deployment.id)}): its "
                       "rollout cannot be changed; stop it and deploy again") from None
    url = deployments._probe_url(deployment, path)
    try:
        response = httpx.request("GET" if body is None else "POST", url,
                                 json=body, headers={"X-Admin-Token": token}, timeout=ADMIN_TIMEOUT_S)
    except httpx.HTTPError as exc:
        raise Conflict(f"deployment {deployment.id}'s server did not answer {path} ({type(exc).__name__})") from None
    try:
        answer = response.json()
    except ValueError:
        answer = {"detail": response.text[:300]}
    if response.status_code != 200:
        detail = answer.get("detail") if isinstance(answer, dict) else answer
        raise Conflict(f"deployment {deployment.id}'s server refused: {detail}")
    return answer


def _the_record(deployment_id: int) -> Deployment:
    from jobs.serving import deployments

    return deployments.get_deployment(deployment_id, refresh_status=False)


def set_percent(ref: int | str, percent: float) -> Deployment:
    """Change the canary's share live: users only move from stable to canary when it rises (consistent hashing)."""
    ok = isinstance(percent, (int, float)) and not isinstance(percent, bool) and percent == percent
    if not ok or not 0 <= percent <= 100:
        raise InvalidInput(f"the canary's share is a number from 0 to 100, not {percent!r}", inputs=["percent"])
    deployment = _with_canary(ref)
    _admin_call(deployment, "/v1/admin/percent", {"percent": float(percent)})
    rollouts.add_event(deployment.id, "percent", f"canary share changed from {deployment.canary_percent:g} % to "
                       f"{float(percent):g} %", {"from": deployment.canary_percent, "to": float(percent)},
                       canary_percent=float(percent))
    return _the_record(deployment.id)


def rollback(ref: int | str) -> Deployment:
    """Remove the canary from the running server: the stable variant takes every user again."""
    deployment = _with_canary(ref)
    _admin_call(deployment, "/v1/admin/rollback", {})
    rollouts.add_event(deployment.id, "rollback", f"canary variant {deployment.canary_variant_id} rolled back by "
                       f"hand: variant {deployment.variant_id} serves 100 %",
                       {"canary_variant_id": deployment.canary_variant_id}, canary_variant_id=None,
                       canary_variant_sha256=None, canary_percent=0.0)
    return _the_record(deployment.id)


def _registry_version(name: str, variant_id: int) -> tuple[str, bool]:
    """(the version of `name` that is this variant, whether it was registered now)."""
    from jobs.tracking import model_registry as registry

    client = registry._client()
    for mv in registry._versions(client, name):
        if (mv.tags or {}).get(f"{registry.TAG}variant_id") == str(variant_id):
            return str(mv.version), False
    return registry.register_variant(variant_id, name)["version"], True


def promote(ref: int | str, force: bool = False) -> Deployment:
    """The canary becomes the stable variant (in the running server, then the record); a deployment made from
    NAME@ALIAS moves that alias to the canary's version (registered now if it has none)."""
    from jobs.tracking import model_registry as registry
    from jobs.tracking.variant_refs import parse_alias

    deployment = _with_canary(ref)
    canary_id, previous = deployment.canary_variant_id, deployment.variant_id
    moved: dict[str, Any] | None = None
    parsed = parse_alias(deployment.alias) if deployment.alias else None
    version = registered = None
    if parsed is not None:  # everything that can refuse is asked before the server changes anything
        version, registered = _registry_version(parsed[0], canary_id)
        reason = registry.degenerate_reason(canary_id)
        if reason and not force:
            raise InvalidInput(f"refused: the canary, variant {canary_id}, is degenerate ({reason}); force the "
                               "promotion to do it anyway")
    _admin_call(deployment, "/v1/admin/promote", {})
    details: dict[str, Any] = {"variant_id": canary_id, "previous_variant_id": previous}
    message = f"canary variant {canary_id} promoted: it replaces variant {previous} for every user"
    failure = None
    if parsed is not None:
        details.update(registered_model=parsed[0], alias=parsed[1], version=version, registered_now=registered)
        try:
            moved = registry.promote(parsed[0], version, parsed[1], force=force)
            message += f"; {deployment.alias} now points at version {version}"
            details["alias_previous_version"] = moved["previous"]
        except WorkbenchError as exc:  # the server already serves it: say so, and what is left to do by hand
            failure = exc
            message += f"; {deployment.alias} could NOT be moved to version {version}: {exc}"
    rollouts.add_event(deployment.id, "promote", message, details, variant_id=canary_id,
                       variant_sha256=deployment.canary_variant_sha256, canary_variant_id=None,
                       canary_variant_sha256=None, canary_percent=0.0)
    if failure is not None:
        raise Conflict(message) from None
    return _the_record(deployment.id)


# ---- what is shown -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArmReport:
    arm: str  # stable | canary
    variant_id: int
    share_percent: float
    requests: float  # routed to it since its server started (or since it became stable)
    errors: float
    p50_s: float | None  # estimated from the histogram's buckets
    p95_s: float | None
    with_feedback: int  # over the deployment's life, for this variant
    correct: int
    accuracy: float | None
    ci_low: float | None  # Wilson interval at CONFIDENCE
    ci_high: float | None


def arm_report(ref: int | str, scrape=None) -> list[ArmReport]:
    """One row per current arm: traffic from the server's metrics (`scrape`, a ServerMetrics, when it was read
    already; none: counts 0), feedback accuracy from the stored feedback with a Wilson interval."""
    from statsmodels.stats.proportion import proportion_confint

    from jobs.serving import deployments

    deployment = deployments.get_deployment(ref, refresh_status=False)
    counts = rollouts.feedback_counts(deployment.id)
    arms = [(STABLE, deployment.variant_id, 100.0 - deployment.canary_percent)]
    if deployment.canary_variant_id is not None:
        arms.append((CANARY, deployment.canary_variant_id, deployment.canary_percent))
    else:
        arms[0] = (STABLE, deployment.variant_id, 100.0)
    out = []
    for arm, variant_id, share in arms:
        key = (arm, str(variant_id))
        latency = scrape.arm_latency.get(key) if scrape is not None else None
        c = counts.get(variant_id, {"with_feedback": 0, "correct": 0})
        accuracy = low = high = None
        if c["with_feedback"]:
            accuracy = c["correct"] / c["with_feedback"]
            low, high = (float(x) for x in proportion_confint(c["correct"], c["with_feedback"],
                                                              alpha=1 - CONFIDENCE, method="wilson"))
        out.append(ArmReport(
            arm=arm, variant_id=variant_id, share_percent=share,
            requests=scrape.arm_requests.get(key, 0.0) if scrape is not None else 0.0,
            errors=scrape.arm_errors.get(key, 0.0) if scrape is not None else 0.0,
            p50_s=latency.quantile(0.5) if latency else None, p95_s=latency.quantile(0.95) if latency else None,
            with_feedback=c["with_feedback"], correct=c["correct"], accuracy=accuracy, ci_low=low, ci_high=high))
    return out


def live_rollout(ref: int | str) -> dict[str, Any]:
    """What the running server says of its arms now (shares, recent windows, its last rollout change)."""
    from jobs.serving import deployments

    return _admin_call(deployments.get_deployment(ref), "/v1/admin/rollout")


def events(ref: int | str, limit: int = 50) -> list[DeploymentEvent]:
    from jobs.serving import deployments

    return rollouts.list_events(deployments.get_deployment(ref, refresh_status=False).id, limit)


def rollout_line(deployment: Deployment, last: DeploymentEvent | None) -> str:
    """One line on a deployment's rollout for lists: its canary now, or the last thing that happened to it."""
    if deployment.canary_variant_id is not None:
        return f"canary #{deployment.canary_variant_id} at {deployment.canary_percent:g} %"
    if last is not None and last.kind in ("auto_rollback", "rollback", "promote"):
        return last.message
    return ""
