"""Variants as MLflow registered-model versions, with aliases (`staging`, `production`, ...) promoted and rolled back.

MLflow keeps where an alias points now; the workbench keeps each move it made (`storage.aliases`), so a
rollback puts the alias back where it was before the last promote. Aliases, not the deprecated stages.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

from jobs.tracking import runs as tracking
from storage import aliases, catalog
from storage.errors import Conflict, InvalidInput, NotFound, WorkbenchError
from storage.shared_artifacts import ensure_variant

DEFAULT_ALIAS = "production"
ALIAS_RE = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,249}$")
TAG = tracking.TAG


def default_name(model_name: str) -> str:
    """A registered-model name from a workbench model's name: letters, digits, '.', '_', '-'."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", model_name).strip("-._")
    return name[:250] or "model"


def check_name(name: str) -> str:
    name = (name or "").strip()
    if not NAME_RE.match(name):
        raise InvalidInput(f"registered model name {name!r}: use letters, digits, spaces, '.', '_' or '-' (at most 250)")
    return name


def check_alias(alias: str) -> str:
    alias = (alias or "").strip()
    if not ALIAS_RE.match(alias):
        raise InvalidInput(f"alias {alias!r}: use letters, digits, '_' or '-', like staging or production")
    if alias.lower() == "latest" or re.fullmatch(r"[vV]\d+", alias):
        raise InvalidInput(f"alias {alias!r} is reserved by MLflow; choose another, like staging or production")
    return alias


def check_version(version: Any) -> str:
    text = str(version).strip().removeprefix("v").removeprefix("V")
    if not text.isdigit() or int(text) < 1:
        raise InvalidInput(f"version {version!r}: a model version is a positive number, like 1 or v1")
    return str(int(text))


def _mlflow_errors(fn):
    """MLflow's own refusals become one-line workbench errors (exit 2 in the CLI, a ✗ line in the UI)."""

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except WorkbenchError:
            raise
        except Exception as exc:
            from mlflow.exceptions import MlflowException

            if not isinstance(exc, MlflowException):
                raise
            message = f"MLflow: {(str(exc.message).strip().splitlines() or [''])[0][:300]}"
            error = {"RESOURCE_DOES_NOT_EXIST": NotFound, "RESOURCE_ALREADY_EXISTS": Conflict,
                     "INVALID_PARAMETER_VALUE": InvalidInput}.get(exc.error_code, WorkbenchError)
            raise error(message) from None

    return wrapped


def _not_found(exc) -> bool:
    return getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST"


def _client():
    return tracking.client(tracking.tracking_uri())


