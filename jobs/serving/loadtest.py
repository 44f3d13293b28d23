"""What a load test needs beside its generator: the deployment it may target (loopback only, running), the API
key the deployment expects (from the worker's environment), and its stored rows read back for the Deploy and
Compare tabs, each with whether the machine was busy while it ran."""

from __future__ import annotations

import os
from typing import Any, Sequence

from jobs.serving.loadgen import is_loopback
from storage import catalog
from storage import deployments as store
from storage.entities import Deployment, LoadTest
from storage.errors import InvalidInput, NotFound

# A wildcard listener is reached on loopback, as the deployment's own readiness probe does.
WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def target_url(deployment: Deployment) -> str:
    """Where the load goes: its predict route on loopback; InvalidInput for a deployment on another host."""
    host = WILDCARDS.get(deployment.host, deployment.host)
    if not is_loopback(host):
        raise InvalidInput(f"deployment {deployment.id} listens on {deployment.host}: a load test only targets this "
                           "machine (127.0.0.1, ::1 or localhost)", inputs=["deployment"])
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{deployment.port}/v1/predict"


def check_target(deployment_id: int) -> Deployment:
    """The deployment, if a load test may be queued for it: on loopback (checked before any request goes out) and
    running (starting or ready; the job waits for ready)."""
    from jobs.serving.deployments import refresh

    deployment = store.get_deployment(deployment_id)
    target_url(deployment)
    deployment = refresh(deployment)
    if not deployment.running:
        raise InvalidInput(f"deployment {deployment.id} is {deployment.status}"
                           + (f": {deployment.reason}" if deployment.reason else "") + "; start it again to load-test it",
                           inputs=["deployment"])
    return deployment


def api_key_for(deployment: Deployment, env_name: str = "") -> str | None:
    """The key to send (the first, when the variable holds several), read from the worker's environment under the
    name the deployment was started with (or `env_name`); None when the deployment takes requests without one."""
    if not deployment.config.get("api_key_set"):
        return None
    name = env_name or deployment.config.get("api_key_env")
    if not name:
        raise InvalidInput(f"deployment {deployment.id} needs an API key, and it was given directly (not through "
                           "--api-key-env), so the worker cannot know it: pass api_key_env=NAME, an environment "
                           "variable of the worker holding the key", inputs=["api_key_env"])
    keys = [k.strip() for k in os.environ.get(name, "").split(",") if k.strip()]
    if not keys:
        raise InvalidInput(f"deployment {deployment.id} needs an API key: set {name} in the worker's environment "
                           "(the variable the deployment read its key from)", inputs=["api_key_env"])
    return keys[0]


def variant_ids(deployment: Deployment) -> list[int]:
    """Every variant it serves: the stable one, and its canary when it has one."""
    canary = getattr(deployment, "canary_variant_id", None)
    return [deployment.variant_id] + ([canary] if canary and canary != deployment.variant_id else [])


def reference_dataset_id(deployment: Deployment) -> int | None:
    """The dataset whose texts stand for its traffic: the deployment's reference, else its variant's dataset."""
    if deployment.config.get("reference_dataset_id"):
        return int(deployment.config["reference_dataset_id"])
    try:
        return catalog.get_variant(deployment.variant_id).dataset_id
    except NotFound:
        return None


# ---- reading back ---------------------------------------------------------------------------------------------


def busy(load: dict[str, Any], threshold: float) -> bool:
    """Other processes (not the server, not the load generator) or a VM neighbour took this share of the CPU."""
    return max(load.get("other_cpu_fraction") or 0.0, load.get("steal_fraction") or 0.0) > threshold


def row_dict(row: LoadTest, threshold: float) -> dict[str, Any]:
    return {"id": row.id, "job_id": row.job_id, "deployment_id": row.deployment_id, "variant_id": row.variant_id,
            "variant_ids": list(row.variant_ids), "concurrency": row.concurrency, "sent": row.sent, "ok": row.ok,
            "errors": dict(row.errors), "requests_per_s": row.requests_per_s, "texts_per_s": row.texts_per_s,
            "p50_ms": row.p50_ms, "p95_ms": row.p95_ms, "p99_ms": row.p99_ms, "seconds": row.seconds,
            "stopped_by": row.stopped_by, "texts_per_request": row.texts_per_request, "device": row.device,
            "load": dict(row.load), "busy": busy(row.load, threshold), "fingerprint_hash": row.fingerprint_hash,
            "created_at": row.created_at.isoformat(timespec="seconds") + "Z"}


def load_test_rows(*, deployment_id: int | None = None, variant_ids: Sequence[int] | None = None,
                   fingerprint_hash: str | None = None, job_id: int | None = None) -> list[dict[str, Any]]:
    """Stored levels as plain dicts, oldest first, each with `busy` (WORKBENCH_BUSY_CPU_FRACTION)."""
    from jobs.decisions.compare import Rules
    from storage.load_tests import list_load_tests

    threshold = Rules.from_settings().busy_cpu_fraction
    rows = list_load_tests(deployment_id=deployment_id, job_id=job_id, fingerprint_hash=fingerprint_hash,
                           variant_ids=list(variant_ids) if variant_ids is not None else None)
    return [row_dict(r, threshold) for r in rows]


def latest_run(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The levels of the newest load-test job among `rows`, by concurrency."""
    if not rows:
        return []
    newest = max(rows, key=lambda r: r["id"])["job_id"]
    return sorted((r for r in rows if r["job_id"] == newest), key=lambda r: r["concurrency"])


def verdict(levels: Sequence[dict[str, Any]], slo_p95_ms: float = 0.0) -> str:
    """One sentence: the best throughput and where, and up to which concurrency p95 stays within the SLO."""
    answered = [lv for lv in levels if lv["ok"]]
    if not answered:
        return "no request was answered OK at any concurrency"
    best = max(answered, key=lambda lv: lv["requests_per_s"])
    text = (f"best throughput {best['requests_per_s']:.1f} requests/s ({best['texts_per_s']:.1f} texts/s) at "
            f"concurrency {best['concurrency']}, p95 {best['p95_ms']:.1f} ms")
    if slo_p95_ms > 0:
        passing = [lv for lv in answered if lv["p95_ms"] <= slo_p95_ms and not lv["errors"]]
        if passing:
            top = max(passing, key=lambda lv: lv["concurrency"])
            text += (f"; p95 within the {slo_p95_ms:g} ms SLO without errors up to concurrency {top['concurrency']} "
                     f"({top['requests_per_s']:.1f} requests/s)")
        else:
            text += f"; p95 exceeds the {slo_p95_ms:g} ms SLO (or errors came back) at every concurrency"
    failed = sum(sum(lv["errors"].values()) for lv in levels)
    if failed:
        text += f"; {failed} request(s) not answered OK"
    return text
