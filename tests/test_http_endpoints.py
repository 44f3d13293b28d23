"""The playground's HTTP endpoints (workbench.http_endpoints), called with gradio_client against the served app (a
real process)."""

from __future__ import annotations

import json
import urllib.request

import pytest

from tests.support.browser import serve_app

pytestmark = [pytest.mark.slow]

TEXT = "what a wonderful day"


@pytest.fixture
def served(home, tmp_path, minilm_dir):
    from tests.support.tiny import add_two_tiny_variants

    a, b = add_two_tiny_variants(tmp_path, minilm_dir)
    with serve_app(home) as url:
        yield url, a, b


def test_gradio_client_calls_the_predictor_and_the_ab_endpoints(served):
    from gradio_client import Client

    from jobs import api

    url, a, b = served
    client = Client(url, verbose=False)
    got = client.predict(str(a.id), TEXT, api_name="/predict")
    expected = api.predict(a.id, TEXT)
    assert got["label"] == expected.label and got["tokens"] == expected.tokens and got["latency_ms"] > 0
    assert got["probabilities"] == pytest.approx(expected.probabilities, abs=1e-6)
    assert got["truncated"] is False

    with pytest.raises(Exception, match="the text is empty"):
        client.predict(str(a.id), "  ", api_name="/predict")
    with pytest.raises(Exception, match="no variant '999'"):
        client.predict("999", TEXT, api_name="/predict")

    batch = client.predict(str(a.id), [TEXT, "so bad"], api_name="/predict_batch")
    assert [p["label"] for p in batch["predictions"]] == [api.predict(a.id, t).label for t in (TEXT, "so bad")]

    side = client.predict(str(a.id), str(b.id), TEXT, api_name="/ab_compare")
    assert side["a"]["label"] == expected.label and side["agree"] == (side["a"]["label"] == side["b"]["label"])

    remote = client.predict(str(a.id), str(b.id), "toy", "train", 40, api_name="/ab_test_set")
    local = api.ab_test_set(a.id, b.id, "toy", "train", 40)
    assert remote["agreement"] == pytest.approx(local.agreement)
    assert remote["mcnemar"]["p_value"] == pytest.approx(local.mcnemar.p_value)
    assert remote["verdict"]["significant"] == local.verdict.significant and remote["verdict"]["alpha"] == 0.05
    assert remote["verdict"]["better"] == local.verdict.better
    assert len(remote["disagreements"]) == len(local.disagreements)

    # the documented one-round-trip route: a plain POST, answered in its response
    body = json.dumps({"data": [str(a.id), TEXT], "session_hash": "test"}).encode()
    request = urllib.request.Request(f"{url}gradio_api/run/predict", body, {"Content-Type": "application/json"})
    posted = json.loads(urllib.request.urlopen(request, timeout=60).read())["data"][0]
    assert posted["label"] == expected.label and posted["probabilities"] == pytest.approx(expected.probabilities, abs=1e-6)

    exp = api.start_experiment(a.id, b.id, 50, name="via-api")
    routed = client.predict("via-api", "carol", TEXT, api_name="/traffic_request")
    assert routed["request"]["user_id"] == "carol" and routed["request"]["arm"] in ("A", "B")
    marked = client.predict(routed["request"]["id"], True, api_name="/traffic_feedback")
    assert marked["feedback"] == "correct"
    stats = {s.arm: s for s in api.arm_report(exp.id)}
    assert stats[routed["request"]["arm"]].correct == 1
