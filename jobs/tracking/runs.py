"""MLflow tracking: every finished job is an MLflow run (params, metrics, tags, small JSON artifacts).

The store is SQLite at `$WORKBENCH_HOME/mlflow.db` with artifacts under `$WORKBENCH_HOME/mlartifacts`, so
`mlflow ui --backend-store-uri sqlite:///…/mlflow.db` shows it; `MLFLOW_TRACKING_URI` points it elsewhere (a
tracking server, `http://HOST:PORT`, keeps the runs, their artifacts and the registry itself and serves its own UI)
and `WORKBENCH_MLFLOW=off` turns tracking off.

Who logs: importing MLflow and opening its store costs about 2 s of CPU, too much to add to every job process.
So the worker starts one tracker process (`python -m jobs.tracking.runs`, see `Tracker`) beside its jobs and hands it
the id of each job that ended, whoever ended it (the job itself, or the worker after a crash or a cancel); the
tracker imports MLflow once and logs a job in about a tenth of a second. Tracking never fails a job: a problem
is one line in the job's log.

One experiment per model (`workbench/<model name>`; `workbench` for jobs without one), so MLflow's run
comparison puts the fine-tunes, quantizations and benchmarks of one model side by side. Model weights are not
copied: a tag links the run to the variant's artifact directory.
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

from storage import settings

EXPERIMENT_PREFIX = "workbench"
TAG = "workbench."  # prefix of every tag the workbench sets
MAX_KEY = 250  # MLflow's limits: key length, param value, tag value
MAX_PARAM = 6000
MAX_TAG = 8000
MAX_LOG_ARTIFACT_CHARS = 200_000
RUN_STATUS = {"succeeded": "FINISHED", "failed": "FAILED", "cancelled": "KILLED"}
TRACKER_DRAIN_S = 60.0


# ---- where ----------------------------------------------------------------------------------------------------


def enabled() -> bool:
    return settings.flag("WORKBENCH_MLFLOW")


def default_db() -> Path:
    return settings.home() / "mlflow.db"


def tracking_uri() -> str:
    return settings.get("MLFLOW_TRACKING_URI") or f"sqlite:///{default_db()}"


def is_server(uri: str) -> bool:
    """A tracking server (it has its own artifact root); otherwise a store this process writes directly."""
    return uri.split(":", 1)[0].lower() in ("http", "https", "databricks", "databricks-uc", "uc")


def artifact_root() -> Path:
    return settings.home() / "mlartifacts"


def ui_command(uri: str | None = None) -> str:
    """How to browse the store: a tracking server serves its own UI at its address (open it in a browser); a
    store written directly (SQLite, a database) needs `mlflow ui` started on it."""
    uri = uri or tracking_uri()
    if uri.lower().startswith(("http://", "https://")):
        return uri
    return f"mlflow ui --backend-store-uri {uri}"


def sqlite_path(uri: str) -> Path | None:
    """The file of a `sqlite:///…` URI (None for any other store)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri.removeprefix("sqlite:///").split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def _quiet() -> None:
    """No usage telemetry from here, and no INFO lines (table creation) or progress bars (registering copies a
    variant's files) on a CLI's stderr."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


@lru_cache(maxsize=8)
def _client(uri: str):
    _quiet()
    # a slow import (~1.5 s): only in the tracker process and where the registry is used
    from mlflow.tracking import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def client(uri: str | None = None):
    return _client(uri or tracking_uri())


def experiment_name(model_name: str | None) -> str:
    return f"{EXPERIMENT_PREFIX}/{model_name}" if model_name else EXPERIMENT_PREFIX


def experiment_id(mlflow_client, name: str, uri: str, create: bool = True) -> str | None:
    experiment = mlflow_client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    if not create:
        return None
    location = None
    if not is_server(uri):  # else MLflow would put artifacts in ./mlruns of whatever directory the process runs in
        slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        location = (artifact_root() / slug).as_uri()
    from mlflow.exceptions import MlflowException

    try:
        return mlflow_client.create_experiment(name, artifact_location=location, tags={f"{TAG}source": "workbench"})
    except MlflowException:  # another tracker created it first
        experiment = mlflow_client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


# ---- what a job's run holds ---------------------------------------------------------------------------------------


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists stay values."""
    if not isinstance(data, dict):
        return {prefix: data} if prefix else {}
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            out.update(flatten(value, name))
        else:
            out[name] = value
    return out


def _param_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return _truncate(text, MAX_PARAM)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _is_id(key: str) -> bool:
    last = key.rsplit(".", 1)[-1]
    return last in ("id", "pid") or last.endswith("_id")


def _ms(dt) -> int | None:
    if dt is None:
        return None
    from datetime import timezone

    return int(dt.replace(tzinfo=timezone.utc).timestamp() * 1000)


