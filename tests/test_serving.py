"""The model server (`python -m jobs.serving.server`): real server processes answering real HTTP on 127.0.0.1.

Tiny BERT classifiers (MiniLM's tokenizer) are stored in one data directory for the module; three servers
run them: one with API keys, a prediction cache and a batching window; one with a queue of 4 texts and batches
of 1, to be overloaded; one for a variant whose weights were altered after they were stored.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import REPO, free_port, wait_for
from tests.support.browser import wait_until_serving
from tests.support.processes import Server

KEYS = ("key-one", "key-two")
AUTH = {"Authorization": f"Bearer {KEYS[1]}"}
TEXTS = ["what a wonderful day", "the flight was delayed again", "meh", "I would not recommend this",
         "word " * 300]  # the last is longer than the model's 128 tokens: truncated, and said so


@dataclass
class Served:
    variant: object
    predictor: object
    main: Server  # API keys, cache of 64, max batch 16, max wait 20 ms
    overloaded: Server  # queue of 4 texts, batches of 1, timeout 1 s, no keys
    tampered: Server  # a variant whose model.safetensors changed after it was stored


def start_server(home: Path, name: str, variant_id: int, *args: str,
                 env: dict[str, str] | None = None) -> Server:
    port = free_port()
    log = home / f"{name}.log"
    environment = {k: v for k, v in os.environ.items() if k != "WORKBENCH_SERVING_API_KEYS"}
    environment.update({"WORKBENCH_HOME": str(home), **(env or {})})
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "jobs.serving.server", "--variant-id", str(variant_id),
                                 "--port", str(port), "--threads", "1", *args],
                                cwd=REPO, env=environment, stdout=out, stderr=subprocess.STDOUT)
    return Server(proc, f"http://127.0.0.1:{port}", log)


@pytest.fixture(scope="module")
def served(tmp_path_factory, minilm_dir):
    from jobs import api
    from jobs.runtimes import load_predictor
    from storage import db
    from tests.support.tiny import tiny_classifier

    base = tmp_path_factory.mktemp("serving")
    home = base / "home"
    servers: list[Server] = []
    with pytest.MonkeyPatch.context() as env:
        env.setenv("WORKBENCH_HOME", str(home))
        env.delenv("WORKBENCH_DB_URL", raising=False)
        db.dispose_all()
        db.upgrade()
        try:
            confident = tiny_classifier(base / "a", minilm_dir, 0, init_range=0.5)
            variant = api.add_model(api.ModelRequest(str(confident), name="a")).variant
            other = tiny_classifier(base / "b", minilm_dir, 1)
            altered = api.add_model(api.ModelRequest(str(other), name="b")).variant
            weights = Path(altered.artifact_dir) / "model.safetensors"
            data = bytearray(weights.read_bytes())
            data[-1] ^= 0xFF  # one byte of one weight: same size, different hash
            weights.write_bytes(bytes(data))

            main = start_server(home, "main", variant.id, "--max-batch", "16", "--max-wait-ms", "20",
                                "--cache-size", "64", env={"WORKBENCH_SERVING_API_KEYS": ",".join(KEYS)})
            servers.append(main)
            overloaded = start_server(home, "overloaded", variant.id, "--max-batch", "1", "--max-queue", "4",
                                      "--timeout-s", "1")
            servers.append(overloaded)
            tampered = start_server(home, "tampered", altered.id)
            servers.append(tampered)
            predictor = load_predictor(variant)  # meanwhile: the reference the answers must equal
            for server in (main, overloaded):
                wait_until_serving(server.proc, f"{server.url}/ready", server.log, "the server to be ready")
            wait_until_serving(tampered.proc, f"{tampered.url}/health", tampered.log, "the server to live")
            yield Served(variant, predictor, main, overloaded, tampered)
        finally:
            for server in servers:
                server.stop()
            db.dispose_all()


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def metric_samples(url: str) -> Samples:
    """Every sample of /metrics, parsed by prometheus-client's own parser: (name, sorted labels) -> value."""
    text = httpx.get(f"{url}/metrics").text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def sample(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((f"workbench_serving_{name}", tuple(sorted(labels.items()))), 0.0)


def grew(before: Samples, after: Samples, name: str, **labels: str) -> float:
    """How much a counter (or a histogram's count, sum or bucket) grew between two scrapes."""
    return sample(after, name, **labels) - sample(before, name, **labels)


def post_concurrently(url: str, bodies: list[dict], headers: dict | None = None) -> list[httpx.Response]:
    """All bodies POSTed to /v1/predict at once, each on its own connection."""

    async def run() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=len(bodies), max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=60) as client:
            return await asyncio.gather(*(client.post("/v1/predict", json=body) for body in bodies))

    return asyncio.run(run())


