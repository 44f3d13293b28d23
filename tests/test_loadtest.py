"""The `loadtest` job kind: a real model server for a tiny classifier (its own process, real HTTP on 127.0.0.1,
an API key read from the worker's environment) driven by real loadtest jobs through the worker; bounds, foreign
hosts and deployments that are not running are refused with the reason."""

from __future__ import annotations

import os
import re

import pytest

from tests.conftest import run_cli

KEY = "load-test-key"
KEY_ENV = "WORKBENCH_TEST_LOADTEST_KEY"
READY_WITHIN_S = 120
# one text runs at a time and one more may wait: eight senders must meet 429s, one sender never
SERVER = dict(max_batch=1, max_queue=1, max_wait_ms=0)
QUICK = {"concurrency": "1,8", "requests": 40, "max_seconds": 20, "warmup": 4, "texts": 30, "slo_p95_ms": 60_000}


@pytest.fixture(scope="module")
def lab(tmp_path_factory, minilm_dir):
    from jobs import api
    from storage import db
    from tests.support.browser import module_home
    from tests.support.data import write_sentiment_csv
    from tests.support.tiny import tiny_classifier

    root = tmp_path_factory.mktemp("loadtest")
    with module_home(root / "home"):
        db.upgrade()
        os.environ[KEY_ENV] = KEY
        try:
            variant = api.add_model(api.ModelRequest(str(tiny_classifier(root / "tiny", minilm_dir)), name="tiny")).variant
            dataset = api.add_dataset(api.DatasetRequest(str(write_sentiment_csv(root / "toy.csv", per_class=20)),
                                                         name="toy"))
            for queued in api.list_jobs("queued"):  # the model's automatic inspection: not what is tested here
                api.cancel_job(queued.id)
            deployment = api.deploy(variant.id, api_key=KEY, api_key_env=KEY_ENV, wait_s=READY_WITHIN_S, **SERVER)
            assert deployment.status == "ready", (deployment.reason, api.deployment_logs(deployment.id).text)
            yield {"variant": variant, "dataset": dataset, "deployment": deployment}
        finally:
            os.environ.pop(KEY_ENV, None)
            for running in api.list_deployments():  # a failed test leaves no server behind
                if running.running:
                    api.stop_deployment(running.id)


def run_queue() -> None:
    from jobs.runner.worker import Worker

    Worker(burst=True, poll_interval=0.05).run()


def test_a_sweep_stores_one_sane_row_per_concurrency(lab):
    from jobs import api
    from jobs.bench.fingerprint import fingerprint_hash
    from storage.load_tests import list_load_tests

    deployment = lab["deployment"]
    job = api.submit_load_test(deployment.id, QUICK, dataset="toy")
    assert job.variant_id == lab["variant"].id and job.dataset_id == lab["dataset"].id
    run_queue()
    done = api.get_job(job.id)
    assert done.status.value == "succeeded", (done.message, api.job_log(job.id)[-3000:])
    rows = api.load_tests(deployment=deployment.id)
    assert [r["concurrency"] for r in rows] == [1, 8] and {r["job_id"] for r in rows} == {job.id}
    for row in rows:
        assert row["ok"] + sum(row["errors"].values()) == row["sent"] <= QUICK["requests"], row
        assert row["ok"] > 0 and row["requests_per_s"] > 0 and row["texts_per_s"] == pytest.approx(row["requests_per_s"])
        assert row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"], row
        assert row["variant_ids"] == [lab["variant"].id] and row["stopped_by"] == "requests"
        assert row["fingerprint_hash"] == done.result["fingerprint_hash"]
        assert {"other_cpu_fraction", "steal_fraction", "loadavg_1m"} <= set(row["load"]) and isinstance(row["busy"], bool)
    stored = list_load_tests(job_id=job.id)
    assert all(fingerprint_hash(r.fingerprint) == r.fingerprint_hash and r.fingerprint["device"] == "cpu"
               and r.fingerprint["cpu_count"] == os.cpu_count() for r in stored)
    alone, crowded = rows
    assert alone["errors"] == {} and alone["ok"] == alone["sent"] == QUICK["requests"]
    assert crowded["errors"].get("429", 0) > 0, crowded  # a one-text queue refuses most of eight senders
    assert api.load_tests(variants=[lab["variant"].id]) == rows and api.load_tests(variants=[999]) == []
    assert done.message.startswith("best throughput") and "requests/s" in done.message and "SLO" in done.message
    assert [level["concurrency"] for level in done.result["levels"]] == [1, 8]
    assert done.result["best_requests_per_s"] == max(r["requests_per_s"] for r in rows)
    log = api.job_log(job.id)
    assert "concurrency 8: " in log and re.search(r"warm-up: [1-4] of 4 answered OK", log), log

    # what the Deploy and Compare tabs show: the levels and one p50 and one p95 line, a point per concurrency
    from workbench.tabs import compare_loadtest, deploy_loadtest

    summary, chart = deploy_loadtest.load_test_view(str(deployment.id))
    assert f"job {job.id}" in summary and "| 8 | 40 |" in summary and "429: " in summary
    assert [len(trace.x) for trace in chart.data] == [2, 2] and list(chart.data[1].y) == [r["p95_ms"] for r in rows]
    note, figure = compare_loadtest.load_tests_view(done.result["fingerprint_hash"])
    assert f"(deployment {deployment.id})" in figure.data[0].name and list(figure.data[0].x) == [
        r["requests_per_s"] for r in rows]
    assert compare_loadtest.load_tests_view("0" * 16)[0] == compare_loadtest.NONE_YET