def _kind_extras(job, result: dict[str, Any]) -> dict[str, Any]:
    """What the job's kind adds to its run (its registry `tracking` hook): {"metrics": [...], "artifacts": {...}}."""
    from jobs.runner.registry import get_kind
    from storage.errors import InvalidInput

    try:
        kind = get_kind(job.kind)
    except InvalidInput:  # a kind no longer installed (a plugin removed since): its run has the common record only
        return {}
    return kind.tracking(job, result) if kind.tracking else {}


def describe_job(job) -> dict[str, Any]:
    """Everything the run of a finished job records, as plain data (no MLflow here, so it is cheap to test)."""
    from storage import catalog, queue
    from storage.entities import to_dict
    from storage.errors import WorkbenchError

    def maybe(fn, ref):
        if ref is None:
            return None
        try:
            return fn(ref)
        except WorkbenchError:
            return None

    variant = maybe(catalog.get_variant, job.variant_id)
    produced = maybe(catalog.get_variant, job.produced_variant_id)
    model_id = job.model_id or (variant.model_id if variant else None) or (produced.model_id if produced else None)
    model = maybe(catalog.get_model, model_id)
    dataset = maybe(catalog.get_dataset, job.dataset_id)
    result = job.result or {}
    end_ms = _ms(job.finished_at) or _ms(job.started_at) or _ms(job.created_at)

    params = {k: _param_value(v) for k, v in flatten(job.params or {}).items()}
    training = result.get("training") if isinstance(result.get("training"), dict) else {}
    for key, value in (training.get("settings") or {}).items():  # what "auto" became for this run
        params[f"resolved.{key}"] = _param_value(value)

    tags: dict[str, str] = {
        f"{TAG}job_id": str(job.id), f"{TAG}kind": job.kind, f"{TAG}status": job.status.value,
        f"{TAG}device": job.device, f"{TAG}attempts": str(job.attempts),
    }
    optional = {
        "model_id": model_id, "model": model.name if model else None, "variant_id": job.variant_id,
        "dataset_id": job.dataset_id, "dataset": dataset.name if dataset else None,
        "produced_variant_id": job.produced_variant_id, "pipeline": job.pipeline, "depends_on": job.depends_on_id,
        "worker_id": job.worker_id,
    }
    tags.update({f"{TAG}{k}": str(v) for k, v in optional.items() if v is not None})
    if produced is not None:
        tags[f"{TAG}variant_artifact_dir"] = Path(produced.artifact_dir).as_uri()  # a link, not a copy of the weights
        tags[f"{TAG}variant_runtime"] = produced.runtime
        tags[f"{TAG}variant_precision"] = produced.precision
        tags[f"{TAG}variant_sha256"] = produced.sha256
    if variant is not None:
        tags[f"{TAG}input_artifact_dir"] = Path(variant.artifact_dir).as_uri()
    if job.message:
        tags["mlflow.note.content"] = job.message
    if job.error:
        tags[f"{TAG}error"] = job.error[-2000:]

    metrics: list[tuple[str, float, int]] = []
    for key, value in flatten({k: v for k, v in result.items() if k != "training"}).items():
        number = _number(value)
        if number is not None and not _is_id(key):
            metrics.append((key, number, 0))
        elif isinstance(value, bool) or (isinstance(value, str) and 0 < len(value) <= 500):
            tags[f"result.{key}"] = str(value).lower() if isinstance(value, bool) else str(value)
    for key, value in training.items():
        number = _number(value)
        if number is not None:
            metrics.append((f"training.{key}", number, 0))
    for i, epoch in enumerate(training.get("history") or [], start=1):  # the training curve, one step per epoch
        if isinstance(epoch, dict):
            step = int(epoch.get("epoch", i))
            metrics += [(k if k.startswith(("train_", "val_")) else f"epoch_{k}", n, step)
                        for k, v in epoch.items() if k != "epoch" and (n := _number(v)) is not None]
    if produced is not None:
        metrics.append(("variant_size_bytes", float(produced.size_bytes), 0))
        if variant is not None and variant.size_bytes:
            metrics.append(("size_vs_input", produced.size_bytes / variant.size_bytes, 0))
    if variant is not None:
        metrics.append(("input_size_bytes", float(variant.size_bytes), 0))
    if job.duration_s is not None:
        metrics.append(("duration_s", float(job.duration_s), 0))
    kind_extras = _kind_extras(job, result)
    metrics += kind_extras.get("metrics", [])

    artifacts: dict[str, Any] = {"job.json": to_dict(job)}
    if produced is not None:
        artifacts["variant.json"] = to_dict(produced)  # recipe, files with sha256, facts; the weights stay put
    artifacts.update(kind_extras.get("artifacts", {}))
    log = queue.job_log(job.id, max_chars=MAX_LOG_ARTIFACT_CHARS)  # the end says why a job stopped
    return {
        "experiment": experiment_name(model.name if model else None),
        "run_name": f"job {job.id} {job.kind}",
        "status": RUN_STATUS.get(job.status.value, "FAILED"),
        "start_ms": _ms(job.started_at) or end_ms,
        "end_ms": end_ms,
        "params": {_truncate(k, MAX_KEY): v for k, v in params.items()},
        "tags": {_truncate(k, MAX_KEY): _truncate(v, MAX_TAG) for k, v in tags.items()},
        # one value per key and step (a repeated metric in one batch is refused by MLflow's SQL store)
        "metrics": [(k, v, step) for (k, step), v in {(_truncate(k, MAX_KEY), step): v for k, v, step in metrics}.items()],
        "artifacts": artifacts,
        "log": log,
    }


