"""A bounded, closed-loop HTTP load generator for a model server on this machine (loopback only).

One level runs a fixed number of senders; each sends a request and waits for its answer before sending the next,
until `requests` have been sent or `max_seconds` have passed (requests in flight then finish, each within the
client's `request_timeout_s`). So a level is bounded in count and time, whatever the server does. Latency is
measured by the client (what a caller sees: the HTTP path, the queue, the batch), only for answers that came back
OK; every other outcome is counted by its status ("429", "503", ...), "timeout" or "connection".

Written on aiohttp rather than locust: locust's library mode runs on gevent (it monkey-patches the process) and
its figures come as its own aggregated stats; a closed loop of asyncio senders is a few lines, keeps the raw
latencies for exact percentiles, and is what benchmarks/serving_throughput.py measures with.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from dataclasses import dataclass, field
from typing import Any, Sequence
from urllib.parse import urlsplit

import numpy as np

from storage.errors import InvalidInput

LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or `localhost`: a load test never leaves this machine."""
    host = host.strip().strip("[]")
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_loopback(url: str) -> None:
    host = urlsplit(url).hostname or ""
    if not is_loopback(host):
        raise InvalidInput(f"a load test only targets this machine (127.0.0.1, ::1 or localhost), not {host or url!r}")


@dataclass(frozen=True)
class Level:
    """What one concurrency level sent and got back."""

    concurrency: int
    sent: int
    ok: int
    errors: dict[str, int]
    seconds: float  # from the first request to the last answer
    stopped_by: str  # "requests" (all sent) | "time cap"
    latencies_ms: list[float] = field(repr=False)

    def summary(self, texts_per_request: int) -> dict[str, Any]:
        """Throughput of OK answers and client-side percentiles (None when nothing came back OK)."""
        seconds = max(self.seconds, 1e-9)
        figures: dict[str, Any] = {"p50_ms": None, "p95_ms": None, "p99_ms": None, "mean_ms": None}
        if self.latencies_ms:
            a = np.asarray(self.latencies_ms, dtype=np.float64)
            p50, p95, p99 = np.percentile(a, [50, 95, 99])  # monotone in q: p50 <= p95 <= p99
            figures = {"p50_ms": float(p50), "p95_ms": float(p95), "p99_ms": float(p99), "mean_ms": float(a.mean())}
        return {"concurrency": self.concurrency, "sent": self.sent, "ok": self.ok, "errors": dict(self.errors),
                "seconds": round(self.seconds, 4), "stopped_by": self.stopped_by,
                "requests_per_s": self.ok / seconds, "texts_per_s": self.ok * texts_per_request / seconds, **figures}


def run_level(url: str, texts: Sequence[str], *, concurrency: int, requests: int, max_seconds: float,
              texts_per_request: int = 1, api_key: str | None = None, request_timeout_s: float = 30.0) -> Level:
    """`concurrency` senders against `url` (`POST /v1/predict`), at most `requests` requests and `max_seconds`."""
    require_loopback(url)
    if not texts:
        raise InvalidInput("a load test needs at least one text to send")
    if concurrency < 1 or requests < 1 or max_seconds <= 0 or texts_per_request < 1 or request_timeout_s <= 0:
        raise InvalidInput("concurrency, requests, max_seconds, texts_per_request and the timeout must be positive")
    return asyncio.run(_level(url, list(texts), concurrency, requests, max_seconds, texts_per_request, api_key,
                              request_timeout_s))


def _body(texts: list[str], start: int, per_request: int) -> dict[str, Any]:
    if per_request == 1:
        return {"text": texts[start % len(texts)]}
    return {"texts": [texts[(start + i) % len(texts)] for i in range(per_request)]}


async def _level(url: str, texts: list[str], concurrency: int, requests: int, max_seconds: float,
                 per_request: int, api_key: str | None, request_timeout_s: float) -> Level:
    import aiohttp

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    latencies: list[float] = []
    errors: dict[str, int] = {}
    sent = 0
    timed_out = False
    started = time.perf_counter()
    deadline = started + max_seconds

    def error(reason: str) -> None:
        errors[reason] = errors.get(reason, 0) + 1

    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=request_timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, headers=headers) as session:

        async def sender() -> None:
            nonlocal sent, timed_out
            while sent < requests:
                if time.perf_counter() >= deadline:
                    timed_out = True
                    return
                body = _body(texts, sent * per_request, per_request)
                sent += 1  # one event loop: no other sender runs between the check and this
                began = time.perf_counter()
                try:
                    async with session.post(url, json=body) as reply:
                        await reply.read()
                        status = reply.status
                except asyncio.TimeoutError:
                    error("timeout")
                    continue
                except aiohttp.ClientError:
                    error("connection")
                    await asyncio.sleep(0.01)  # a refused connection answers at once: do not spin on it
                    continue
                if status == 200:
                    latencies.append((time.perf_counter() - began) * 1000.0)
                else:
                    error(str(status))

        await asyncio.gather(*(sender() for _ in range(concurrency)))
    seconds = time.perf_counter() - started
    return Level(concurrency, sent, len(latencies), errors, seconds, "time cap" if timed_out else "requests",
                 latencies)
