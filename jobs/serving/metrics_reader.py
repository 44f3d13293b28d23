"""Reading a model server's `/metrics` back: the Prometheus text parsed with prometheus-client's own parser into
plain numbers (requests by route and status, errors by reason, histograms as cumulative buckets), and quantiles
estimated from those buckets the way Prometheus' `histogram_quantile` does.

A histogram keeps counts per bucket, not the observations, so a quantile is an estimate: the bucket holding the
wanted rank is found and the value interpolated linearly inside it. It is exact to within that bucket's width.
"""

from __future__ import annotations

import math
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Callable, TypeVar

from prometheus_client.parser import text_string_to_metric_families

from storage.errors import WorkbenchError

K = TypeVar("K")  # what a histogram family is split by: its route, or its (arm, variant id)

PREFIX = "workbench_serving_"
PREDICT_ROUTE = "/v1/predict"
READ_TIMEOUT_S = 2.0  # a dashboard polls every few seconds: a server that does not answer quickly is reported
MAX_BYTES = 2_000_000  # far above what one server's metrics take; a larger body is not a model server's


class MetricsUnavailable(WorkbenchError):
    """The server's `/metrics` did not answer, or answered something that is not Prometheus text."""


@dataclass(frozen=True)
class Histogram:
    """`buckets`: (upper bound, observations at or below it), cumulative, ascending, the last one +Inf."""

    buckets: tuple[tuple[float, float], ...]
    count: float
    total: float  # the sum of the observations

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None

    def quantile(self, q: float) -> float | None:
        return quantile(self.buckets, q)

    def per_bucket(self, scale: float = 1) -> list[tuple[str, float]]:
        """(range label, observations in it) for each bucket, not cumulative: '≤ 1', '2', '3–4', … '> 256';
        the bounds multiplied by `scale` (1000: seconds as milliseconds)."""
        # whole-number bounds (batch sizes) count whole things: (2, 4] holds 3 and 4, labelled '3–4'
        whole = all(float(bound).is_integer() for bound, _ in self.buckets if not math.isinf(bound))
        out, below, lower = [], 0.0, None
        for bound, cumulative in self.buckets:
            upper = bound if math.isinf(bound) else round(bound * scale, 9)
            if math.isinf(upper):
                label = f"> {_number(lower)}" if lower is not None else "any"
            elif lower is None:
                label = f"≤ {_number(upper)}"
            else:
                label = _range_label(lower, upper) if whole else f"{_number(lower)}–{_number(upper)}"
            out.append((label, cumulative - below))
            below, lower = cumulative, upper
        return out


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _range_label(lower: float, upper: float) -> str:
    first = int(lower) + 1
    return str(first) if first == int(upper) else f"{first}–{int(upper)}"