def assert_matches_the_predictor(served: Served, texts: list[str], predictions: list[dict]) -> None:
    predictor = served.predictor
    expected = predictor.predict(texts)
    assert len(predictions) == len(texts)
    for text, got, probs in zip(texts, predictions, expected, strict=True):
        assert list(got["probabilities"]) == predictor.labels
        np.testing.assert_allclose(list(got["probabilities"].values()), probs, atol=1e-5)
        assert got["label"] == predictor.labels[int(probs.argmax())]
        assert got["confidence"] == pytest.approx(float(probs.max()), abs=1e-5)
        tokens = predictor.token_counts([text.strip()])[0]
        assert got["tokens"] == tokens and got["truncated"] == (tokens > predictor.max_length)


# ---- answers --------------------------------------------------------------------------------------------


@pytest.mark.slow  # a server that loaded a model
def test_answers_equal_the_predictors_and_report_truncation(served):
    texts = [t.strip() for t in TEXTS]
    reply = httpx.post(f"{served.main.url}/v1/predict", json={"texts": texts}, headers=AUTH)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["variant_id"] == served.variant.id and body["latency_ms"] > 0
    assert_matches_the_predictor(served, texts, body["predictions"])
    assert body["predictions"][-1]["truncated"] and body["predictions"][-1]["tokens"] == 302

    one = httpx.post(f"{served.main.url}/v1/predict", json={"text": f"  {TEXTS[0]}\n"}, headers=AUTH).json()
    assert_matches_the_predictor(served, [TEXTS[0]], one["predictions"])


@pytest.mark.slow  # a server that loaded a model
def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(served):
    texts = [f"{TEXTS[i % 4]} number {i}" for i in range(32)]
    before = metric_samples(served.main.url)
    replies = post_concurrently(served.main.url, [{"text": t} for t in texts], AUTH)
    assert [r.status_code for r in replies] == [200] * 32
    assert_matches_the_predictor(served, texts, [r.json()["predictions"][0] for r in replies])

    after = metric_samples(served.main.url)
    batches = grew(before, after, "batch_size_count")
    singles = grew(before, after, "batch_size_bucket", le="1.0")
    batched_texts = grew(before, after, "batch_size_sum")
    assert batched_texts == 32  # every text ran once, none twice (the texts are all new to the cache)
    assert singles < batches, "no batch held more than one text"
    assert batches < 32


@pytest.mark.slow  # a server that loaded a model
def test_the_prediction_cache_answers_a_repeated_text_and_counts_it(served):
    text = "a text asked twice for the cache"
    before = metric_samples(served.main.url)
    first, second = (httpx.post(f"{served.main.url}/v1/predict", json={"text": text}, headers=AUTH)
                     for _ in range(2))
    assert first.json()["predictions"] == second.json()["predictions"]
    after = metric_samples(served.main.url)
    assert grew(before, after, "cache_misses_total") == 1 and grew(before, after, "cache_hits_total") == 1


# ---- backpressure ---------------------------------------------------------------------------------------


@pytest.mark.slow  # a server that loaded a model
def test_overload_is_refused_with_429_and_every_accepted_request_is_answered(served):
    url = served.overloaded.url
    before = metric_samples(url)
    bodies = [{"texts": [f"{TEXTS[i % 4]} {i}-{j}" for j in range(4)]} for i in range(64)]
    replies = post_concurrently(url, bodies)
    statuses = [r.status_code for r in replies]
    assert set(statuses) <= {200, 429}, [r.text for r in replies if r.status_code not in (200, 429)]
    accepted = [r for r in replies if r.status_code == 200]
    refused = [r for r in replies if r.status_code == 429]
    assert accepted and refused
    for reply, body in zip(replies, bodies, strict=True):
        if reply.status_code == 200:  # nothing lost: the whole request, in order
            assert len(reply.json()["predictions"]) == 4
            assert_matches_the_predictor(served, body["texts"], reply.json()["predictions"])
    assert int(refused[0].headers["Retry-After"]) >= 1
    detail = refused[0].json()["detail"]
    assert "the server is at capacity" in detail and "--max-queue" in detail

    after = metric_samples(url)
    assert grew(before, after, "requests_total", route="/v1/predict", status="200") == len(accepted)
    assert grew(before, after, "requests_total", route="/v1/predict", status="429") == len(refused)
    # every accepted text ran exactly once: refused requests put nothing on the queue
    texts_run = grew(before, after, "batch_size_sum")
    assert texts_run == 4 * len(accepted)
    assert sample(after, "queue_depth") == 0


