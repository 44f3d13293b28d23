"""The CLI end to end in real processes: built-in model and dataset, an `inspect` job run to success."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_cli, stored_files


@pytest.fixture
def cli_home(tmp_path, monkeypatch):
    path = tmp_path / "home"
    monkeypatch.setenv("WORKBENCH_HOME", str(path))
    return path


@pytest.mark.slow
def test_builtin_model_and_dataset_then_inspect_to_success(cli_home):
    model = json.loads(run_cli("models", "add", "builtin:minilm-l6", "--json").stdout)
    assert model["model"]["name"] == "minilm-l6" and len(model["variant"]["sha256"]) == 64

    dataset = json.loads(run_cli("datasets", "add", "builtin:bbc-topics", "--json").stdout)
    assert dataset["labels"] == ["business", "entertainment", "politics", "sports", "tech"]

    queued = json.loads(run_cli("jobs", "list", "--json").stdout)
    assert [(j["kind"], j["status"]) for j in queued] == [("inspect", "queued")]

    run_cli("worker", "--burst")

    job = json.loads(run_cli("jobs", "show", str(queued[0]["id"]), "--json").stdout)
    assert job["status"] == "succeeded", job["error"]
    assert job["result"]["num_parameters"] == 22_713_216
    assert job["result"]["architecture"] == "BertModel" and job["result"]["has_classification_head"] is False

    shown = json.loads(run_cli("models", "show", "minilm-l6", "--json").stdout)
    assert shown["info"]["num_layers"] == 6 and shown["info"]["hidden_size"] == 384
    assert shown["info"]["tokenizer"] and shown["variants"][0]["files"]
    log = run_cli("jobs", "logs", str(job["id"])).stdout
    assert "BertModel: 22.7M parameters" in log

    human = run_cli("models", "list").stdout
    assert "minilm-l6" in human and "22.7M" in human


@pytest.mark.parametrize(
    "args, message",
    [
        (["models", "add", "/no/such/dir"], "no such file or directory"),
        (["models", "add", "hub:org/model"], "HF_HUB_OFFLINE"),
        (["datasets", "add", "builtin:nope"], "no built-in dataset 'nope'"),
        (["jobs", "submit", "nope"], "unknown job kind 'nope'"),
        (["jobs", "submit", "test-sleep", "--param", "seconds=-1"], "seconds must be >= 0"),
        (["jobs", "submit", "inspect"], "choose a model or a variant (--model or --variant)"),
        (["jobs", "submit", "test-sleep", "--params", "[1]"], "--params must be a JSON object"),
        (["jobs", "logs", "abc", "--json"], "no job 'abc'"),
        (["worker", "--concurrency", "0"], "concurrency must be at least 1, not 0 (--concurrency)"),
        (["models", "add", " "], "give a model source"),
        (["jobs", "show", "999"], "no job '999'"),
        (["jobs", "cancel", "999"], "no job '999'"),
        (["variants", "show", "42"], "no variant '42'; list them with `workbench variants list`"),
    ],
)
def test_bad_input_exits_non_zero_with_one_line_and_writes_nothing(cli_home, args, message):
    proc = run_cli(*args, check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert json.loads(run_cli("jobs", "list", "--json").stdout) == []
    assert stored_files(cli_home) == []


def test_listing_commands_import_no_data_or_ml_library(cli_home):
    """A listing answers without pandas, pyarrow, scikit-learn, torch or transformers: each costs every CLI call
    from half a second to seconds, and only commands that read a table or run a model need them."""
    import subprocess
    import sys

    from tests.conftest import REPO

    heavy = ("pandas", "pyarrow", "sklearn", "torch", "transformers", "onnxruntime")
    code = ("import sys\nfrom workbench.cli import main\n"
            "for argv in (['models', 'list'], ['datasets', 'list'], ['jobs', 'list'], ['variants', 'list']):\n"
            "    assert main(argv + ['--json']) == 0\n"
            f"print(sorted(m for m in {heavy!r} if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]", proc.stdout[-2000:]


def test_every_command_has_help(cli_home):
    for args in (["serve"], ["worker"], ["models", "add"], ["models", "list"], ["models", "show"], ["datasets", "add"],
                 ["datasets", "list"], ["datasets", "show"], ["jobs", "submit"], ["jobs", "list"], ["jobs", "show"],
                 ["jobs", "cancel"], ["jobs", "logs"], ["variants", "list"], ["variants", "show"], ["db", "upgrade"],
                 ["deploy"], ["deployments", "list"], ["deployments", "stop"], ["deployments", "logs"]):
        proc = run_cli(*args, "--help")
        assert "usage: workbench" in proc.stdout
        if args[0] not in ("serve", "worker"):
            assert "--json" in proc.stdout


def test_cancel_via_cli(cli_home):
    job = json.loads(run_cli("jobs", "submit", "test-sleep", "--param", "seconds=5", "--json").stdout)
    cancelled = json.loads(run_cli("jobs", "cancel", str(job["id"]), "--json").stdout)
    assert cancelled["status"] == "cancelled"
    again = run_cli("jobs", "cancel", str(job["id"]), check=False)
    assert again.returncode == 2 and "already cancelled" in again.stderr


def test_serve_refuses_a_busy_port_with_one_line(cli_home):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = run_cli("serve", "--port", str(port), check=False)
    assert proc.returncode == 2 and "cannot listen on 127.0.0.1" in proc.stderr and "Traceback" not in proc.stderr


def test_core_errors_name_no_cli_flag_and_the_cli_adds_its_hints(home):
    """The UI shows the core's message as it is, so it speaks of choices, not of flags or commands."""
    from jobs import api
    from storage.errors import InvalidInput, NotFound
    from workbench.cli import error_line

    with pytest.raises(InvalidInput) as needs_input:
        api.submit("inspect", {})
    with pytest.raises(NotFound) as missing:
        api.get_variant("42")
    with pytest.raises(NotFound) as no_job:
        api.get_job(7)
    for exc in (needs_input.value, missing.value, no_job.value):
        assert "--" not in str(exc) and "workbench " not in str(exc), str(exc)
    assert "choose a model or a variant" in str(needs_input.value)
    assert error_line(needs_input.value).endswith("(--model or --variant)")
    assert error_line(missing.value) == "no variant '42'; list them with `workbench variants list`"
    assert error_line(no_job.value) == "no job 7; list them with `workbench jobs list`"