def log_job(job, uri: str | None = None) -> tuple[str, str]:
    """Record one finished job as an MLflow run. Returns (run id, experiment name)."""
    record = describe_job(job)
    uri = uri or tracking_uri()
    mlflow_client = client(uri)
    from mlflow.entities import Metric, Param

    exp_id = experiment_id(mlflow_client, record["experiment"], uri)
    run = mlflow_client.create_run(exp_id, start_time=record["start_ms"], tags=record["tags"], run_name=record["run_name"])
    run_id = run.info.run_id
    mlflow_client.log_batch(
        run_id,
        metrics=[Metric(k, v, record["end_ms"], step) for k, v, step in record["metrics"]],
        params=[Param(k, v) for k, v in record["params"].items()],
    )
    for name, data in record["artifacts"].items():
        mlflow_client.log_dict(run_id, json.loads(json.dumps(data, default=str)), name)
    if record["log"]:
        mlflow_client.log_text(run_id, record["log"], "job.log")
    mlflow_client.set_terminated(run_id, record["status"], end_time=record["end_ms"])
    return run_id, record["experiment"]


def run_of_job(job_id: int, model_name: str | None, uri: str | None = None) -> str | None:
    """The MLflow run of a job, found by its tag (None when that job was not tracked)."""
    uri = uri or tracking_uri()
    mlflow_client = client(uri)
    exp_id = experiment_id(mlflow_client, experiment_name(model_name), uri, create=False)
    if exp_id is None:
        return None
    runs = mlflow_client.search_runs([exp_id], filter_string=f"tags.`{TAG}job_id` = '{int(job_id)}'", max_results=1)
    return runs[0].info.run_id if runs else None


# ---- the tracker process and the worker's handle on it ----------------------------------------------------------


def track(job_id: int) -> str:
    """Log one job; the line to append to its log. Never raises."""
    from storage import queue

    try:
        uri = tracking_uri()
        run_id, experiment = log_job(queue.get_job(job_id), uri)
        return f"MLflow: run {run_id} in experiment {experiment!r} ({uri})"
    except Exception as exc:  # noqa: BLE001 - tracking must never fail a job
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        return f"MLflow tracking failed (the job is not affected): {type(exc).__name__}: {first}"


def main(argv: list[str]) -> int:
    """`python -m jobs.tracking.runs [WORKER_PID]`: log each job id read from stdin until stdin closes."""
    if argv:
        from jobs.runner.lifeline import die_with_parent

        die_with_parent(int(argv[0]))
    from storage import queue

    for line in sys.stdin:
        line = line.strip()
        if not line.isdigit():
            continue
        job_id = int(line)
        message = track(job_id)
        try:
            queue.append_log(job_id, f"{message}\n")
        except Exception as exc:  # noqa: BLE001
            print(f"[tracker] job {job_id}: {message}; could not write the job log: {exc}", file=sys.stderr, flush=True)
    return 0


class Tracker:
    """The worker's handle on its tracker process: started with the first job, fed job ids, drained at shutdown."""

    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None
        try:
            self.on = enabled()
        except Exception as exc:  # noqa: BLE001 - a bad setting turns tracking off, loudly, not the worker
            print(f"[worker] MLflow tracking off: {exc}", file=sys.stderr, flush=True)
            self.on = False

    def start(self) -> None:
        if not self.on or (self.process is not None and self.process.poll() is None):
            return
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "jobs.tracking.runs", str(os.getpid())],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        except OSError as exc:
            print(f"[worker] MLflow tracking off: could not start the tracker: {exc}", file=sys.stderr, flush=True)
            self.on, self.process = False, None

    def submit(self, job_id: int) -> None:
        if not self.on:
            return
        self.start()
        if self.process is None or self.process.stdin is None:
            return
        try:
            self.process.stdin.write(f"{job_id}\n".encode())
            self.process.stdin.flush()
        except OSError as exc:  # the tracker died: say so in the job log; the next job starts a new one
            from storage import queue

            self.process = None
            queue.append_log(job_id, f"MLflow tracking failed (the job is not affected): tracker process: {exc}\n")

    def close(self, timeout: float = TRACKER_DRAIN_S) -> None:
        """Let the tracker log what it was given, then end it."""
        process, self.process = self.process, None
        if process is None:
            return
        try:
            if process.stdin is not None:
                process.stdin.close()
        except OSError:
            pass
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