def test_the_key_must_be_in_the_workers_environment(lab):
    from jobs import api

    os.environ.pop(KEY_ENV)
    try:
        job = api.submit_load_test(lab["deployment"].id, QUICK, dataset="toy")
        run_queue()
    finally:
        os.environ[KEY_ENV] = KEY
    done = api.get_job(job.id)
    assert done.status.value == "failed" and f"set {KEY_ENV} in the worker's environment" in done.message, done.message
    assert api.load_tests(job=job.id) == []


@pytest.mark.parametrize("params, message", [
    ({"concurrency": "0,4"}, "concurrency must be 1 to 12 levels, each from 1 to 256"),
    ({"concurrency": "1,100000"}, "concurrency must be 1 to 12 levels"),
    ({"concurrency": "4,4"}, "concurrency lists a level twice"),
    ({"requests": 10**9}, "requests per level must be from 1 to 20000"),
    ({"concurrency": "1,32", "requests": 8}, "must be at least the highest concurrency (32)"),
    ({"max_seconds": 86400}, "max_seconds per level must be from 0.5 to 300"),
    ({"concurrency": "1,2,4,8,16,32,64,128", "max_seconds": 300}, "exceed the 1800 s a load test may take"),
    ({"warmup": -1}, "warmup must be from 0 to 1000"),
    ({"api_key_env": "NOT A NAME"}, "api_key_env must name an environment variable"),
])
def test_absurd_bounds_are_refused_before_anything_is_queued(lab, params, message):
    from jobs import api
    from storage.errors import InvalidInput

    before = len(api.list_jobs())
    with pytest.raises(InvalidInput) as refused:
        api.submit_load_test(lab["deployment"].id, params)
    assert message in str(refused.value) and len(api.list_jobs()) == before
    with pytest.raises(InvalidInput, match="deployment is required"):
        api.submit("loadtest", {k: v for k, v in params.items() if k != "deployment"})


def test_the_generic_cli_submits_and_refuses_a_loadtest(lab):
    from jobs import api

    refused = run_cli("deployments", "loadtest", str(lab["deployment"].id), "--concurrency", "0,4", check=False)
    assert refused.returncode == 2 and refused.stderr.strip().startswith("error: concurrency must be"), refused.stderr
    queued = run_cli("jobs", "submit", "loadtest", "--param", f"deployment={lab['deployment'].id}", "--param",
                     "concurrency=1,2", "--dataset", "toy")
    job = api.list_jobs()[0]
    assert f"job {job.id} (loadtest) queued" in queued.stdout and job.params["concurrency"] == [1, 2]
    api.cancel_job(job.id)


