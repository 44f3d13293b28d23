"""MLflow with a tracking server: `MLFLOW_TRACKING_URI=http://…` sends a job's run, its artifacts and the registry to
a real `mlflow server` process backed by PostgreSQL (tests/support/mlflow_server.py), checked over HTTP with
`MlflowClient`, by `mlflow.pyfunc` in a fresh process, and in the server's own database.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import free_port, run_cli
from tests.support.mlflow_checks import (
    LOAD_WITH_MLFLOW,
    PYFUNC_TEXTS,
    assert_answers_like_the_workbench,
    client,
    mlflow_user_env,
    run_of,
)

pytestmark = pytest.mark.slow

EVALUATE = {"max_examples": 12}


@pytest.fixture(scope="module")
def mlflow_server(postgres_server, tmp_path_factory):
    """`mlflow server` on its own PostgreSQL database, artifacts proxied into a temporary folder (launched here,
    healthy once `wait_healthy()` returns)."""
    from tests.support import mlflow_server as support

    backend = postgres_server.create_database()
    server = support.start(backend, tmp_path_factory.mktemp("mlflow-server"), free_port())
    yield server
    server.stop()
    postgres_server.drop_database(backend)


@pytest.fixture(scope="module")
def lab(mlflow_server, tmp_path_factory, minilm_dir):
    """A tiny model, the toy dataset and an evaluation of the model, run by one `worker --burst` that tracks to the
    server (the workbench's own records stay in SQLite: only MLflow is remote here)."""
    from storage import db
    from tests.support.data import write_sentiment_csv
    from tests.support.tiny import tiny_classifier

    root = tmp_path_factory.mktemp("mlflow-client")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WORKBENCH_HOME", str(root / "home"))
        mp.delenv("WORKBENCH_DB_URL", raising=False)
        mp.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
        mp.setenv("WORKBENCH_MLFLOW", "on")
        db.dispose_all()
        from jobs import api

        intake = api.add_model(api.ModelRequest(str(tiny_classifier(root / "tiny", minilm_dir)), name="tiny"))
        api.add_dataset(api.DatasetRequest(str(write_sentiment_csv(root / "toy.csv")), name="toy"))
        evaluate = api.submit("evaluate", EVALUATE, variant=intake.variant.id, dataset="toy")
        mlflow_server.wait_healthy()  # it started meanwhile
        run_cli("worker", "--burst")
        evaluate = api.get_job(evaluate.id)
        assert evaluate.status.value == "succeeded", api.job_log(evaluate.id)[-3000:]
        yield {"api": api, "root": root, "variant": intake.variant, "evaluate": evaluate}
        db.dispose_all()


def backend_rows(server, query: str) -> list[tuple]:
    """Rows straight from the server's PostgreSQL database, through SQLAlchemy (not through MLflow)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(server.backend_url)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(text(query))]
    finally:
        engine.dispose()


def test_a_job_is_a_run_on_the_tracking_server(lab, mlflow_server):
    api, job, uri = lab["api"], lab["evaluate"], mlflow_server.url
    assert api.mlflow_uri()["tracking_uri"] == uri
    assert not (lab["root"] / "home" / "mlflow.db").exists()  # nothing tracked locally
    assert not (lab["root"] / "home" / "mlartifacts").exists()

    run = run_of(uri, job.id, "workbench/tiny")
    assert run.info.status == "FINISHED" and run.info.run_name == f"job {job.id} evaluate"
    assert run.data.params["max_examples"] == "12"
    assert run.data.tags["workbench.kind"] == "evaluate" and run.data.tags["workbench.dataset"] == "toy"
    evaluation = api.variant_detail(lab["variant"].id)["evaluations"][-1]
    assert run.data.metrics["accuracy"] == pytest.approx(evaluation.accuracy)
    assert run.data.metrics["macro_f1"] == pytest.approx(evaluation.macro_f1)
    assert f"MLflow: run {run.info.run_id} in experiment 'workbench/tiny' ({uri})" in api.job_log(job.id)

    # artifacts go through the server's proxy into its destination, not into any local folder of the client
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
    c = client(uri)
    listed = {a.path for a in c.list_artifacts(run.info.run_id)}
    assert {"job.json", "evaluation.json", "job.log"} <= listed
    assert json.loads((mlflow_server.artifacts.joinpath(*run.info.artifact_uri.removeprefix(
        "mlflow-artifacts:/").split("/")) / "job.json").read_text())["id"] == job.id

    stored = backend_rows(mlflow_server, f"SELECT status, name FROM runs WHERE run_uuid = '{run.info.run_id}'")
    assert stored == [("FINISHED", f"job {job.id} evaluate")]


def test_a_registered_alias_lives_on_the_server_and_loads_anywhere(lab, mlflow_server, tmp_path):
    from storage.errors import InvalidInput

    api, uri, variant = lab["api"], mlflow_server.url, lab["variant"]
    version = api.register_variant(variant.id, "tiny-server")
    assert version["version"] == "1" and version["variant_id"] == variant.id
    assert version["source"].startswith("mlflow-artifacts:/")  # the model's files were uploaded to the server
    # an untrained tiny model answers one class: promoting it is refused unless forced, and the force is on record
    with pytest.raises(InvalidInput, match="degenerate"):
        api.promote("tiny-server", 1, "production")
    api.promote("tiny-server", 1, "staging", force=True)
    api.promote("tiny-server", 1, "production", force=True)
    mv = client(uri).get_model_version_by_alias("tiny-server", "production")
    assert mv.version == "1" and mv.tags["workbench.variant_id"] == str(variant.id)
    assert mv.tags["workbench.forced_promotion"].startswith("production: degenerate")  # the last forced move
    assert mv.tags["sha256"] == variant.sha256
    assert api.resolve_variant("tiny-server@production").id == variant.id

    # the registry is the server's PostgreSQL database
    assert backend_rows(mlflow_server, "SELECT name FROM registered_models") == [("tiny-server",)]
    assert sorted(backend_rows(mlflow_server, "SELECT alias, version FROM registered_model_aliases "
                                              "WHERE name = 'tiny-server'")) == [("production", 1), ("staging", 1)]

    listing = run_cli("registry", "list").stdout
    assert f"tracking: {uri}" in listing and "tiny-server: production -> v1, staging -> v1" in listing
    assert "mlflow ui" not in listing and f"open it:  {uri}\n" in listing  # its own UI, at its address

    # another MLflow user with only the server's address: the alias loads and answers like the workbench
    loaded = subprocess.run(
        [sys.executable, "-c", LOAD_WITH_MLFLOW, "tiny-server", "production", json.dumps(PYFUNC_TEXTS)],
        capture_output=True, text=True, env=mlflow_user_env(uri), cwd=tmp_path, timeout=300,
    )
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    answer = json.loads(loaded.stdout.strip().splitlines()[-1])["production"]
    assert_answers_like_the_workbench(api, variant.id, answer["frame"], PYFUNC_TEXTS)
    assert "MLmodel" in answer["files"] and any(f.endswith("/model.safetensors") for f in answer["files"])
    assert not list(tmp_path.iterdir())  # it wrote nothing where it ran