@pytest.mark.slow  # a server that loaded a model
def test_a_request_not_answered_in_time_gets_503_with_the_reason_and_the_server_goes_on(served):
    url = served.overloaded.url
    # 2000 texts of ~100 tokens in batches of 1: seconds of work
    texts = [f"{'a rather long sentence about the weather ' * 12} {i}" for i in range(2000)]
    reply = httpx.post(f"{url}/v1/predict", json={"texts": texts}, timeout=60)
    assert reply.status_code == 503
    assert reply.json()["detail"] == "timed out after 1 s waiting for the model: the server is overloaded"
    # the abandoned texts are skipped, not run: the server answers the next request at once
    quick = httpx.post(f"{url}/v1/predict", json={"text": TEXTS[0]}, timeout=60)
    assert quick.status_code == 200 and quick.json()["latency_ms"] < 1000
    samples = metric_samples(url)
    assert sample(samples, "errors_total", reason="timeout", route="/v1/predict") == 1
    assert sample(samples, "queue_depth") == 0


# ---- refusals -------------------------------------------------------------------------------------------


@pytest.mark.slow  # a server that loaded a model
@pytest.mark.parametrize("body, message", [
    ({"text": ""}, "the text is empty"),
    ({"text": "   "}, "the text is empty"),
    ({"text": 42}, "a text must be a string, not a number"),
    ({"texts": "one string"}, "texts must be a list of strings, not a string"),
    ({"texts": ["fine", None]}, "text 2: a text must be a string, not null"),
    ({"texts": ["fine", ""]}, "text 2: the text is empty"),
    ({"texts": []}, '"texts" is an empty list'),
    ({"text": "x" * 20_001}, "the text is 20,001 characters; the limit is 20,000 (WORKBENCH_MAX_TEXT_CHARS)"),
    ({"texts": ["x"] * 2001}, "2,001 texts; the limit is 2,000 per batch (WORKBENCH_MAX_BATCH_LINES)"),
    ({"text": "a", "texts": ["b"]}, "not both"),
    ({}, 'the body needs "text"'),
    ({"sentence": "hello"}, "unknown field 'sentence'"),
    ([1, 2], "the body is an array"),
])
def test_bad_input_is_refused_with_422_and_one_clear_line(served, body, message):
    reply = httpx.post(f"{served.main.url}/v1/predict", json=body, headers=AUTH)
    assert reply.status_code == 422
    detail = reply.json()["detail"]
    assert isinstance(detail, str) and message in detail


@pytest.mark.slow  # a server that loaded a model
def test_a_body_that_is_not_json_is_refused_with_422(served):
    for content, headers in (("not json", {"Content-Type": "application/json"}), ('{"text": "hi"}', {})):
        reply = httpx.post(f"{served.main.url}/v1/predict", content=content, headers={**AUTH, **headers})
        assert reply.status_code == 422 and "JSON" in reply.json()["detail"]


@pytest.mark.slow  # a server that loaded a model
def test_api_keys_are_required_except_for_probes_and_metrics(served):
    url = served.main.url
    missing = httpx.post(f"{url}/v1/predict", json={"text": "hi"})
    wrong = httpx.post(f"{url}/v1/predict", json={"text": "hi"}, headers={"Authorization": "Bearer nope"})
    not_bearer = httpx.post(f"{url}/v1/predict", json={"text": "hi"},
                            headers={"Authorization": f"Basic {KEYS[0]}"})
    for reply in (missing, wrong, not_bearer):
        assert reply.status_code == 401 and reply.headers["WWW-Authenticate"] == "Bearer"
        assert "Authorization: Bearer" in reply.json()["detail"]
    assert httpx.get(f"{url}/v1/model").status_code == 401
    for key in KEYS:
        assert httpx.post(f"{url}/v1/predict", json={"text": "hi"},
                          headers={"Authorization": f"Bearer {key}"}).status_code == 200
    for path in ("/health", "/ready", "/metrics"):
        assert httpx.get(f"{url}{path}").status_code == 200
    assert ("--api-key" not in " ".join(served.main.proc.args)
            and not any(key in " ".join(served.main.proc.args) for key in KEYS))
    assert sample(metric_samples(url), "errors_total", reason="unauthorized", route="/v1/predict") >= 3