def _registered_model(client, name: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException as exc:
        if _not_found(exc):
            raise NotFound(f"no registered model {name!r}", what="registered model") from None
        raise


def _model_version(client, name: str, version: str):
    from mlflow.exceptions import MlflowException

    _registered_model(client, name)
    try:
        return client.get_model_version(name, version)
    except MlflowException as exc:
        if _not_found(exc):
            raise NotFound(f"registered model {name!r} has no version {version}", what="registered model") from None
        raise


def _alias_target(client, name: str, alias: str) -> str | None:
    target = (_registered_model(client, name).aliases or {}).get(alias)
    return None if target is None else str(target)


def _versions(client, name: str) -> list:
    return sorted(client.search_model_versions(f"name = '{name}'"), key=lambda mv: int(mv.version))


# ---- writes --------------------------------------------------------------------------------------------------------


@_mlflow_errors
def register_variant(variant_ref: int | str, name: str | None = None) -> dict[str, Any]:
    """Register a variant as a new version of a registered model (by default named after its model).

    The version is a real MLflow model (a pyfunc wrapper around the workbench's Predictor with the variant's files,
    a signature and an input example; see `jobs.tracking.pyfunc_model`), so `mlflow.pyfunc.load_model` and
    `mlflow models serve` take `models:/NAME@ALIAS`. Its tags say which variant, runtime, precision, accuracy and
    sha256, and where the variant's own directory is; it links to the MLflow run of the job that made the variant.
    """
    variant = catalog.get_variant(variant_ref)
    ensure_variant(variant)  # its files are copied into MLflow: on this machine (fetched), or why not
    model = catalog.get_model(variant.model_id)
    name = check_name(name) if name is not None and name.strip() else default_name(model.name)
    client = _client()
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        if not _not_found(exc):
            raise
        client.create_registered_model(
            name, tags={"workbench": "true", f"{TAG}model_id": str(model.id), f"{TAG}model": model.name},
            description=f"Variants of {model.name!r} registered from the Transformer Deployment Workbench.",
        )
    for mv in _versions(client, name):
        if mv.tags.get(f"{TAG}variant_id") == str(variant.id):
            raise Conflict(f"variant {variant.id} is already version {mv.version} of {name!r}")
    evaluations = catalog.list_evaluations(variant.id)
    latest = evaluations[-1] if evaluations else None
    tags = {
        f"{TAG}variant_id": str(variant.id), f"{TAG}model_id": str(model.id), f"{TAG}variant": variant.name,
        "runtime": variant.runtime, "precision": variant.precision, "sha256": variant.sha256,
        "size_bytes": str(variant.size_bytes),
    }
    if latest is not None:
        tags.update({"accuracy": f"{latest.accuracy:.6f}", "macro_f1": f"{latest.macro_f1:.6f}",
                     f"{TAG}evaluation": f"{latest.num_examples} {latest.split} examples of dataset {latest.dataset_id}"})
    if variant.dataset_id is not None:
        tags[f"{TAG}dataset_id"] = str(variant.dataset_id)
    producer = next((s.get("job_id") for s in reversed(variant.recipe.get("steps", [])) if s.get("job_id")), None)
    run_id = None
    if producer is not None:
        tags[f"{TAG}job_id"] = str(producer)
        try:
            run_id = tracking.run_of_job(producer, model.name)
        except Exception:  # noqa: BLE001 - the link to the run is a nicety; the version is registered without it
            run_id = None
    tags[f"{TAG}variant_artifact_dir"] = Path(variant.artifact_dir).as_uri()
    logged = _log_pyfunc_model(client, variant, model.name, run_id, tags)
    # The logged model's own location, not `models:/<id>`, and its id only with a run: a registry store this process
    # writes looks a `models:/` source (and a model id without a run) up through the process-wide tracking URI, not
    # this client's. A tracking server looks it up in its own store, and needs the id to accept the location (its
    # `mlflow-artifacts:/` source must lie under a run's or the logged model's artifacts)
    with_id = run_id is not None or tracking.is_server(tracking.tracking_uri())
    try:
        mv = client.create_model_version(name, logged.artifact_location, run_id=run_id, tags=tags,
                                         description=variant.name, model_id=logged.model_id if with_id else None)
    except BaseException:
        client.delete_logged_model(logged.model_id)  # no copy of the variant left behind without its version
        raise
    return _version_dict(mv)


def _log_pyfunc_model(client, variant, model_name: str, run_id: str | None, tags: dict[str, str]):
    """Log the variant as an MLflow pyfunc model (see `jobs.tracking.pyfunc_model`) in its model's experiment,
    linked to the run that made it; returns the (ready) logged model, whose artifacts are the new version's source.

    Its files are copied into MLflow's artifact store: a registered version must be loadable by MLflow's own client
    (`mlflow.pyfunc.load_model("models:/NAME@ALIAS")`, `mlflow models serve`) without the workbench's database."""
    from mlflow.entities import LoggedModelStatus
    from mlflow.models import Model

    from jobs.tracking import pyfunc_model
    from storage import files

    try:
        labels = pyfunc_model.variant_labels(Path(variant.artifact_dir))
    except ValueError as exc:
        raise InvalidInput(f"variant {variant.id} cannot be registered as an MLflow model: {exc}") from None
    uri = tracking.tracking_uri()
    experiment = (client.get_run(run_id).info.experiment_id if run_id else
                  tracking.experiment_id(client, tracking.experiment_name(model_name), uri))
    logged = client.create_logged_model(experiment, name=f"variant-{variant.id}", source_run_id=run_id, tags=tags,
                                        model_type="workbench-variant")
    try:
        with files.staging("mlflow-model") as scratch:
            local = scratch / "model"
            pyfunc_model.save(local, Path(variant.artifact_dir), variant.runtime, labels, mlflow_model=Model(
                artifact_path=logged.artifact_location, model_uuid=logged.model_id, run_id=run_id,
                model_id=logged.model_id))
            client.log_model_artifacts(logged.model_id, str(local))
    except BaseException:
        client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
        raise
    return client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)


@_mlflow_errors
def degenerate_reason(variant_id: int | None) -> str | None:
    """Why the variant's newest evaluation found it degenerate, or None (sound, or never evaluated)."""
    if variant_id is None:
        return None
    evaluations = catalog.list_evaluations(variant_id)
    newest = evaluations[-1] if evaluations else None
    return newest.degenerate_reason if newest is not None and newest.degenerate else None


