"""Serve one stored variant over HTTP in this process (FastAPI under uvicorn).

    python -m jobs.serving.server --variant-id N [--host 127.0.0.1] --port P [--max-batch 16]
        [--max-wait-ms 5] [--max-queue 256] [--timeout-s 10] [--cache-size 0] [--device cpu] [--threads T]
        [--deployment-id D] [--sample-rate 0.1]
        [--canary-variant-id C --canary-percent P [--rollback-error-rate-increase 0.05] [--rollback-p95-ratio 1.5]
         [--rollback-min-requests 50] [--rollback-window-s 300]]

A canary (`jobs.serving.canary`) runs beside the stable variant; with --deployment-id its users' feedback and its
automatic rollback are written to that deployment's rows. The workbench changes a running rollout (share, promote,
rollback) through /v1/admin/*, authorised by the token in WORKBENCH_SERVING_ADMIN_TOKEN (environment only, too).

API keys come from WORKBENCH_SERVING_API_KEYS (comma-separated), never from the command line, where any user
of the machine could read them in the process list. The data directory is WORKBENCH_HOME, as for every
process.

Exit codes: 0 when stopped, 2 when the arguments or the variant are refused (the reason on stderr). A variant
whose files fail their hash check is not exited on: the server stays up, not ready, and /ready says why.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Sequence

from jobs.serving import ADMIN_TOKEN_ENV, API_KEYS_ENV
from jobs.serving.app import ServedVariant, ServingConfig, create_app
from jobs.serving.drift_sampling import DEFAULT_SAMPLE_RATE, DriftSampleWriter, check_sample_rate


def api_keys_from_env() -> list[str]:
    return [key.strip() for key in os.environ.get(API_KEYS_ENV, "").split(",") if key.strip()]


def served_variant(ref: int | str) -> ServedVariant:
    """The stored variant (and its model) as the server describes it; NotFound when there is none."""
    from storage import catalog
    from storage.shared_artifacts import ensure_variant

    variant = catalog.get_variant(ref)
    ensure_variant(variant, check_files=False)  # here (fetched from a URL root) or why not; files: /ready checks
    model = catalog.get_model(variant.model_id)
    lineage = [variant.id]
    parent_id = variant.parent_id
    while parent_id is not None and parent_id not in lineage:  # a cycle: a corrupt database; stop there
        lineage.insert(0, parent_id)
        parent_id = catalog.get_variant(parent_id).parent_id
    return ServedVariant(
        id=variant.id, name=variant.name, runtime=variant.runtime, precision=variant.precision,
        artifact_dir=variant.artifact_dir, sha256=variant.sha256, files=list(variant.files),
        parent_id=variant.parent_id, lineage=lineage, model_id=model.id, model_name=model.name,
        task=model.task, recipe=dict(variant.recipe or {}),
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m jobs.serving.server", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant-id", required=True, help="the stored variant to serve")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-batch", type=int, default=16, help="most texts the model runs in one batch")
    parser.add_argument("--max-wait-ms", type=float, default=5.0,
                        help="longest a batch waits to fill while the server is under load")
    parser.add_argument("--max-queue", type=int, default=256,
                        help="most texts waiting for the model; more are answered 429")
    parser.add_argument("--timeout-s", type=float, default=10.0,
                        help="a request not answered in this many seconds is answered 503")
    parser.add_argument("--cache-size", type=int, default=0,
                        help="predictions kept in memory, keyed by the text's sha256 (0: no cache)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads the model may use")
    parser.add_argument("--deployment-id", type=int, default=None,
                        help="the deployment this server runs for: its drift samples are stored under it")
    parser.add_argument("--sample-rate", type=float, default=DEFAULT_SAMPLE_RATE,
                        help="fraction of texts sampled for drift monitoring, written to the database in the "
                             "background (0: none; needs --deployment-id)")
    canary = parser.add_argument_group("canary")
    canary.add_argument("--canary-variant-id", help="a second variant served beside the first to a share of users")
    canary.add_argument("--canary-percent", type=float, default=10.0, help="the canary's share of users (default 10)")
    canary.add_argument("--rollback-error-rate-increase", type=float, default=None,
                        help="roll the canary back when its error rate exceeds the stable's by more than this (0.05)")
    canary.add_argument("--rollback-p95-ratio", type=float, default=None,
                        help="roll the canary back when its p95 latency exceeds the stable's times this (1.5)")
    canary.add_argument("--rollback-min-requests", type=int, default=50,
                        help="requests each arm needs in the window before either check is made (default 50)")
    canary.add_argument("--rollback-window-s", type=float, default=300.0,
                        help="the recent window the arms are compared over, in seconds (default 300)")
    return parser.parse_args(argv)


def rollout_options(args: argparse.Namespace) -> dict:
    """create_app's canary arguments: the canary, its policy, the recorder and the admin token (all off without
    --canary-variant-id but the token, which a promoted or rolled-back deployment still shows its state with)."""
    from jobs.serving.canary import RolloutPolicy

    options: dict = {"admin_token": os.environ.get(ADMIN_TOKEN_ENV, "").strip() or None,
                     "salt": f"deployment-{args.deployment_id}" if args.deployment_id is not None else "server"}
    if args.canary_variant_id is None:
        return options
    options["canary"] = served_variant(args.canary_variant_id)
    options["policy"] = RolloutPolicy(
        percent=args.canary_percent, error_rate_increase=args.rollback_error_rate_increase,
        p95_ratio=args.rollback_p95_ratio, min_requests=args.rollback_min_requests, window_s=args.rollback_window_s)
    if args.deployment_id is not None:
        from jobs.serving.canary_recorder import DeploymentRecorder

        options["recorder"] = DeploymentRecorder(args.deployment_id)
    return options


def drift_writer(args: argparse.Namespace, variant: ServedVariant) -> DriftSampleWriter | None:
    """The background writer of drift samples; None when not sampling (rate 0, or no deployment to file under)."""
    rate = check_sample_rate(args.sample_rate)
    if rate == 0 or args.deployment_id is None:
        return None
    from storage import deployments

    deployments.get_deployment(args.deployment_id)  # NotFound: refused before serving
    model_dirs = {variant.id: variant.artifact_dir}
    if getattr(args, "canary_variant_id", None) is not None:  # the canary's samples: its own tokenizer's rate
        canary = served_variant(args.canary_variant_id)
        model_dirs[canary.id] = canary.artifact_dir
    return DriftSampleWriter(args.deployment_id, rate, model_dirs)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from storage.errors import WorkbenchError

    try:
        config = ServingConfig(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
                               max_queue=args.max_queue, timeout_s=args.timeout_s, cache_size=args.cache_size,
                               device=args.device, threads=args.threads)
        variant = served_variant(args.variant_id)
        sampler = drift_writer(args, variant)
        rollout = rollout_options(args)
    except (ValueError, WorkbenchError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not 0 < args.port < 65536:
        print(f"error: --port must be between 1 and 65535, not {args.port}", file=sys.stderr)
        return 2
    import uvicorn

    app = create_app(variant, config, api_keys=api_keys_from_env(), on_predictions=sampler, **rollout)
    if sampler is not None:
        for counter in (sampler.sampled, sampler.written, sampler.dropped):  # shown at /metrics with the rest
            app.state.metrics.registry.register(counter)
        sampler.start()
    logging.getLogger("jobs.serving").info("serving variant %s (%s, %s) on http://%s:%s", variant.id,
                                           variant.runtime, variant.precision, args.host, args.port)
    # access_log off: a log line per request costs more than the rest of the HTTP path under load
    try:
        uvicorn.run(app, host=args.host, port=args.port, access_log=False, log_level="info")
    finally:
        if sampler is not None:
            sampler.close()  # what is still buffered is written before the process ends
    return 0


if __name__ == "__main__":
    sys.exit(main())