def test_only_loopback_targets_are_accepted(lab):
    from jobs import api
    from jobs.serving.loadgen import is_loopback, run_level
    from storage import deployments as store
    from storage.errors import InvalidInput

    assert all(is_loopback(h) for h in ("127.0.0.1", "127.8.0.1", "::1", "[::1]", "localhost", "LOCALHOST"))
    assert not any(is_loopback(h) for h in ("10.0.0.7", "192.168.1.2", "example.com", "0.0.0.0", "::", "", "::ffff:1"))
    with pytest.raises(InvalidInput, match="only targets this machine .* not '10.0.0.7'"):
        run_level("http://10.0.0.7:80/v1/predict", ["x"], concurrency=1, requests=1, max_seconds=1)
    remote = store.create_deployment(name="remote", variant_id=lab["variant"].id, variant_sha256=lab["variant"].sha256,
                                     alias=None, host="10.0.0.7", port=8080, config={}, pid=None, status="ready",
                                     reason=None, log_path="")
    before = len(api.list_jobs())
    with pytest.raises(InvalidInput, match=f"deployment {remote.id} listens on 10.0.0.7: a load test only targets"):
        api.submit_load_test(remote.id, {"concurrency": "1"})
    assert len(api.list_jobs()) == before
    store.update_deployment(remote.id, status="stopped")


def test_a_deployment_that_is_not_running_is_refused_or_fails_the_job_with_the_reason(lab):
    from jobs import api
    from storage import deployments as store
    from storage.errors import InvalidInput, NotFound

    with pytest.raises(NotFound, match="no deployment '999'"):
        api.submit_load_test(999)
    crashed = store.create_deployment(name="gone", variant_id=lab["variant"].id, variant_sha256="x", alias=None,
                                      host="127.0.0.1", port=9, config={}, pid=None, status="crashed",
                                      reason="process 1 is gone", log_path="")
    with pytest.raises(InvalidInput, match=f"deployment {crashed.id} is crashed: process 1 is gone"):
        api.submit_load_test(crashed.id, dataset="toy")
    # queued while ready, stopped before it runs: the job fails with the deployment's state and why
    deployment = lab["deployment"]
    job = api.submit_load_test(deployment.id, QUICK, dataset="toy")
    api.stop_deployment(deployment.id)
    run_queue()
    done = api.get_job(job.id)
    assert done.status.value == "failed", done.message
    assert f"deployment {deployment.id} is not ready (stopped: stopped on request)" in done.message, done.message
    assert api.load_tests(job=job.id) == []


def test_the_load_tests_table_migration_goes_both_ways(home):
    from alembic import command
    from sqlalchemy import create_engine, inspect

    from jobs.kinds.loadtest import tracked_levels
    from storage import db, settings
    from storage.migrations import alembic_config

    raw = create_engine(settings.db_url())
    assert "load_tests" in inspect(raw).get_table_names()
    db.dispose_all()
    command.downgrade(alembic_config(settings.db_url()), "0010")
    assert "load_tests" not in inspect(raw).get_table_names()
    assert db.upgrade() == ("0010", db.head_revision())
    assert {"concurrency", "p99_ms", "errors", "fingerprint_hash"} <= {
        c["name"] for c in inspect(raw).get_columns("load_tests")}
    raw.dispose()
    # an MLflow run gets each figure as a curve over the concurrencies
    levels = [{"concurrency": 1, "requests_per_s": 10.0, "texts_per_s": 10.0, "p50_ms": 1.0, "p95_ms": 2.0,
               "p99_ms": 3.0}, {"concurrency": 4, "requests_per_s": 30.0, "texts_per_s": 30.0, "p50_ms": None,
                                "p95_ms": None, "p99_ms": None}]
    metrics = tracked_levels(None, {"levels": levels})["metrics"]
    assert ("p95_ms", 2.0, 1) in metrics and ("requests_per_s", 30.0, 4) in metrics and len(metrics) == 7