def promote(name: str, version: Any, alias: str = DEFAULT_ALIAS, force: bool = False) -> dict[str, Any]:
    """Point `alias` at a version; the move is remembered so `rollback` can undo it.

    A version whose variant is degenerate (one class for all inputs, or no better than the majority class) is
    refused with the reason unless `force`; a forced promotion is tagged on the version with that reason.
    """
    name, version, alias = check_name(name), check_version(version), check_alias(alias)
    client = _client()
    mv = _model_version(client, name, version)
    variant_tag = (mv.tags or {}).get(f"{TAG}variant_id")
    reason = degenerate_reason(int(variant_tag)) if variant_tag and variant_tag.isdigit() else None
    if reason and not force:
        raise InvalidInput(f"refused: version {version} of {name!r} is variant {variant_tag}, which is degenerate "
                           f"({reason}); force the promotion to do it anyway")
    previous = _alias_target(client, name, alias)
    if previous == version:
        return {"name": name, "alias": alias, "version": version, "previous": previous, "changed": False,
                "degenerate": reason}
    if reason:
        client.set_model_version_tag(name, version, f"{TAG}forced_promotion", f"{alias}: degenerate: {reason}")
    client.set_registered_model_alias(name, alias, version)
    aliases.record(tracking.tracking_uri(), name, alias, "promote", version, previous)
    return {"name": name, "alias": alias, "version": version, "previous": previous, "changed": True,
            "degenerate": reason}


@_mlflow_errors
def rollback(name: str, alias: str = DEFAULT_ALIAS) -> dict[str, Any]:
    """Move `alias` back to the version it pointed to before the last promote made here."""
    name, alias = check_name(name), check_alias(alias)
    client = _client()
    _registered_model(client, name)
    uri = tracking.tracking_uri()
    last = aliases.last_promote(uri, name, alias)
    if last is None:
        raise InvalidInput(f"nothing to roll back: alias {alias!r} of {name!r} was not promoted here")
    if last.previous_version is None:
        raise InvalidInput(f"nothing to roll back: alias {alias!r} of {name!r} pointed at no version before "
                           f"version {last.version}")
    current = _alias_target(client, name, alias)
    if current != last.version:
        raise Conflict(f"alias {alias!r} of {name!r} points at version {current or 'none'}, not version "
                       f"{last.version} as last promoted here; promote the version you want instead")
    _model_version(client, name, last.previous_version)
    client.set_registered_model_alias(name, alias, last.previous_version)
    aliases.rolled_back(uri, last.id, name, alias, last.previous_version, last.version)
    return {"name": name, "alias": alias, "version": last.previous_version, "previous": last.version, "changed": True}


# ---- reads ---------------------------------------------------------------------------------------------------------


def _version_dict(mv, model_aliases: dict[str, str] | None = None) -> dict[str, Any]:
    tags = dict(mv.tags or {})
    variant = tags.get(f"{TAG}variant_id")
    accuracy = tags.get("accuracy")
    return {
        "model": mv.name,
        "version": str(mv.version),
        "variant_id": int(variant) if variant and variant.isdigit() else None,
        "variant": tags.get(f"{TAG}variant", mv.description or ""),
        "runtime": tags.get("runtime", ""),
        "precision": tags.get("precision", ""),
        "accuracy": float(accuracy) if accuracy else None,
        "sha256": tags.get("sha256", ""),
        "aliases": sorted(a for a, v in (model_aliases or {}).items() if v == str(mv.version)),
        "source": mv.source,
        "run_id": mv.run_id or None,
        "created_ms": mv.creation_timestamp,
        "tags": tags,
    }


def _registry_empty(uri: str) -> bool:
    """True when the default SQLite store holds no registered model: answered without importing MLflow."""
    import sqlite3

    path = tracking.sqlite_path(uri)
    if path is None:
        return False
    if not path.exists():
        return True
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute("SELECT count(*) FROM registered_models").fetchone()[0] == 0
    except sqlite3.Error:  # no such table yet, or locked: ask MLflow
        return False


@_mlflow_errors
def registry_state() -> dict[str, Any]:
    """Registered models of the workbench with their versions (and variants), aliases and rollback targets."""
    uri = tracking.tracking_uri()
    state: dict[str, Any] = {"tracking_uri": uri, "ui_command": tracking.ui_command(uri), "models": []}
    if _registry_empty(uri):
        return state
    client = _client()
    undo = {(e.registered_model, e.alias): e.previous_version for e in reversed(aliases.history(uri))
            if e.action == "promote" and not e.undone}
    for rm in client.search_registered_models(filter_string="tags.`workbench` = 'true'", max_results=1000):
        model_aliases = {a: str(v) for a, v in sorted((rm.aliases or {}).items())}
        state["models"].append({
            "name": rm.name,
            "description": rm.description or "",
            "aliases": model_aliases,
            "rollback_to": {a: undo[(rm.name, a)] for a in model_aliases if undo.get((rm.name, a)) is not None},
            "versions": [_version_dict(mv, model_aliases) for mv in _versions(client, rm.name)],
        })
    state["models"].sort(key=lambda m: m["name"])
    return state
