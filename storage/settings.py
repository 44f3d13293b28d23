"""Every setting in one table (name, environment variable, default, help), read by the CLI, the app and docs.

Settings are read from the environment each time they are asked for, so a test or a child process that sets
WORKBENCH_HOME sees its own data directory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Setting:
    env: str
    default: str
    help: str
    kind: type = str


SETTINGS: dict[str, Setting] = {
    s.env: s
    for s in [
        Setting("WORKBENCH_HOME", ".workbench", "Data directory: SQLite database, artifacts, job work dirs."),
        Setting("WORKBENCH_ARTIFACT_ROOT", "",
                "Where artifacts (models, datasets, variants) live, by kind and sha256: a directory every node can "
                "reach (a shared filesystem mounted at the same path), or an fsspec URL (file://, s3://, gcs://) "
                "that each node fetches from into $WORKBENCH_HOME/artifact-cache, checked file by file; empty means "
                "$WORKBENCH_HOME/artifacts."),
        Setting("WORKBENCH_DB_URL", "",
                "Any SQLAlchemy URL (PostgreSQL: postgresql+psycopg://USER:PASSWORD@HOST/DB); empty means SQLite at "
                "$WORKBENCH_HOME/workbench.db."),
        Setting("WORKBENCH_DB_POOL_SIZE", "5",
                "Connections each process keeps open to a database server (not SQLite).", int),
        Setting("WORKBENCH_DB_MAX_OVERFLOW", "10",
                "Extra connections a process may open beyond the pool when busy (not SQLite).", int),
        Setting("WORKBENCH_DB_POOL_RECYCLE_S", "1800",
                "Reopen a pooled connection older than this many seconds, before a server or proxy drops it "
                "(not SQLite; -1: never).", int),
        Setting("WORKBENCH_MAX_UPLOAD_MB", "1024", "Largest uploaded model archive or file, in MiB.", int),
        Setting("WORKBENCH_MAX_EXTRACTED_MB", "4096",
                "Largest size a model may take on disk: what an archive expands to (bytes actually written) or "
                "what a model directory holds, in MiB.", int),
        Setting("WORKBENCH_MAX_COMPRESSION_RATIO", "200",
                "An archive member (or a compressed tar) over 1 MiB that expands more than this many times its "
                "compressed size is refused as a compression bomb.", int),
        Setting("WORKBENCH_MAX_TOKENIZER_MB", "128",
                "Largest config or tokenizer file (config.json, tokenizer.json, vocab, merges, *.model) in a model, "
                "in MiB.", int),
        Setting("WORKBENCH_MAX_DATASET_MB", "200",
                "Largest dataset file accepted, and the most its cells may decode to (a Parquet file's expanded "
                "size), in MiB.", int),
        Setting("WORKBENCH_MAX_DATASET_ROWS", "1000000", "Most rows an uploaded dataset may have.", int),
        Setting("WORKBENCH_MAX_TEXT_FIELD_CHARS", "100000",
                "Longest cell (a text, a label) an uploaded dataset may hold, in characters.", int),
        Setting("WORKBENCH_HEARTBEAT_S", "2", "How often a worker heartbeats its running jobs, in seconds.", float),
        Setting(
            "WORKBENCH_STALE_AFTER_S",
            "30",
            "A running job whose worker has not heartbeated for this long is swept (re-queued or failed).",
            float,
        ),
        Setting("WORKBENCH_MAX_ATTEMPTS", "2", "How many times a job is tried before a lost worker fails it.", int),
        Setting("WORKBENCH_EXECUTOR", "local",
                "How a worker runs each job it claims; local: a child process on the worker's machine; ray: a Ray "
                "task on the cluster at RAY_ADDRESS, on a node with the resources the job needs (`make install` "
                "installs ray)."),
        Setting("WORKBENCH_FORK_SERVER", "on",
                "on: the local executor forks each job's process from one that has imported torch and "
                "transformers once, so a job starts in about 0.1 s rather than after seconds of imports; off: each "
                "job's process imports them itself."),
        Setting("RAY_ADDRESS", "",
                "The Ray cluster a ray executor runs jobs on (host:port of its head, as `ray start --head` prints); "
                "empty means a cluster started on this machine."),
        Setting("WORKBENCH_RAY_CPUS", "1",
                "CPUs each job reserves on its Ray node (ray executor); Ray also sets the job's OMP_NUM_THREADS to "
                "it (at least 1), so a benchmark on a node measures that many threads.", float),
        Setting("WORKBENCH_RAY_MAX_RETRIES", "2",
                "How many times Ray reruns a job whose worker process or node was lost before the job fails with "
                "Ray's reason (ray executor).", int),
        Setting("WORKBENCH_MIN_SAMPLES", "20",
                "Fewest timed calls a benchmark cell needs before a speedup or a recommendation is made from it.", int),
        Setting("WORKBENCH_BUSY_CPU_FRACTION", "0.25",
                "A cell during which other processes (and CPU steal) took more than this share of the CPU was "
                "measured on a busy machine: it is shown, but not compared.", float),
        Setting("WORKBENCH_PREDICTOR_CACHE_MB", "3072",
                "Memory the playground may keep loaded predictors in, in MiB; least recently used go first.", int),
        Setting("WORKBENCH_MAX_TEXT_CHARS", "20000", "Longest text one playground prediction accepts, in characters.", int),
        Setting("WORKBENCH_MAX_BATCH_LINES", "2000", "Most texts one batch prediction (pasted lines or CSV rows) accepts.", int),
        Setting("WORKBENCH_MAX_PREDICT_UPLOAD_MB", "20", "Largest CSV accepted for batch prediction, in MiB.", int),
        Setting("WORKBENCH_AUTH", "", "Editor accounts, comma-separated user:password; set one to serve with --share."),
        Setting("WORKBENCH_VIEWERS", "", "Read-only accounts (Compare, reports, playground), comma-separated user:password."),
        Setting("WORKBENCH_SERVING_API_KEYS", "",
                "Bearer keys a model server (a deployment) accepts, comma-separated; set by `workbench deploy "
                "--api-key-env`, read from the server's environment only."),
        Setting("WORKBENCH_SERVING_ADMIN_TOKEN", "",
                "The token a deployment's server accepts on /v1/admin/* (the workbench changing its canary "
                "rollout); made by `workbench deploy --canary`, passed in the server's environment only."),
        Setting("WORKBENCH_LOGIN_MAX_FAILURES", "5",
                "Wrong passwords for one account, or from one client address, before it is locked.", int),
        Setting("WORKBENCH_LOGIN_LOCKOUT_S", "60",
                "How long the first lock lasts, in seconds; each further wrong password doubles it (up to an hour).",
                float),
        Setting("WORKBENCH_MLFLOW", "on", "on: every finished job is an MLflow run (the worker logs it); off: no tracking."),
        Setting("MLFLOW_TRACKING_URI", "",
                "MLflow tracking and registry store (http://HOST:PORT for a tracking server); empty means SQLite at "
                "$WORKBENCH_HOME/mlflow.db."),
        Setting(
            "WORKBENCH_PLUGINS",
            "",
            "Comma-separated modules imported by workers and job processes to register extra job kinds, runtimes or tasks.",
        ),
    ]
}


def get(env: str):
    setting = SETTINGS[env]
    raw = os.environ.get(env, "").strip() or setting.default
    try:
        return setting.kind(raw)
    except ValueError:
        from storage.errors import InvalidInput

        raise InvalidInput(f"{env}={raw!r} is not a valid {setting.kind.__name__}: {setting.help}") from None


def flag(env: str) -> bool:
    """An on/off setting (on, 1, true, yes / off, 0, false, no); anything else is refused with the setting's help."""
    value = str(get(env)).strip().lower()
    if value in ("on", "1", "true", "yes"):
        return True
    if value in ("off", "0", "false", "no"):
        return False
    from storage.errors import InvalidInput

    raise InvalidInput(f"{env}={value!r}: use on or off ({SETTINGS[env].help})")


