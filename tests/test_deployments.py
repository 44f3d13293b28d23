"""Deployments: the records of model servers and their CLI.

Real server processes (`python -m jobs.serving.server`) for a real tiny classifier, real HTTP on 127.0.0.1: a
deployment becomes ready and answers, is listed as ready, stops and frees its port; a server killed with SIGKILL
shows as crashed with the reason, whether this process started it or one that has exited (the CLI); bad input
exits 2 with one line and records nothing.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket

import httpx
import psutil
import pytest

from tests.conftest import run_cli, wait_for

KEY = "s3cret-key-for-tests"
READY_WITHIN_S = 120


@pytest.fixture
def cli_home(tmp_path, monkeypatch):
    path = tmp_path / "home"
    monkeypatch.setenv("WORKBENCH_HOME", str(path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return path


@pytest.fixture
def tiny_variant(home, tmp_path, minilm_dir):
    from jobs import api
    from tests.support.tiny import tiny_classifier

    variant = api.add_model(api.ModelRequest(str(tiny_classifier(tmp_path / "tiny", minilm_dir)), name="tiny")).variant
    yield variant
    for deployment in api.list_deployments():  # a failed test leaves no server behind
        if deployment.running:
            api.stop_deployment(deployment.id)


def gone(pid: int) -> bool:
    """Exited: no such process, or a zombie no one has reaped yet."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def predict(url: str, texts: list[str], key: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{url}/v1/predict", json={"texts": texts}, headers=headers, timeout=30)


def test_the_deployments_table_round_trips_and_its_migration_goes_both_ways(home):
    from alembic import command
    from sqlalchemy import create_engine, inspect

    from storage import db, settings
    from storage import deployments as store
    from storage.errors import InvalidInput, NotFound
    from storage.migrations import alembic_config

    made = store.create_deployment(
        name="tiny@production", variant_id=7, variant_sha256="a" * 64, alias="tiny@production", host="127.0.0.1",
        port=8123, config={"max_batch": 16, "api_key_set": True}, pid=None, status="starting", reason=None,
        log_path="/nowhere.log",
    )
    assert store.get_deployment(made.id) == made and made.url == "http://127.0.0.1:8123" and made.running
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.status = "ready"  # type: ignore[misc]
    crashed = store.update_deployment(made.id, expect=store.RUNNING, status="crashed", reason="process 1 is gone")
    assert crashed is not None and (crashed.status, crashed.reason) == ("crashed", "process 1 is gone")
    # compare-and-set: a stop that comes after the crash was recorded does not overwrite it
    assert store.update_deployment(made.id, expect=store.RUNNING, status="stopped") is None
    assert [d.id for d in store.list_deployments(["crashed"])] == [made.id] and store.list_deployments(["ready"]) == []
    with pytest.raises(InvalidInput):
        store.update_deployment(made.id, status="sleeping")
    with pytest.raises(NotFound, match="no deployment '999'"):
        store.get_deployment(999)
    with pytest.raises(InvalidInput, match="a deployment id is a whole number"):
        store.get_deployment("x")

    db.dispose_all()
    command.downgrade(alembic_config(settings.db_url()), "0007")
    raw = create_engine(settings.db_url())
    assert "deployments" not in inspect(raw).get_table_names()
    assert db.upgrade() == ("0007", db.head_revision())
    assert "deployments" in inspect(raw).get_table_names() and store.list_deployments() == []
    raw.dispose()


