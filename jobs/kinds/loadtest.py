"""`loadtest`: drive a running deployment at a sweep of concurrencies and record, per level, what was sent and
answered, errors by status, throughput and client-side p50/p95/p99, the machine's load and the fingerprint.

The target is a deployment on this machine only (loopback), every level is bounded in requests and seconds, and
the texts are a dataset split's (the dataset given, else the deployment's reference, else its variant's). The rows
go to `load_tests`, never to `measurements`: these figures include HTTP, queueing and batching, and a load
generator sharing the machine, so advice and speedups do not read them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Literal

from jobs.runner.context import JobContext, JobResult
from jobs.runner.registry import register
from storage.errors import InvalidInput

MAX_LEVELS = 12
MAX_CONCURRENCY = 256
MAX_REQUESTS = 20_000
MAX_LEVEL_SECONDS = 300.0
MAX_TOTAL_SECONDS = 1800.0  # the whole sweep, levels x their cap
WARMUP_CONCURRENCY = 4
WARMUP_MAX_SECONDS = 30.0


@dataclass(frozen=True)
class LoadTestParams:
    deployment: int = field(default=0, metadata={"help": "id of the deployment to load (see `workbench deployments "
                                                         "list`); it must listen on this machine"})
    concurrency: tuple[int, ...] = field(default=(1, 4, 16, 32), metadata={
        "help": "concurrent senders per level, each waiting for its answer before the next request (comma-separated)"})
    requests: int = field(default=200, metadata={"help": "requests per level at most"})
    max_seconds: float = field(default=20.0, metadata={"help": "time cap per level, in seconds"})
    warmup: int = field(default=20, metadata={"help": "untimed requests before the first level"})
    texts_per_request: int = field(default=1, metadata={"help": "texts in each request"})
    split: Literal["test", "validation", "train"] = field(default="test", metadata={
        "help": "dataset split the texts come from"})
    texts: int = field(default=256, metadata={"help": "texts sampled from the split and cycled through"})
    slo_p95_ms: float = field(default=0.0, metadata={
        "help": "a p95 latency objective in ms: the result says up to which concurrency it holds (0: none)"})
    request_timeout_s: float = field(default=30.0, metadata={"help": "a request not answered within this is a timeout"})
    ready_wait_s: float = field(default=60.0, metadata={"help": "how long to wait for a starting deployment"})
    api_key_env: str = field(default="", metadata={
        "help": "environment variable of the worker holding the API key (default: the one the deployment was "
                "started with, --api-key-env)"})

    def __post_init__(self) -> None:
        if isinstance(self.deployment, bool) or not isinstance(self.deployment, int) or self.deployment < 1:
            raise ValueError("deployment is required: the id of a running deployment (workbench deployments list)")
        levels = self.concurrency
        if not levels or len(levels) > MAX_LEVELS or min(levels) < 1 or max(levels) > MAX_CONCURRENCY:
            raise ValueError(f"concurrency must be 1 to {MAX_LEVELS} levels, each from 1 to {MAX_CONCURRENCY} "
                             "senders, e.g. 1,4,16,32")
        if len(set(levels)) != len(levels):
            raise ValueError(f"concurrency lists a level twice: {','.join(map(str, levels))}")
        if not 1 <= self.requests <= MAX_REQUESTS:
            raise ValueError(f"requests per level must be from 1 to {MAX_REQUESTS}, not {self.requests}")
        if self.requests < max(levels):
            raise ValueError(f"requests per level ({self.requests}) must be at least the highest concurrency "
                             f"({max(levels)}), or some senders would send nothing")
        if not 0.5 <= self.max_seconds <= MAX_LEVEL_SECONDS:
            raise ValueError(f"max_seconds per level must be from 0.5 to {MAX_LEVEL_SECONDS:g}, not {self.max_seconds:g}")
        if self.max_seconds * len(levels) > MAX_TOTAL_SECONDS:
            raise ValueError(f"{len(levels)} levels of up to {self.max_seconds:g} s exceed the {MAX_TOTAL_SECONDS:g} s "
                             "a load test may take: fewer levels or a shorter max_seconds")
        if not 0 <= self.warmup <= 1000:
            raise ValueError(f"warmup must be from 0 to 1000 requests, not {self.warmup}")
        if not 1 <= self.texts_per_request <= 64:
            raise ValueError(f"texts_per_request must be from 1 to 64, not {self.texts_per_request}")
        if not 1 <= self.texts <= 5000:
            raise ValueError(f"texts must be from 1 to 5000, not {self.texts}")
        if not 0 <= self.slo_p95_ms <= 600_000:
            raise ValueError(f"slo_p95_ms must be 0 (none) or a latency up to 600000 ms, not {self.slo_p95_ms:g}")
        if not 0.1 <= self.request_timeout_s <= 120:
            raise ValueError(f"request_timeout_s must be from 0.1 to 120, not {self.request_timeout_s:g}")
        if not 0 <= self.ready_wait_s <= 600:
            raise ValueError(f"ready_wait_s must be from 0 to 600, not {self.ready_wait_s:g}")
        if self.api_key_env and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,199}", self.api_key_env):
            raise ValueError(f"api_key_env must name an environment variable (letters, digits, _), not "
                             f"{self.api_key_env!r}")


def check(params: LoadTestParams) -> None:
    """Before queueing: the deployment exists, listens on loopback and is running."""
    from jobs.serving.loadtest import check_target

    check_target(params.deployment)


def tracked_levels(_job, result: dict) -> dict:
    """Each level as MLflow metrics, the concurrency as the step: a curve per figure."""
    metrics = [(name, float(level[name]), int(level["concurrency"])) for level in result.get("levels", [])
               for name in ("requests_per_s", "texts_per_s", "p50_ms", "p95_ms", "p99_ms") if level.get(name) is not None]
    return {"metrics": metrics}


def _texts(ctx: JobContext, deployment, params: LoadTestParams) -> tuple[list[str], int]:
    from jobs.ml.data import split_examples
    from jobs.serving.loadtest import reference_dataset_id
    from storage import catalog

    dataset_id = ctx.job.dataset_id or reference_dataset_id(deployment)
    if dataset_id is None:
        raise InvalidInput(f"deployment {deployment.id} has no reference dataset and its variant none: pass a dataset "
                           "whose texts the load test sends", inputs=("dataset",))
    dataset = catalog.get_dataset(dataset_id)
    texts = [t for t in split_examples(dataset, params.split, params.texts).texts if t.strip()]
    if not texts:
        raise InvalidInput(f"the {params.split} split of dataset {dataset.name!r} has no texts to send")
    ctx.log(f"{len(texts)} texts of the {params.split} split of dataset {dataset.id} ({dataset.name})")
    return texts, dataset.id


def _ready(deployment, wait_s: float):
    from jobs.serving.deployments import refresh, wait_ready

    current = wait_ready(deployment, wait_s) if wait_s > 0 else refresh(deployment)
    if current.status != "ready":
        why = f": {current.reason}" if current.reason else ""
        raise InvalidInput(f"deployment {current.id} is not ready ({current.status}{why})", inputs=("deployment",))
    return current


def _unanswered(level, deployment, key_env: str | None) -> str | None:
    """Why nothing came back OK, when that is the deployment's doing (its key refused, its server gone)."""
    from jobs.serving.deployments import refresh

    if level.ok:
        return None
    if set(level.errors) <= {"401", "403"}:
        return (f"deployment {deployment.id} refused the API key" + (f" in {key_env}" if key_env else "")
                + f" ({', '.join(level.errors)})")
    if set(level.errors) <= {"connection"}:
        now = refresh(deployment)
        return f"deployment {deployment.id} stopped answering: it is {now.status}" + (
            f" ({now.reason})" if now.reason else "")
    return None