def home() -> Path:
    path = Path(get("WORKBENCH_HOME")).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def db_url() -> str:
    return get("WORKBENCH_DB_URL") or f"sqlite:///{home() / 'workbench.db'}"


def artifact_root() -> str:
    """WORKBENCH_ARTIFACT_ROOT as this node sees it: an fsspec URL as given (no trailing slash), or a directory
    made absolute; $WORKBENCH_HOME/artifacts when unset."""
    raw = get("WORKBENCH_ARTIFACT_ROOT")
    if not raw:
        return str(home() / "artifacts")
    if artifact_root_is_url(raw):
        return raw.rstrip("/")
    return str(Path(raw).expanduser().resolve())


def artifact_root_is_url(root: str | None = None) -> bool:
    return "://" in (get("WORKBENCH_ARTIFACT_ROOT") if root is None else root)


def artifacts_dir() -> Path:
    """Where this node reads artifacts: the artifact root when it is a directory, its cache of it when it is a URL.

    A configured directory is not created here: a shared root that is not mounted must show as missing, not as an
    empty folder made in its place (`files.commit_dir` makes the folders it writes into)."""
    if artifact_root_is_url():
        path = home() / "artifact-cache"
    elif get("WORKBENCH_ARTIFACT_ROOT"):
        return Path(artifact_root())
    else:
        path = home() / "artifacts"
    path.mkdir(parents=True, exist_ok=True)
    return path


def staging_dir() -> Path:
    """Where intake builds things before they are complete; same filesystem as artifacts so moves are atomic."""
    path = home() / "staging"
    path.mkdir(parents=True, exist_ok=True)
    return path


def job_dir(job_id: int) -> Path:
    path = home() / "jobs" / str(job_id)
    path.mkdir(parents=True, exist_ok=True)
    return path