@pytest.mark.parametrize(
    "args, message",
    [
        (["deploy", "999"], "no variant '999'; list them with `workbench variants list`"),
        (["deploy", "nope@production"], "no registered model 'nope'"),
        (["deploy", "999", "--replicas", "2"], "a local deployment runs one server process"),
        (["deploy", "999", "--max-batch", "0"], "max_batch must be a whole number from 1 to 1024, not 0 (--max-batch)"),
        (["deploy", "999", "--port", "70000"], "a port is a whole number from 1 to 65535, not 70000 (--port)"),
        (["deploy", "999", "--api-key-env", "WORKBENCH_TEST_UNSET_KEY"],
         "--api-key-env WORKBENCH_TEST_UNSET_KEY: that environment variable is not set or empty"),
        (["deployments", "stop", "999"], "no deployment '999'; list them with `workbench deployments list`"),
        (["deployments", "logs", "abc"], "a deployment id is a whole number, not 'abc'"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_records_nothing(cli_home, args, message):
    env = {"WORKBENCH_TEST_UNSET_KEY": ""}
    proc = run_cli(*args, env=env, check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr
    from storage import db
    from storage import deployments as store

    db.dispose_all()  # this data directory's database, read here rather than by one more CLI process
    try:
        assert store.list_deployments() == []
    finally:
        db.dispose_all()


def test_a_runtime_this_machine_cannot_run_is_refused_before_anything_starts(home):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU: a TensorRT variant could run here")
    from jobs import api
    from storage import catalog
    from storage.errors import InvalidInput
    from tests.support.rows import placeholder_model

    model, _ = placeholder_model()
    engine = catalog.create_variant(model_id=model.id, parent_id=None, name="engine", artifact_dir="/nonexistent",
                                    runtime="tensorrt", precision="fp16", recipe={}, files=[], sha256="e",
                                    size_bytes=1)
    with pytest.raises(InvalidInput, match="TensorRT variant that runs on cuda, and this machine has no CUDA GPU"):
        api.deploy(engine.id)
    assert api.list_deployments() == []


@pytest.mark.slow
def test_a_deployment_becomes_ready_answers_is_listed_and_stops_freeing_its_port(tiny_variant, monkeypatch):
    from jobs import api
    from storage.entities import to_dict
    from tests.support.tiny import LABELS

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the registry in this test's data directory
    api.register_variant(tiny_variant.id, "tiny")
    api.promote("tiny", 1, "production")
    deployment = api.deploy("tiny@production", api_key=KEY, wait_s=READY_WITHIN_S)
    try:
        assert deployment.status == "ready", (deployment.reason, api.deployment_logs(deployment.id).text)
        assert deployment.ready_at is not None and deployment.pid is not None
        assert deployment.variant_id == tiny_variant.id and deployment.variant_sha256 == tiny_variant.sha256
        assert deployment.alias == deployment.name == "tiny@production"
        assert deployment.config["api_key_set"] is True and deployment.config["max_batch"] == 16
        # the key is in no record and on no command line (which `ps` shows to everyone)
        assert KEY not in json.dumps(to_dict(deployment)) and KEY not in " ".join(psutil.Process(deployment.pid).cmdline())

        assert predict(deployment.url, ["what a lovely day"]).status_code == 401
        answer = predict(deployment.url, ["what a lovely day", "awful"], key=KEY)
        assert answer.status_code == 200, answer.text
        predictions = answer.json()["predictions"]
        assert len(predictions) == 2 and all(p["label"] in LABELS for p in predictions)

        listed = json.loads(run_cli("deployments", "list", "--json").stdout)
        assert [(d["id"], d["status"], d["url"], d["variant_id"]) for d in listed] == [
            (deployment.id, "ready", deployment.url, tiny_variant.id)]
        assert f"# deployment {deployment.id}:" in run_cli("deployments", "logs", str(deployment.id)).stdout
        taken = run_cli("deploy", str(tiny_variant.id), "--port", str(deployment.port), check=False)
        assert taken.returncode == 2 and taken.stderr.strip() == (
            f"error: deployment {deployment.id} already uses port {deployment.port}; stop it or choose another port "
            "(--port)")

        stopped = json.loads(run_cli("deployments", "stop", str(deployment.id), "--json").stdout)
    finally:
        if api.get_deployment(deployment.id).running:
            api.stop_deployment(deployment.id)
    assert stopped["status"] == "stopped" and stopped["stopped_at"] and gone(deployment.pid)
    assert api.get_deployment(deployment.id).status == "stopped"
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{deployment.url}/health", timeout=5)
    with socket.socket() as s:  # free for the next server (which, like this one, sets SO_REUSEADDR)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((deployment.host, deployment.port))
    again = run_cli("deployments", "stop", str(deployment.id), check=False)
    assert again.returncode == 2 and "already stopped" in again.stderr


@pytest.mark.slow
def test_a_killed_server_shows_as_crashed_with_the_reason(tiny_variant):
    from jobs import api

    # started by the CLI, which has exited: nobody here can learn its exit status, only that it is gone
    started = run_cli("deploy", str(tiny_variant.id), "--name", "by-cli", "--json", check=False)
    by_cli = json.loads(started.stdout)
    assert started.returncode == 0 and by_cli["status"] == "ready", (by_cli, started.stderr)
    # started here: this process is its parent, reaps it and knows how it ended
    here = api.deploy(tiny_variant.id, name="here", wait_s=READY_WITHIN_S)
    assert here.status == "ready", here.reason
    assert here.port != by_cli["port"]

    for pid in (by_cli["pid"], here.pid):
        os.kill(pid, signal.SIGKILL)
    crashed = wait_for(lambda: (d := api.get_deployment(here.id)).status == "crashed" and d, timeout=10,
                       what="the record to say crashed")
    assert crashed.reason.startswith(f"server process {here.pid} was killed by SIGKILL (signal 9)"), crashed.reason
    assert crashed.stopped_at is not None

    wait_for(lambda: gone(by_cli["pid"]), timeout=10, what="the killed server to end")
    listed = {d["id"]: d for d in json.loads(run_cli("deployments", "list", "--json").stdout)}
    assert listed[by_cli["id"]]["status"] == "crashed"
    assert listed[by_cli["id"]]["reason"].startswith(f"process {by_cli['pid']} is gone")
    assert listed[here.id]["reason"] == crashed.reason
    text = run_cli("deployments", "list").stdout
    assert "crashed" in text and f"process {by_cli['pid']} is gone" in text
    refused = run_cli("deployments", "stop", str(by_cli["id"]), check=False)
    assert refused.returncode == 2 and "already crashed" in refused.stderr and refused.stderr.count("\n") == 1


@pytest.mark.slow
def test_a_tampered_model_file_keeps_it_starting_with_the_servers_reason(tiny_variant):
    from pathlib import Path

    from jobs import api

    config = Path(tiny_variant.artifact_dir) / "config.json"
    config.chmod(0o644)
    config.write_text(config.read_text().replace('"hidden_size": 32', '"hidden_size": 33'))
    deployment = api.deploy(tiny_variant.id)
    assert deployment.status == "starting" and deployment.pid is not None
    waiting = wait_for(lambda: "sha256" in ((d := api.get_deployment(deployment.id)).reason or "") and d, timeout=60,
                       what="the server's reason")
    assert waiting.status == "starting" and "config.json: sha256 differs from the stored hash" in waiting.reason
    listed = json.loads(run_cli("deployments", "list", "--json").stdout)
    assert listed[0]["status"] == "starting" and "config.json" in listed[0]["reason"]
    assert api.stop_deployment(deployment.id).status == "stopped" and gone(deployment.pid)