@register("loadtest", LoadTestParams, summary="Throughput and p50/p95/p99 of a deployment at a sweep of concurrencies",
          needs_variant=False, device="cpu", tracking=tracked_levels, check=check)
def run(params: LoadTestParams, ctx: JobContext) -> JobResult:
    from jobs.bench.fingerprint import fingerprint, fingerprint_hash
    from jobs.bench.load import LoadProbe
    from jobs.serving import loadtest
    from jobs.serving.loadgen import run_level
    from storage import deployments as store

    deployment = store.get_deployment(params.deployment)
    url = loadtest.target_url(deployment)  # loopback, before anything is sent
    ctx.progress(0.01, f"waiting for deployment {deployment.id} to be ready" if deployment.status == "starting"
                 else f"checking deployment {deployment.id}")
    deployment = _ready(deployment, params.ready_wait_s)
    key = loadtest.api_key_for(deployment, params.api_key_env)
    key_env = (params.api_key_env or deployment.config.get("api_key_env")) if key else None
    texts, dataset_id = _texts(ctx, deployment, params)
    device = str(deployment.config.get("device") or "cpu")
    fp = fingerprint(device)
    fp_hash = fingerprint_hash(fp)
    ctx.log(f"target {url} (deployment {deployment.id}, variant(s) {loadtest.variant_ids(deployment)}); "
            f"fingerprint {fp_hash}: {json.dumps(fp)}")
    send = dict(texts_per_request=params.texts_per_request, api_key=key, request_timeout_s=params.request_timeout_s)
    levels = sorted(params.concurrency)

    if params.warmup:
        ctx.progress(0.03, f"warm-up: {params.warmup} requests")
        warm = run_level(url, texts, concurrency=min(WARMUP_CONCURRENCY, max(levels)), requests=params.warmup,
                         max_seconds=WARMUP_MAX_SECONDS, **send)
        why = _unanswered(warm, deployment, key_env)
        if why:
            raise InvalidInput(why)
        ctx.log(f"warm-up: {warm.ok} of {warm.sent} answered OK in {warm.seconds:.2f} s")

    rows, summaries = [], []
    for index, concurrency in enumerate(levels):
        ctx.check_cancelled()
        ctx.progress(0.05 + 0.9 * index / len(levels),
                     f"concurrency {concurrency}: up to {params.requests} requests or {params.max_seconds:g} s")
        probe = LoadProbe(also=(deployment.pid,) if deployment.pid else ())
        level = run_level(url, texts, concurrency=concurrency, requests=params.requests,
                          max_seconds=params.max_seconds, **send)
        load = probe.finish()
        why = _unanswered(level, deployment, key_env)
        if why:
            raise InvalidInput(f"concurrency {concurrency}: {why}")
        summary = level.summary(params.texts_per_request)
        summaries.append({**summary, "load": load})
        rows.append({**summary, "job_id": ctx.job.id, "deployment_id": deployment.id,
                     "variant_id": deployment.variant_id, "variant_ids": loadtest.variant_ids(deployment),
                     "dataset_id": dataset_id, "split": params.split, "device": device,
                     "texts_per_request": params.texts_per_request, "load": load, "fingerprint": fp,
                     "fingerprint_hash": fp_hash})
        errors = ", ".join(f"{k}: {v}" for k, v in sorted(summary["errors"].items())) or "none"
        latency = (f"p50 {summary['p50_ms']:.1f} / p95 {summary['p95_ms']:.1f} / p99 {summary['p99_ms']:.1f} ms"
                   if summary["ok"] else "no OK answer")
        ctx.progress(0.05 + 0.9 * (index + 1) / len(levels),
                     f"concurrency {concurrency}: {summary['ok']}/{summary['sent']} OK ({summary['stopped_by']}), "
                     f"{summary['requests_per_s']:.1f} req/s, {latency}, errors {errors}; other processes took "
                     f"{load['other_cpu_fraction']:.0%} of the CPU, steal {load['steal_fraction']:.0%}")
        ctx.record({"levels": summaries})

    message = loadtest.verdict(summaries, params.slo_p95_ms)
    busy_levels = [s["concurrency"] for s in summaries
                   if loadtest.busy(s["load"], _busy_threshold())]
    if busy_levels:
        message += f"; the machine was busy at concurrency {', '.join(map(str, busy_levels))} (figures flagged)"
    best = max(summaries, key=lambda s: s["requests_per_s"])
    return JobResult(result={"deployment": deployment.id, "variant_ids": loadtest.variant_ids(deployment),
                             "fingerprint_hash": fp_hash, "levels": summaries, "best_concurrency": best["concurrency"],
                             "best_requests_per_s": best["requests_per_s"], "busy_levels": busy_levels},
                     message=message, load_tests=rows)


def _busy_threshold() -> float:
    from jobs.decisions.compare import Rules

    return Rules.from_settings().busy_cpu_fraction