@dataclass(frozen=True)
class ServerMetrics:
    """One scrape of a server's `/metrics`. `taken_at`: wall-clock seconds, for rates between two scrapes."""

    requests: dict[tuple[str, str], float] = field(default_factory=dict)  # (route, status) -> count
    errors: dict[tuple[str, str], float] = field(default_factory=dict)  # (route, reason) -> count
    latency: dict[str, Histogram] = field(default_factory=dict)  # route -> request latency (seconds)
    batch_size: Histogram | None = None
    queue_time: Histogram | None = None
    cache_hits: float = 0.0
    cache_misses: float = 0.0
    predicted_texts: float = 0.0
    queue_depth: float = 0.0
    taken_at: float = 0.0
    # per arm of a canary rollout, keyed by (arm, variant id as text): requests routed, errors, latency (seconds)
    arm_requests: dict[tuple[str, str], float] = field(default_factory=dict)
    arm_errors: dict[tuple[str, str], float] = field(default_factory=dict)
    arm_latency: dict[tuple[str, str], Histogram] = field(default_factory=dict)
    canary_percent: float = 0.0

    def request_count(self, route: str | None = PREDICT_ROUTE) -> float:
        """Requests answered on `route` (all routes when None), whatever their status."""
        return sum(n for (r, _status), n in self.requests.items() if route is None or r == route)

    def error_count(self) -> float:
        return sum(self.errors.values())

    @property
    def predict_latency(self) -> Histogram | None:
        return self.latency.get(PREDICT_ROUTE)

    def requests_per_s(self, before: ServerMetrics | None) -> float | None:
        """Predict requests per second since `before`, an earlier scrape of the same server (see requests_per_s)."""
        return requests_per_s(before, self)

    def errors_by_reason(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for (_route, reason), n in self.errors.items():
            out[reason] = out.get(reason, 0.0) + n
        return {reason: n for reason, n in sorted(out.items()) if n}


def quantile(buckets, q: float) -> float | None:
    """The `q` quantile (0 ≤ q ≤ 1) from cumulative histogram buckets [(upper bound, count ≤ it), …], as
    Prometheus' `histogram_quantile` estimates it: linear inside the bucket holding rank q·total, the first
    bucket starting at 0 (or at its bound, when that is not above 0); a rank in the +Inf bucket gives the largest
    finite bound. None without observations."""
    if not 0 <= q <= 1:
        raise ValueError(f"a quantile is from 0 to 1, not {q!r}")
    ordered = sorted((float(upper), float(count)) for upper, count in buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    total = ordered[-1][1]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for index, (upper, cumulative) in enumerate(ordered):
        if cumulative >= rank and cumulative > lower_count:
            if math.isinf(upper):
                return ordered[index - 1][0] if index > 0 else None
            if index == 0 and upper <= 0:
                return upper
            return lower_bound + (upper - lower_bound) * (rank - lower_count) / (cumulative - lower_count)
        lower_bound, lower_count = upper, cumulative
    return ordered[-1][0] if not math.isinf(ordered[-1][0]) else None


def parse(text: str, taken_at: float | None = None) -> ServerMetrics:
    """A server's `/metrics` body as numbers; families of other programs are ignored."""
    requests: dict[tuple[str, str], float] = {}
    errors: dict[tuple[str, str], float] = {}
    latency: dict[str, Histogram] = {}
    histograms: dict[str, Histogram] = {}
    arm_requests: dict[tuple[str, str], float] = {}
    arm_errors: dict[tuple[str, str], float] = {}
    arm_latency: dict[tuple[str, str], Histogram] = {}
    scalars: dict[str, float] = {}
    try:
        families = list(text_string_to_metric_families(text))
    except ValueError as exc:
        raise MetricsUnavailable(f"the metrics are not Prometheus text ({exc})") from None
    for family in families:
        if not family.name.startswith(PREFIX):
            continue
        name = family.name[len(PREFIX):]
        if family.type == "histogram" and name == "arm_latency_seconds":
            arm_latency.update(_histograms(family.samples, _by_arm))
            continue
        if family.type == "histogram":
            by_route = _histograms(family.samples, _by_route)
            if name == "request_latency_seconds":
                latency.update(by_route)
            elif "" in by_route:
                histograms[name] = by_route[""]
            continue
        for s in family.samples:
            if s.name.endswith("_created"):
                continue
            if name == "requests":
                key = (s.labels.get("route", ""), s.labels.get("status", ""))
                requests[key] = requests.get(key, 0.0) + s.value
            elif name == "errors":
                key = (s.labels.get("route", ""), s.labels.get("reason", ""))
                errors[key] = errors.get(key, 0.0) + s.value
            elif name in ("arm_requests", "arm_errors"):
                counts = arm_requests if name == "arm_requests" else arm_errors
                key = (s.labels.get("arm", ""), s.labels.get("variant_id", ""))
                counts[key] = counts.get(key, 0.0) + s.value
            elif not s.labels:
                scalars[name] = s.value
    return ServerMetrics(
        requests=requests, errors=errors, latency=latency, batch_size=histograms.get("batch_size"),
        queue_time=histograms.get("queue_time_seconds"), cache_hits=scalars.get("cache_hits", 0.0),
        cache_misses=scalars.get("cache_misses", 0.0), predicted_texts=scalars.get("predicted_texts", 0.0),
        queue_depth=scalars.get("queue_depth", 0.0), taken_at=time.time() if taken_at is None else taken_at,
        arm_requests=arm_requests, arm_errors=arm_errors, arm_latency=arm_latency,
        canary_percent=scalars.get("canary_percent", 0.0),
    )


def _histograms(samples, key: Callable[[dict[str, str]], K]) -> dict[K, Histogram]:
    """key(labels) -> Histogram, from a histogram family's _bucket, _count and _sum samples."""
    parts: dict[K, dict] = {}
    for s in samples:
        part = parts.setdefault(key(s.labels), {"buckets": [], "count": 0.0, "sum": 0.0})
        if s.name.endswith("_bucket"):
            part["buckets"].append((float(s.labels["le"]), s.value))
        elif s.name.endswith("_count"):
            part["count"] = s.value
        elif s.name.endswith("_sum"):
            part["sum"] = s.value
    return {k: Histogram(tuple(sorted(p["buckets"])), p["count"], p["sum"]) for k, p in parts.items()}


def _by_route(labels: dict[str, str]) -> str:
    return labels.get("route", "")  # '' for a histogram without routes


def _by_arm(labels: dict[str, str]) -> tuple[str, str]:
    return labels.get("arm", ""), labels.get("variant_id", "")


def read(url: str, timeout_s: float = READ_TIMEOUT_S) -> ServerMetrics:
    """Scrape `url` (a server's `/metrics`) over plain HTTP; MetricsUnavailable with the reason in one line."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - http to our own server
            body = response.read(MAX_BYTES + 1)
    except urllib.error.HTTPError as exc:
        raise MetricsUnavailable(f"{url} answered {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        why = getattr(reason, "strerror", None) or str(reason)
        raise MetricsUnavailable(f"{url} does not answer ({why})") from None
    except (TimeoutError, OSError) as exc:
        raise MetricsUnavailable(f"{url} did not answer within {timeout_s:g} s ({type(exc).__name__})") from None
    if len(body) > MAX_BYTES:
        raise MetricsUnavailable(f"{url} answered more than {MAX_BYTES:,} bytes: not a model server's metrics")
    return parse(body.decode("utf-8", errors="replace"))


def requests_per_s(before: ServerMetrics | None, after: ServerMetrics, route: str | None = PREDICT_ROUTE
                   ) -> float | None:
    """Requests per second between two scrapes of the same server; None without an earlier one (or if the
    server restarted meanwhile, its counters back at zero)."""
    if before is None:
        return None
    seconds = after.taken_at - before.taken_at
    grown = after.request_count(route) - before.request_count(route)
    if seconds <= 0 or grown < 0:
        return None
    return grown / seconds
