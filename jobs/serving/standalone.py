"""Serve a variant described by a JSON manifest instead of the database: what an exported deployment bundle runs.

    python -m bundle_server [--host 127.0.0.1] [--port 8080] [--max-batch 16] ...     (inside a bundle)
    python -m jobs.serving.standalone --manifest BUNDLE/deployment.json --port 8080   (inside the workbench)

The manifest names the variant as `ServedVariant` describes it (id, runtime, precision, sha256, the stored file
list that `/ready` verifies, lineage, recipe) and the folder of its files, relative to the manifest. The app,
batcher, metrics and runtimes are the workbench's own (`jobs/serving/app.py`); `workbench export-deployment`
copies them into a bundle with this module (`jobs/export/deployment.py`).

It runs offline (HF_HUB_OFFLINE, TRANSFORMERS_OFFLINE): everything is in the bundle. API keys come from
WORKBENCH_SERVING_API_KEYS only; input limits from WORKBENCH_MAX_TEXT_CHARS and WORKBENCH_MAX_BATCH_LINES.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from jobs.serving import API_KEYS_ENV
from jobs.serving.app import ServedVariant, ServingConfig, create_app

MANIFEST = "deployment.json"
MANIFEST_FORMAT = 1
DEFAULT_PORT = 8080
# nothing is downloaded: the model, tokenizer and config are in the bundle
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def manifest_for(variant: ServedVariant, model_dir: str, **extra: Any) -> dict[str, Any]:
    """The manifest of a bundle: the variant without its (machine-specific) directory, and where its files are."""
    described = {k: v for k, v in dataclasses.asdict(variant).items() if k != "artifact_dir"}
    return {"format": MANIFEST_FORMAT, "variant": described, "model_dir": model_dir, **extra}


def read_manifest(path: Path) -> tuple[ServedVariant, dict[str, Any]]:
    """The served variant a manifest describes (its files in the manifest's `model_dir`), and the manifest."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read the manifest {path}: {exc}") from None
    if data.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{path} is manifest format {data.get('format')!r}; this server reads {MANIFEST_FORMAT}")
    model_dir = (path.parent / data["model_dir"]).resolve()
    if path.parent.resolve() not in model_dir.parents:
        raise ValueError(f"{path}: model_dir {data['model_dir']!r} is outside the bundle")
    known = {f.name for f in dataclasses.fields(ServedVariant)} - {"artifact_dir"}
    fields = {k: v for k, v in data["variant"].items() if k in known}
    return ServedVariant(**fields, artifact_dir=str(model_dir)), data


def parse_args(argv: Sequence[str] | None, prog: str) -> argparse.Namespace:
    defaults = ServingConfig()
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", type=Path, help=f"the bundle's {MANIFEST} (default: the bundle's own)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: loopback only; 0.0.0.0 in a container)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT") or DEFAULT_PORT),
                        help=f"port (default: $PORT, else {DEFAULT_PORT})")
    parser.add_argument("--max-batch", type=int, default=defaults.max_batch,
                        help="most texts the model runs in one batch")
    parser.add_argument("--max-wait-ms", type=float, default=defaults.max_wait_ms,
                        help="longest a batch waits to fill while the server is under load")
    parser.add_argument("--max-queue", type=int, default=defaults.max_queue,
                        help="most texts waiting for the model; more are answered 429")
    parser.add_argument("--timeout-s", type=float, default=defaults.timeout_s,
                        help="a request not answered in this many seconds is answered 503")
    parser.add_argument("--cache-size", type=int, default=defaults.cache_size,
                        help="predictions kept in memory, keyed by the text's sha256 (0: no cache)")
    parser.add_argument("--device", default=defaults.device, help="cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads the model may use")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None, manifest: Path | None = None, prog: str = "python -m bundle_server") -> int:
    """Exit codes: 0 when stopped, 2 when the arguments or the manifest are refused (the reason on stderr)."""
    os.environ.update(OFFLINE)
    # WORKBENCH_PLUGINS names workbench modules that register extra runtimes; a bundle holds only its own
    os.environ["WORKBENCH_PLUGINS"] = ""
    args = parse_args(argv, prog)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    path = args.manifest or manifest
    try:
        if path is None:
            raise ValueError("--manifest is needed outside a bundle")
        config = ServingConfig(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_queue=args.max_queue,
                               timeout_s=args.timeout_s, cache_size=args.cache_size, device=args.device,
                               threads=args.threads)
        variant, _ = read_manifest(Path(path))
        if not 0 < args.port < 65536:
            raise ValueError(f"--port must be between 1 and 65535, not {args.port}")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    import uvicorn

    # the same reading as the workbench's server (jobs/serving/server.py): the environment, never the command line
    keys = [key.strip() for key in os.environ.get(API_KEYS_ENV, "").split(",") if key.strip()]
    app = create_app(variant, config, api_keys=keys)
    logging.getLogger("jobs.serving").info("serving variant %s (%s, %s) on http://%s:%s%s", variant.id,
                                           variant.runtime, variant.precision, args.host, args.port,
                                           " with API keys" if keys else "")
    uvicorn.run(app, host=args.host, port=args.port, access_log=False, log_level="info")
    return 0


if __name__ == "__main__":
    sys.exit(main(prog="python -m jobs.serving.standalone"))
