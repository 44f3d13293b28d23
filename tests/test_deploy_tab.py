"""The Deploy tab's core helper: a model server's `/metrics` read back (prometheus-client's parser), quantiles
estimated from cumulative histogram buckets as Prometheus does, requests/s between two scrapes, and a server that
does not answer reported in one line."""

from __future__ import annotations

import math

import pytest

from jobs.serving.metrics_reader import MetricsUnavailable, parse, quantile, read, requests_per_s
from tests.conftest import free_port


def direct_quantile(bounds: list[float], counts_per_bucket: list[int], q: float) -> float:
    """The same estimate written out the long way: walk the buckets (non-cumulative counts) to the one holding
    rank q·n, then interpolate linearly from its lower bound (0 for the first) to its upper bound."""
    n = sum(counts_per_bucket)
    rank = q * n
    below, lower = 0, 0.0
    for upper, count in zip(bounds, counts_per_bucket, strict=True):
        if count and below + count >= rank:
            if math.isinf(upper):
                return lower
            return lower + (upper - lower) * (rank - below) / count
        below, lower = below + count, upper
    raise AssertionError("rank beyond the last bucket")


@pytest.mark.parametrize("counts", [[2, 4, 4, 0], [0, 0, 7, 3], [5, 0, 0, 0], [1, 1, 1, 1], [0, 3, 0, 2]])
@pytest.mark.parametrize("q", [0.0, 0.25, 0.5, 0.95, 0.99, 1.0])
def test_quantiles_from_known_buckets_equal_a_direct_computation(counts, q):
    bounds = [1.0, 2.0, 4.0, math.inf]
    cumulative = [(upper, sum(counts[: i + 1])) for i, upper in enumerate(bounds)]
    assert quantile(cumulative, q) == pytest.approx(direct_quantile(bounds, counts, q))


def test_quantiles_by_hand_and_the_edges():
    buckets = [(1.0, 2), (2.0, 6), (4.0, 10), (math.inf, 10)]
    assert quantile(buckets, 0.5) == pytest.approx(1.75)  # rank 5: 3 of the 4 in (1, 2]
    assert quantile(buckets, 0.95) == pytest.approx(3.75)  # rank 9.5: 3.5 of the 4 in (2, 4]
    assert quantile([(1.0, 2), (math.inf, 4)], 0.95) == 1.0  # in the +Inf bucket: the largest finite bound
    assert quantile([(1.0, 0), (math.inf, 0)], 0.5) is None  # nothing observed yet
    with pytest.raises(ValueError):
        quantile(buckets, 1.5)


def test_a_servers_metrics_parse_into_counts_histograms_and_rates():
    from jobs.serving.metrics import ServingMetrics

    metrics = ServingMetrics(variant_id=3)
    latencies = [0.0015, 0.003, 0.004, 0.008, 0.015, 0.03, 0.03, 0.07, 0.3, 0.7]
    for seconds in latencies:
        metrics.observe_request("/v1/predict", 200, seconds)
    metrics.observe_request("/v1/predict", 429, 0.0005)
    metrics.observe_request("/health", 200, 0.0001)
    metrics.error("/v1/predict", "queue_full")
    for size in (1, 1, 3, 8, 16):
        metrics.batch_size.observe(size)
    metrics.cache_hits.inc(2)
    before = parse(metrics.render().decode(), taken_at=100.0)
    assert before.request_count() == 11 and before.request_count(None) == 12
    assert before.errors_by_reason() == {"queue_full": 1} and before.cache_hits == 2
    latency = before.latency["/v1/predict"]
    assert latency.count == 11 and latency.total == pytest.approx(sum(latencies) + 0.0005)
    # the parsed buckets give the same quantile as the direct computation on the buckets the server declared
    from jobs.serving.metrics import LATENCY_BUCKETS

    bounds = [*LATENCY_BUCKETS, math.inf]
    per_bucket = [sum(1 for s in [*latencies, 0.0005] if (i == 0 or s > bounds[i - 1]) and s <= b)
                  for i, b in enumerate(bounds)]
    for q in (0.5, 0.95):
        assert latency.quantile(q) == pytest.approx(direct_quantile(bounds, per_bucket, q))
    batches = dict(before.batch_size.per_bucket())
    assert batches["≤ 1"] == 2 and batches["3–4"] == 1 and batches["5–8"] == 1 and batches["9–16"] == 1
    assert batches["> 256"] == 0 and before.batch_size.mean == pytest.approx(29 / 5)
    in_ms = dict(latency.per_bucket(scale=1000))
    assert in_ms["≤ 1"] == 1 and in_ms["1–2"] == 1 and in_ms["20–50"] == 2 and in_ms["> 30000"] == 0

    for _ in range(6):
        metrics.observe_request("/v1/predict", 200, 0.01)
    after = parse(metrics.render().decode(), taken_at=103.0)
    assert requests_per_s(before, after) == pytest.approx(2.0)
    assert requests_per_s(None, after) is None
    assert requests_per_s(after, before) is None  # time ran backwards (or the server restarted): no rate


def test_a_server_that_does_not_answer_is_one_line_not_a_traceback():
    port = free_port()
    with pytest.raises(MetricsUnavailable, match=rf"127\.0\.0\.1:{port}/metrics does not answer") as caught:
        read(f"http://127.0.0.1:{port}/metrics", timeout_s=0.5)
    assert "\n" not in str(caught.value)
    with pytest.raises(MetricsUnavailable, match="not Prometheus text"):
        parse("this is { not prometheus")


def test_the_table_shows_status_with_reason_and_hides_a_crash_log_line_from_viewers(home):
    from storage import deployments as store
    from workbench.tabs import deploy

    assert "No deployments yet" in deploy.deployments_html()
    crashed = store.create_deployment(
        name="tiny@production", variant_id=7, variant_sha256="a" * 64, alias="tiny@production", host="127.0.0.1",
        port=8123, config={}, pid=None, status="crashed", log_path="/nowhere.log",
        reason="server process 9 exited with status 1; its log ends with: File \"/srv/secret/app.py\", line 3")
    html = deploy.deployments_html()
    assert f"data-deployment-id='{crashed.id}' data-status='crashed'" in html and "http://127.0.0.1:8123" in html
    assert "/srv/secret" in html and "#7 (tiny@production)" in html
    viewer = deploy.deployments_html(editor=False)
    assert "exited with status 1" in viewer and "/srv/secret" not in viewer
    text, chart, scrape = deploy.metrics_view(crashed, None)
    assert "is **crashed**" in text and chart is None and scrape is None
    assert deploy.metrics_view(None, None)[0] == deploy.NO_DEPLOYMENT
