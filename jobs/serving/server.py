"""Serve one stored variant over HTTP in this process (FastAPI under uvicorn).

    python -m jobs.serving.server --variant-id N [--host 127.0.0.1] --port P [--max-batch 16]
        [--max-wait-ms 5] [--max-queue 256] [--timeout-s 10] [--cache-size 0] [--device cpu] [--threads T]

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

from jobs.serving import API_KEYS_ENV
from jobs.serving.app import ServedVariant, ServingConfig, create_app


def api_keys_from_env() -> list[str]:
    return [key.strip() for key in os.environ.get(API_KEYS_ENV, "").split(",") if key.strip()]


def served_variant(ref: int | str) -> ServedVariant:
    """The stored variant (and its model) as the server describes it; NotFound when there is none."""
    from storage import catalog

    variant = catalog.get_variant(ref)
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
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from storage.errors import WorkbenchError

    try:
        config = ServingConfig(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
                               max_queue=args.max_queue, timeout_s=args.timeout_s, cache_size=args.cache_size,
                               device=args.device, threads=args.threads)
        variant = served_variant(args.variant_id)
    except (ValueError, WorkbenchError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not 0 < args.port < 65536:
        print(f"error: --port must be between 1 and 65535, not {args.port}", file=sys.stderr)
        return 2
    import uvicorn

    app = create_app(variant, config, api_keys=api_keys_from_env())
    logging.getLogger("jobs.serving").info("serving variant %s (%s, %s) on http://%s:%s", variant.id,
                                           variant.runtime, variant.precision, args.host, args.port)
    # access_log off: a log line per request costs more than the rest of the HTTP path under load
    uvicorn.run(app, host=args.host, port=args.port, access_log=False, log_level="info")
    return 0


if __name__ == "__main__":
    sys.exit(main())
