"""MLflow: every job a real worker runs is an MLflow run; variants become registered model versions whose aliases
are promoted and rolled back. Everything is checked through `MlflowClient`, as another MLflow user would see it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port, run_cli, wait_for
from tests.support.mlflow_checks import (
    LOAD_WITH_MLFLOW,
    PYFUNC_TEXTS,
    assert_answers_like_the_workbench,
    client,
    mlflow_user_env,
    run_of,
)

pytestmark = pytest.mark.slow

# a learning rate a tiny random model learns the toy words with: a degenerate model could not be promoted
FINETUNE = {"epochs": 4, "max_length": 16, "batch_size": 8, "max_val_examples": 20, "patience": 5,
            "learning_rate": 0.005}


@pytest.fixture(scope="module")
def lab(tmp_path_factory, minilm_dir):
    """One tiny model, the toy dataset, a fine-tune (and the evaluation it queues) and a failing job, run by one
    `worker --burst` with the default tracking store."""
    from storage import db
    from tests.support.data import write_sentiment_csv
    from tests.support.tiny import tiny_classifier

    root = tmp_path_factory.mktemp("mlflow")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WORKBENCH_HOME", str(root / "home"))
        for name in ("WORKBENCH_DB_URL", "MLFLOW_TRACKING_URI"):
            mp.delenv(name, raising=False)
        mp.setenv("WORKBENCH_MLFLOW", "on")
        db.dispose_all()
        from jobs import api

        intake = api.add_model(api.ModelRequest(str(tiny_classifier(root / "tiny", minilm_dir)), name="tiny"))
        api.add_dataset(api.DatasetRequest(str(write_sentiment_csv(root / "toy.csv")), name="toy"))
        finetune = api.submit("finetune", FINETUNE, model="tiny", dataset="toy")
        failing = api.submit("test-sleep", {"seconds": 0, "outcome": "raise"})
        run_cli("worker", "--burst")
        finetune = api.get_job(finetune.id)
        assert finetune.status.value == "succeeded", api.job_log(finetune.id)[-3000:]
        uri = f"sqlite:///{root / 'home' / 'mlflow.db'}"
        yield {"api": api, "root": root, "uri": uri, "root_variant": intake.variant, "finetune": finetune,
               "failing": api.get_job(failing.id)}
        db.dispose_all()


def test_the_default_store_is_sqlite_in_the_data_directory(lab):
    assert lab["api"].mlflow_uri()["tracking_uri"] == lab["uri"]
    assert (lab["root"] / "home" / "mlflow.db").is_file()
    assert lab["api"].mlflow_uri()["ui_command"] == f"mlflow ui --backend-store-uri {lab['uri']}"


def test_every_job_is_a_run_with_params_metrics_tags_and_artifacts(lab):
    api, c = lab["api"], client(lab["uri"])
    finetune = lab["finetune"]
    produced = api.get_variant(finetune.produced_variant_id)
    evaluate = next(j for j in api.list_jobs() if j.kind == "evaluate" and j.variant_id == produced.id)
    inspect = next(j for j in api.list_jobs() if j.kind == "inspect")
    for job in (finetune, evaluate, inspect):  # one run per job, in the model's experiment
        assert run_of(lab["uri"], job.id, "workbench/tiny").info.status == "FINISHED"

    run = run_of(lab["uri"], finetune.id, "workbench/tiny")
    assert run.info.run_name == f"job {finetune.id} finetune"
    assert run.data.params["epochs"] == "4" and run.data.params["max_length"] == "16"
    assert json.loads(run.data.params["lora_target_modules"]) == ["query", "value"]  # lists as JSON
    assert float(run.data.params["resolved.learning_rate"]) > 0  # what "auto" became
    tags = run.data.tags
    assert tags["workbench.kind"] == "finetune" and tags["workbench.status"] == "succeeded"
    assert tags["workbench.model"] == "tiny" and tags["workbench.dataset"] == "toy"
    assert tags["workbench.produced_variant_id"] == str(produced.id)
    assert tags["workbench.variant_artifact_dir"] == Path(produced.artifact_dir).as_uri()  # a link, no copy
    metrics = run.data.metrics
    assert 0 <= metrics["training.best_val_accuracy"] <= 1 and metrics["variant_size_bytes"] == produced.size_bytes
    curve = c.get_metric_history(run.info.run_id, "val_accuracy")  # the training curve, one step per epoch
    assert [m.step for m in curve] == [1, 2, 3, 4][: len(curve)] and curve
    assert {a.path for a in c.list_artifacts(run.info.run_id)} >= {"job.json", "variant.json", "job.log"}
    assert not any(a.path.endswith(".safetensors") for a in c.list_artifacts(run.info.run_id))
    assert run.info.artifact_uri.startswith((lab["root"] / "home" / "mlartifacts").as_uri())
    assert f"MLflow: run {run.info.run_id}" in api.job_log(finetune.id)

    evaluation = api.variant_detail(produced.id)["evaluations"][-1]
    scored = run_of(lab["uri"], evaluate.id, "workbench/tiny")
    assert scored.data.metrics["accuracy"] == pytest.approx(evaluation.accuracy)
    assert scored.data.metrics["macro_f1"] == pytest.approx(evaluation.macro_f1)
    assert "evaluation.json" in {a.path for a in c.list_artifacts(scored.info.run_id)}


def test_a_failed_job_is_a_failed_run(lab):
    failing = lab["failing"]
    assert failing.status.value == "failed"
    run = run_of(lab["uri"], failing.id, "workbench")  # no model: the default experiment
    assert run.info.status == "FAILED" and run.data.tags["workbench.status"] == "failed"
    assert "asked to fail" in run.data.tags["workbench.error"]


def test_a_job_cancelled_while_running_is_a_killed_run(lab):
    from jobs.runner.worker import Worker
    from storage import queue

    api = lab["api"]
    job = api.submit("test-sleep", {"seconds": 30})
    worker = Worker(poll_interval=0.05)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        wait_for(lambda: queue.get_job(job.id).pid, what="job process")
        queue.request_cancel(job.id)
        wait_for(lambda: queue.get_job(job.id).status.finished, timeout=30, what="cancelled job")
    finally:
        worker.stop()
        thread.join(90)  # the worker hands its tracker the last job ids before it stops
    assert queue.get_job(job.id).status.value == "cancelled"
    assert run_of(lab["uri"], job.id, "workbench").info.status == "KILLED"


def test_register_promote_and_roll_back_through_aliases(lab):
    from storage.errors import Conflict, InvalidInput, NotFound

    api, c = lab["api"], client(lab["uri"])
    tuned = api.get_variant(lab["finetune"].produced_variant_id)
    v1 = api.register_variant(tuned.id)
    assert v1["model"] == "tiny" and v1["version"] == "1"
    mv = c.get_model_version("tiny", "1")
    assert mv.tags["workbench.variant_id"] == str(tuned.id) and mv.tags["sha256"] == tuned.sha256
    assert mv.tags["runtime"] == "pytorch" and mv.tags["precision"] == "fp32"
    assert float(mv.tags["accuracy"]) == pytest.approx(api.variant_detail(tuned.id)["evaluations"][-1].accuracy, abs=1e-6)
    assert mv.tags["workbench.variant_artifact_dir"] == Path(tuned.artifact_dir).as_uri()
    # the version is a real MLflow model: its files were logged into the tracking store's artifacts
    assert mv.source.startswith((lab["root"] / "home" / "mlartifacts").as_uri())
    assert mv.run_id == run_of(lab["uri"], lab["finetune"].id, "workbench/tiny").info.run_id  # linked to its job's run
    v2 = api.register_variant(lab["root_variant"].id)
    assert v2["version"] == "2" and c.get_model_version("tiny", "2").tags["workbench.variant_id"] == str(lab["root_variant"].id)
    with pytest.raises(Conflict, match="already version 1"):
        api.register_variant(tuned.id)

    def alias(name: str) -> str:
        return str(c.get_model_version_by_alias("tiny", name).version)

    api.promote("tiny", 1, "staging")
    api.promote("tiny", "v1", "production")
    assert alias("staging") == alias("production") == "1"
    moved = api.promote("tiny", 2, "production")
    assert moved["previous"] == "1" and alias("production") == "2"
    back = api.rollback("tiny", "production")
    assert back == {"name": "tiny", "alias": "production", "version": "1", "previous": "2", "changed": True}
    assert alias("production") == "1" and alias("staging") == "1"
    with pytest.raises(InvalidInput, match="nothing to roll back"):
        api.rollback("tiny", "production")  # before v1 it pointed nowhere

    state = api.registry_state()
    tiny = next(m for m in state["models"] if m["name"] == "tiny")
    assert tiny["aliases"] == {"production": "1", "staging": "1"}
    assert [(v["version"], v["variant_id"], v["aliases"]) for v in tiny["versions"]] == [
        ("1", tuned.id, ["production", "staging"]), ("2", lab["root_variant"].id, [])]
    for bad, error, message in [
        (lambda: api.register_variant(999), NotFound, "no variant '999'"),
        (lambda: api.promote("tiny", 7), NotFound, "has no version 7"),
        (lambda: api.promote("nope", 1), NotFound, "no registered model 'nope'"),
        (lambda: api.promote("tiny", 1, "latest"), InvalidInput, "reserved"),
        (lambda: api.promote("tiny", "one"), InvalidInput, "positive number"),
        (lambda: api.register_variant(tuned.id, "a/b"), InvalidInput, "registered model name"),
    ]:
        with pytest.raises(error, match=message):
            bad()


def test_registry_cli(lab):
    api, tuned = lab["api"], lab["finetune"].produced_variant_id
    registered = json.loads(run_cli("registry", "register", str(tuned), "--name", "tiny-cli", "--json").stdout)
    assert registered["model"] == "tiny-cli" and registered["version"] == "1" and registered["variant_id"] == tuned
    api.register_variant(lab["root_variant"].id, "tiny-cli")
    api.promote("tiny-cli", 2)
    promoted = json.loads(run_cli("registry", "promote", "tiny-cli", "1", "--json").stdout)  # default alias production
    assert promoted == {"name": "tiny-cli", "alias": "production", "version": "1", "previous": "2", "changed": True,
                        "degenerate": None}  # the reason, had it been forced through
    assert "production rolled back to version 2" in run_cli("registry", "rollback", "tiny-cli").stdout
    assert str(client(lab["uri"]).get_model_version_by_alias("tiny-cli", "production").version) == "2"
    listing = run_cli("registry", "list").stdout
    assert f"mlflow ui --backend-store-uri {lab['uri']}" in listing and "tiny-cli: production -> v2" in listing
    for args, message in [
        (("register", "999"), "error: no variant '999'"),
        (("promote", "tiny-cli", "1", "--alias", "bad alias"), "error: alias 'bad alias'"),
        (("rollback", "tiny-cli", "--alias", "staging"), "error: nothing to roll back"),
    ]:
        refused = run_cli("registry", *args, "--json", check=False)
        assert refused.returncode == 2 and refused.stderr.startswith(message), refused.stderr
        assert refused.stderr.count("\n") == 1 and not refused.stdout  # one line, nothing written


# ---- a registered version is a real MLflow model ------------------------------------------------------------------

@pytest.fixture(scope="module")
def pyfunc_versions(lab):
    """The fine-tuned variant (PyTorch) and its ONNX export as versions of `tiny-pyfunc`: PyTorch promoted to
    production, ONNX to staging."""
    api = lab["api"]
    tuned = lab["finetune"].produced_variant_id
    export = api.submit("export-onnx", {}, variant=tuned, dataset="toy")
    run_cli("worker", "--burst")
    onnx = api.get_job(export.id).produced_variant_id
    assert onnx and api.get_variant(onnx).runtime == "onnxruntime", api.job_log(export.id)[-2000:]
    name = "tiny-pyfunc"
    for variant in (tuned, onnx):
        api.register_variant(variant, name)
    api.promote(name, 1, "production")
    api.promote(name, 2, "staging")
    return {"name": name, "variants": {"production": tuned, "staging": onnx}}


def test_mlflow_loads_a_promoted_alias_and_answers_like_the_workbench(lab, pyfunc_versions, tmp_path):
    api, name, variants = lab["api"], pyfunc_versions["name"], pyfunc_versions["variants"]
    loaded = subprocess.run(
        [sys.executable, "-c", LOAD_WITH_MLFLOW, name, ",".join(variants), json.dumps(PYFUNC_TEXTS)],
        capture_output=True, text=True, env=mlflow_user_env(lab["uri"]), cwd=tmp_path, timeout=300,
    )
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    answers = json.loads(loaded.stdout.strip().splitlines()[-1])
    labels = list(api.predict(variants["production"], PYFUNC_TEXTS[0]).probabilities)
    for alias, variant_id in variants.items():
        answer = answers[alias]
        assert_answers_like_the_workbench(api, variant_id, answer["frame"], PYFUNC_TEXTS)
        assert_answers_like_the_workbench(api, variant_id, answer["mapping"], PYFUNC_TEXTS)  # {"text": [...]} too
        signature = answer["signature"]
        assert json.loads(signature["inputs"]) == [{"type": "string", "name": "text", "required": True}]
        assert [c["name"] for c in json.loads(signature["outputs"])] == ["label", "confidence"] + [
            f"p_{label}" for label in labels]
        assert answer["input_example"]["type"] == "dataframe" and "input_example.json" in answer["files"]
        files = answer["files"]
        assert "MLmodel" in files and "requirements.txt" in files
        weights = "model.safetensors" if alias == "production" else "model.onnx"
        assert any(f.startswith("artifacts/") and f.endswith(f"/{weights}") for f in files), files
        # nothing pickled: no pickle files, and the wrapper is MLflow "models from code", not a cloudpickle
        assert not [f for f in files if f.endswith((".pkl", ".pickle", ".bin", ".pt", ".pth", ".pyc"))], files
    assert not list(tmp_path.iterdir())  # it wrote nothing where it ran (no ./mlruns)

    mv = client(lab["uri"]).get_model_version(name, "2")
    assert mv.tags["runtime"] == "onnxruntime" and mv.tags["workbench.variant_id"] == str(variants["staging"])


def test_mlflow_models_serve_runs_a_promoted_alias(lab, pyfunc_versions, tmp_path):
    if importlib.util.find_spec("uvicorn") is None:
        pytest.skip("`mlflow models serve` runs MLflow's scoring server under uvicorn, which is not installed here")
    api, name = lab["api"], pyfunc_versions["name"]
    port = free_port()
    env = mlflow_user_env(lab["uri"])
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # mlflow starts `uvicorn` from PATH
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{name}@production", "--env-manager",
         "local", "-h", "127.0.0.1", "-p", str(port)],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path, start_new_session=True,
    )

    def ping():
        assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    try:
        wait_for(ping, timeout=120, interval=0.5, what="mlflow models serve")
        body = {"dataframe_split": {"columns": ["text"], "data": [[t] for t in PYFUNC_TEXTS]}}
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            rows = json.loads(response.read())["predictions"]
        assert_answers_like_the_workbench(api, pyfunc_versions["variants"]["production"], rows, PYFUNC_TEXTS)
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server's own session: mlflow and the uvicorn it started
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(30)
        log.close()


def test_mlflow_tracking_uri_overrides_and_tracking_can_be_off(lab, monkeypatch):
    from jobs.runner.worker import Worker
    from jobs.tracking import runs as tracking

    api = lab["api"]
    other = f"sqlite:///{lab['root'] / 'other.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", other)
    assert api.mlflow_uri()["tracking_uri"] == other
    job = api.submit("test-sleep", {"seconds": 0})
    Worker(burst=True, poll_interval=0.05).run()
    assert run_of(other, job.id, "workbench").info.status == "FINISHED"
    default = client(lab["uri"])
    assert not default.search_runs([default.get_experiment_by_name("workbench").experiment_id],
                                   filter_string=f"tags.`workbench.job_id` = '{job.id}'")
    assert client(other).get_experiment_by_name("workbench").artifact_location.startswith(
        (lab["root"] / "home" / "mlartifacts").as_uri())

    monkeypatch.setenv("WORKBENCH_MLFLOW", "off")
    quiet = api.submit("test-sleep", {"seconds": 0})
    Worker(burst=True, poll_interval=0.05).run()
    assert api.get_job(quiet.id).status.value == "succeeded" and "MLflow" not in api.job_log(quiet.id)
    assert not client(other).search_runs([client(other).get_experiment_by_name("workbench").experiment_id],
                                         filter_string=f"tags.`workbench.job_id` = '{quiet.id}'")

    # a tracking problem is one line in the job's log, never a failed job
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "bogus-scheme://nowhere")
    line = tracking.track(quiet.id)
    assert line.startswith("MLflow tracking failed (the job is not affected):") and "\n" not in line
    assert api.get_job(quiet.id).status.value == "succeeded"


def test_a_searchs_pipelines_share_one_tracker_that_logs_all_their_jobs(home, monkeypatch):
    """A search runs each trial's pipeline with a burst worker of its own; they share the search's tracker, so
    MLflow is imported once per search, not beside each trial (a re-measure's or the run-off's benchmark, the first
    job of its pipeline, would be timed beside that import), and every job is still a run."""
    from jobs.search.drive import run_pipeline
    from jobs.tracking.runs import Tracker, tracking_uri
    from storage import queue

    monkeypatch.setenv("WORKBENCH_MLFLOW", "on")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tracker, jobs, trackers = Tracker(), [], set()
    for pipeline in ("search-1-trial-1", "search-1-trial-2"):
        jobs += [queue.enqueue("test-sleep", {"seconds": 0}, pipeline=pipeline) for _ in range(2)]
        assert run_pipeline(pipeline, out_of_time=lambda: False, cancelled=lambda: False,
                            shutting_down=lambda: False, tracker=tracker) is None
        assert tracker.process is not None and tracker.process.poll() is None  # its worker left it running
        trackers.add(tracker.process.pid)
    assert len(trackers) == 1
    tracker.close()
    for job in jobs:
        assert queue.get_job(job.id).status.value == "succeeded"
        assert run_of(tracking_uri(), job.id, "workbench").info.status == "FINISHED"


def test_benchmark_cells_become_metrics_and_long_params_are_cut(lab):
    """What a run records, without MLflow: a finished benchmark job's cells; a parameter over MLflow's limit."""
    from jobs.tracking import runs as tracking
    from storage import catalog, queue
    from storage.orm import JobStatus

    root = lab["root_variant"]
    job = queue.enqueue("benchmark", {"batch_sizes": [1], "note": "x" * 7000}, variant_id=root.id)
    assert queue.claim_next("describe-test", ["cpu"]).id == job.id
    stats = dict(samples=10, p50_ms=2.0, p90_ms=2.5, p95_ms=3.0, p99_ms=3.5, mean_ms=2.2, std_ms=0.3,
                 throughput_sps=500.0, tokens_per_s=8000.0, peak_rss_bytes=None, gpu_peak_bytes=None, load_time_s=0.1,
                 threads=1, stable=True, spread=0.01, fingerprint={}, fingerprint_hash="f" * 16)
    catalog.add_measurements([dict(variant_id=root.id, job_id=job.id, dataset_id=None, device="cpu", batch_size=1,
                                   seq_len=16, **stats)])
    assert queue.finish(job.id, JobStatus.SUCCEEDED, result={"measurements": 1, "variants": [root.id]},
                        worker_id="describe-test")
    record = tracking.describe_job(queue.get_job(job.id))
    metrics = {key: value for key, value, _ in record["metrics"]}
    assert metrics[f"p50_ms.v{root.id}.b1.s16"] == 2.0 and metrics[f"p95_ms.v{root.id}.b1.s16"] == 3.0
    assert metrics[f"throughput_sps.v{root.id}.b1.s16"] == 500.0 and metrics["measurements"] == 1
    assert len(record["params"]["note"]) == tracking.MAX_PARAM and record["params"]["batch_sizes"] == "[1]"
    assert record["experiment"] == "workbench/tiny" and record["status"] == "FINISHED"


def test_a_registry_alias_works_wherever_a_variant_id_does(home, tmp_path, minilm_dir, monkeypatch):
    """`NAME@ALIAS` resolves, when asked, to the variant the alias points at: predict, A/B, the CLI and the tabs."""
    from jobs import api
    from jobs.playground.predictor_cache import CACHE
    from storage.errors import NotFound
    from tests.support.tiny import add_two_tiny_variants
    from workbench.tabs import predictor

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    text = "what a wonderful day"
    a, b = add_two_tiny_variants(tmp_path, minilm_dir)
    api.register_variant(a.id, "tiny")
    api.register_variant(b.id, "tiny")
    api.promote("tiny", 1, "production")
    api.promote("tiny", 2, "staging")
    try:
        assert api.resolve_variant("tiny@production").id == a.id and api.resolve_variant(str(b.id)).id == b.id
        assert api.predict("tiny@production", text).probabilities == api.predict(a.id, text).probabilities
        side = api.ab_compare("tiny@production", "tiny@staging", text)
        assert side.b.probabilities == api.predict(b.id, text).probabilities
        on_split = api.ab_test_set("tiny@production", "tiny@staging", "toy", limit=10)
        assert (on_split.variant_a, on_split.variant_b) == (a.id, b.id)

        api.promote("tiny", 2, "production")  # the alias moves: the same reference now means the other variant
        assert api.predict_batch("tiny@production", [text]).variant_id == b.id
        for ref, message in [("tiny@nope", "registered model 'tiny' has no alias 'nope'; its aliases: production, staging"),
                             ("nope@production", "no registered model 'nope'")]:
            with pytest.raises(NotFound, match=message):
                api.predict(ref, text)

        assert ("tiny@production → #%d (v2)" % b.id, "tiny@production") in predictor.known_choices()["variants"]
        shown, _chart, _loaded = predictor.predict("tiny@staging", text)
        assert not shown.startswith("✗"), shown

        cli = json.loads(run_cli("predict", "tiny@production", text, "--json").stdout)
        assert cli[0]["probabilities"] == pytest.approx(api.predict(b.id, text).probabilities)
        refused = run_cli("predict", "tiny@nope", text, check=False)
        assert refused.returncode == 2 and refused.stderr.count("\n") == 1
        assert "has no alias 'nope'" in refused.stderr and "`workbench registry list`" in refused.stderr
    finally:
        CACHE.clear()