def test_an_old_database_is_refused_until_db_upgrade(cli_home):
    """Commands only check the schema; `workbench db upgrade` (or starting serve or a worker) migrates it."""
    from alembic import command

    from storage import db, settings
    from storage.migrations import alembic_config

    cli_home.mkdir()
    command.upgrade(alembic_config(settings.db_url()), "0006")  # as an older workbench left it
    head = db.head_revision()

    refused = run_cli("jobs", "list", check=False)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.strip() == (f"error: the database at {settings.db_url()} is at revision 0006, this workbench "
                                      f"needs {head}: run `workbench db upgrade`")

    upgraded = json.loads(run_cli("db", "upgrade", "--json").stdout)
    assert (upgraded["from"], upgraded["to"]) == ("0006", head)
    assert json.loads(run_cli("jobs", "list", "--json").stdout) == []
    assert f"already at revision {head}" in run_cli("db", "upgrade").stdout


def test_jobs_logs_follow_prints_every_chunk_until_the_job_finishes(home, monkeypatch, capsys):
    """No cap: a log past the old 2 MB limit is followed whole, including what the worker adds after the end."""
    import threading

    from storage import queue
    from storage.orm import JobStatus
    from workbench import cli

    monkeypatch.setattr(cli, "LOG_POLL_S", 0.3)  # time enough for the last append after finish
    job = queue.enqueue("test-sleep", {})
    assert queue.claim_next("w1", ["cpu"]).id == job.id
    block = "z" * 49_999 + "\n"
    written = [f"chunk {i}\n{block}" for i in range(50)]  # 2.5 MB
    started = threading.Event()

    def run_job():
        started.wait(10)
        for text in written:
            queue.append_log(job.id, text)
        queue.finish(job.id, JobStatus.SUCCEEDED)
        queue.append_log(job.id, "last output, drained after the job process exited\n")

    writer = threading.Thread(target=run_job)
    writer.start()
    queue.append_log(job.id, "before following\n")
    started.set()
    try:
        assert cli.main(["jobs", "logs", "-f", str(job.id)]) == 0
    finally:
        writer.join()
    printed = capsys.readouterr().out
    expected = "before following\n" + "".join(written) + "last output, drained after the job process exited\n"
    assert len(printed) > 2_500_000 and printed == expected == queue.job_log(job.id)
