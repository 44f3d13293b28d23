"""The Prometheus metrics of one model server, in a registry of its own (not prometheus-client's global
one), so two apps in one process never share counters and `/metrics` shows only what this server did.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

PREFIX = "workbench_serving"
# Request latency on a CPU spans a millisecond (a cache hit) to seconds (a full batch of long texts, loaded).
LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
CONTENT_TYPE = CONTENT_TYPE_LATEST

# Why a request was not answered with predictions; a label value each, so a dashboard tells load from misuse.
ERROR_REASONS = (
    "unauthorized", "invalid_input", "queue_full", "timeout", "not_ready", "model_error", "internal",
)


class ServingMetrics:
    """Counters and histograms the routes and the batcher update; `render()` is the `/metrics` body."""

    def __init__(self, variant_id: int):
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.requests = Counter(f"{PREFIX}_requests", "HTTP requests answered, by route and status code.",
                                ["route", "status"], registry=registry)
        self.errors = Counter(f"{PREFIX}_errors", "Requests not answered with predictions, by route and "
                              "reason.", ["route", "reason"], registry=registry)
        self.request_latency = Histogram(f"{PREFIX}_request_latency_seconds",
                                         "Time from a request's arrival to its answer, by route.", ["route"],
                                         buckets=LATENCY_BUCKETS, registry=registry)
        self.queue_time = Histogram(f"{PREFIX}_queue_time_seconds",
                                    "Time a prediction request waited in the queue before its batch started.",
                                    buckets=LATENCY_BUCKETS, registry=registry)
        self.batch_size = Histogram(f"{PREFIX}_batch_size", "Texts in each batch the model ran.",
                                    buckets=BATCH_SIZE_BUCKETS, registry=registry)
        self.batch_latency = Histogram(f"{PREFIX}_batch_latency_seconds",
                                       "Time the model took for one batch (tokenizing and the forward pass).",
                                       buckets=LATENCY_BUCKETS, registry=registry)
        self.predicted_texts = Counter(f"{PREFIX}_predicted_texts",
                                       "Texts answered, from the model or the cache.", registry=registry)
        self.cache_hits = Counter(f"{PREFIX}_cache_hits", "Texts answered from the prediction cache.",
                                  registry=registry)
        self.cache_misses = Counter(f"{PREFIX}_cache_misses", "Texts the prediction cache did not hold.",
                                    registry=registry)
        self.queue_depth = Gauge(f"{PREFIX}_queue_depth", "Texts waiting for a batch.", registry=registry)
        self.ready = Gauge(f"{PREFIX}_ready", "1 when the model is loaded and its files verified, else 0.",
                           registry=registry)
        self.variant = Gauge(f"{PREFIX}_variant_info", "The variant this server runs (always 1).",
                             ["variant_id"], registry=registry)
        self.variant.labels(variant_id=str(variant_id)).set(1)
        # per arm (stable, canary) and the variant it ran then: a promoted canary starts series of its own
        self.arm_requests = Counter(f"{PREFIX}_arm_requests", "Prediction requests routed to each arm, answered "
                                    "or not.", ["arm", "variant_id"], registry=registry)
        self.arm_errors = Counter(f"{PREFIX}_arm_errors", "Prediction requests an arm did not answer, by reason.",
                                  ["arm", "variant_id", "reason"], registry=registry)
        self.arm_latency = Histogram(f"{PREFIX}_arm_latency_seconds", "Time from a prediction request's arrival "
                                     "to its answer, by arm.", ["arm", "variant_id"], buckets=LATENCY_BUCKETS,
                                     registry=registry)
        self.canary_percent = Gauge(f"{PREFIX}_canary_percent", "The canary's share of users (0: no canary).",
                                    registry=registry)

    def arm_request(self, arm: str, variant_id: int, seconds: float, failure: str | None) -> None:
        labels = {"arm": arm, "variant_id": str(variant_id)}
        self.arm_requests.labels(**labels).inc()
        if failure is None:
            self.arm_latency.labels(**labels).observe(seconds)
        else:
            self.arm_errors.labels(**labels, reason=failure).inc()

    def serving(self, old_variant_id: int, new_variant_id: int) -> None:
        """The stable variant changed (a canary was promoted)."""
        self.variant.remove(str(old_variant_id))
        self.variant.labels(variant_id=str(new_variant_id)).set(1)

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route=route, status=str(status)).inc()
        self.request_latency.labels(route=route).observe(seconds)

    def error(self, route: str, reason: str) -> None:
        self.errors.labels(route=route, reason=reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