def test_the_file_check_names_missing_altered_and_added_files(tmp_path):
    from jobs.serving.app import ServedVariant, verify_files
    from storage.files import manifest, manifest_sha256

    directory = tmp_path / "variant"
    directory.mkdir()
    (directory / "model.onnx").write_bytes(b"weights")
    (directory / "config.json").write_text("{}")
    entries = manifest(directory)
    variant = ServedVariant(1, "v", "onnxruntime", "fp32", str(directory), manifest_sha256(entries), entries)
    assert verify_files(variant) == []

    (directory / "model.onnx").write_bytes(b"weighty")  # the same size, other bytes
    (directory / "config.json").unlink()
    (directory / "added_tokens.json").write_text("{}")
    assert verify_files(variant) == [
        "config.json: missing", "model.onnx: sha256 differs from the stored hash",
        "added_tokens.json: not one of the variant's stored files",
    ]
    (directory / "model.onnx").write_bytes(b"weights, longer")
    assert "model.onnx: sha256 differs from the stored hash (the file is 15 bytes, the stored one 7)" in (
        verify_files(variant))


def test_an_unknown_variant_or_a_bad_flag_exits_2_with_the_reason(home):
    def serve(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "jobs.serving.server", "--port", str(free_port()), *args]
        return subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=120)

    unknown = serve("--variant-id", "999")
    assert unknown.returncode == 2 and "error: no variant '999'" in unknown.stderr
    bad = serve("--variant-id", "1", "--max-batch", "0")
    assert bad.returncode == 2 and "--max-batch must be at least 1, not 0" in bad.stderr


# ---- readiness, metadata, metrics -----------------------------------------------------------------------


@pytest.mark.slow  # a server that loaded a model
def test_a_tampered_model_file_keeps_the_server_not_ready_with_the_reason(served):
    url = served.tampered.url

    def verified():
        reply = httpx.get(f"{url}/ready")
        return reply if "verifying" not in reply.json().get("reason", "") else None

    reply = wait_for(verified, timeout=60, what="the file check to finish")
    assert reply.status_code == 503
    assert reply.json()["reason"] == "model.safetensors: sha256 differs from the stored hash"
    assert httpx.get(f"{url}/health").status_code == 200
    refused = httpx.post(f"{url}/v1/predict", json={"text": "hi"})
    assert refused.status_code == 503 and "model.safetensors: sha256 differs" in refused.json()["detail"]
    model = httpx.get(f"{url}/v1/model").json()
    assert model["ready"] is False and model["labels"] is None  # never loaded from altered files


@pytest.mark.slow  # a server that loaded a model
def test_the_model_route_describes_the_variant(served):
    info = httpx.get(f"{served.main.url}/v1/model", headers=AUTH).json()
    variant = served.variant
    assert info["variant_id"] == variant.id and info["name"] == variant.name and info["model_name"] == "a"
    assert info["runtime"] == "pytorch" and info["precision"] == variant.precision
    assert info["sha256"] == variant.sha256 and info["files"] == variant.files
    assert info["labels"] == served.predictor.labels and info["max_length"] == 128
    assert info["parent_id"] is None and info["lineage"] == [variant.id]
    assert info["task"] == "text-classification"
    assert info["ready"] is True
    openapi = httpx.get(f"{served.main.url}/openapi.json", headers=AUTH).json()
    assert {"/v1/predict", "/v1/model", "/health", "/ready", "/metrics"} <= set(openapi["paths"])
    assert httpx.get(f"{served.main.url}/docs", headers=AUTH).status_code == 200


@pytest.mark.slow  # a server that loaded a model
def test_metrics_parse_and_count_each_request_by_route_and_status(served):
    url = served.main.url
    before = metric_samples(url)
    for _ in range(3):
        httpx.post(f"{url}/v1/predict", json={"text": "counted"}, headers=AUTH)
    httpx.post(f"{url}/v1/predict", json={"text": ""}, headers=AUTH)
    httpx.get(f"{url}/health")
    after = metric_samples(url)
    assert grew(before, after, "requests_total", route="/v1/predict", status="200") == 3
    assert grew(before, after, "requests_total", route="/v1/predict", status="422") == 1
    assert grew(before, after, "requests_total", route="/health", status="200") == 1
    assert grew(before, after, "request_latency_seconds_count", route="/v1/predict") == 4
    assert sample(after, "queue_time_seconds_count") > 0 and sample(after, "ready") == 1
    assert sample(after, "variant_info", variant_id=str(served.variant.id)) == 1
