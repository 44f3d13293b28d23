"""A canary beside the stable variant in one model server: who goes where, and when the canary is rolled back.

Routing: the `X-User-Id` header is hashed with the deployment's salt by the same consistent hashing as the
playground's traffic splits (`jobs.traffic_split`): the same user always gets the same arm, and raising the
canary's share only moves users from stable to canary. A request WITHOUT the header is routed by the hash of its
own request id (a fresh uuid4): the share holds on average over anonymous traffic, but one caller's requests are
not sticky. Routing such traffic to stable only would let a canary go unseen by every client that sends no id.

Automatic rollback: each arm keeps its recent requests (the last `window_s` seconds, at most WINDOW_MAX of them):
once both arms have `min_requests` there, the canary is rolled back when its error rate exceeds the stable's by
more than `error_rate_increase` (absolute: 0.05 is five points), or its p95 latency exceeds the stable's times
`p95_ratio`. Errors are requests the arm failed to answer (the model failed, timed out or the queue was full);
refused input never reaches an arm.

This module reads no database and knows nothing of HTTP: the app (`jobs.serving.app`) calls it.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import asdict, dataclass

from jobs.traffic_split import assign_arm

STABLE, CANARY = "stable", "canary"
ARMS = (STABLE, CANARY)
USER_HEADER = "x-user-id"
MAX_USER_ID_CHARS = 200
WINDOW_MAX = 5000  # requests kept per arm: bounds the memory and the cost of a check


@dataclass(frozen=True)
class RolloutPolicy:
    """The canary's share and the thresholds of its automatic rollback (None: that check is off)."""

    percent: float = 10.0
    error_rate_increase: float | None = None  # canary error rate minus stable's, 0..1
    p95_ratio: float | None = None  # canary p95 over stable's, above 1
    min_requests: int = 50  # per arm in the window before either check is made
    window_s: float = 300.0

    def __post_init__(self) -> None:
        def number(name: str, value, low: float, high: float, low_open: bool = False) -> None:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)
            if not ok or not (low < value if low_open else low <= value) or value > high:
                bound = f"above {low:g} and at most {high:g}" if low_open else f"from {low:g} to {high:g}"
                raise ValueError(f"{name} must be a number {bound}, not {value!r}")

        number("canary_percent", self.percent, 0, 100)
        if self.error_rate_increase is not None:
            number("rollback_error_rate_increase", self.error_rate_increase, 0, 1)
        if self.p95_ratio is not None:
            number("rollback_p95_ratio", self.p95_ratio, 1, 1000, low_open=True)
        if isinstance(self.min_requests, bool) or not isinstance(self.min_requests, int) or not \
                1 <= self.min_requests <= 1_000_000:
            raise ValueError(f"rollback_min_requests must be a whole number from 1 to 1000000, not "
                             f"{self.min_requests!r}")
        number("rollback_window_s", self.window_s, 1, 86_400)

    def thresholds(self) -> dict:
        """What the deployment record keeps (the share is a column of its own)."""
        return {k: v for k, v in asdict(self).items() if k != "percent"}

    def server_args(self) -> list[str]:
        args = ["--canary-percent", f"{self.percent:g}", "--rollback-min-requests", str(self.min_requests),
                "--rollback-window-s", f"{self.window_s:g}"]
        if self.error_rate_increase is not None:
            args += ["--rollback-error-rate-increase", f"{self.error_rate_increase:g}"]
        if self.p95_ratio is not None:
            args += ["--rollback-p95-ratio", f"{self.p95_ratio:g}"]
        return args


def check_user_id(raw: str | None) -> str | None:
    """The user id from the header (None without one); ValueError for one no one could mean."""
    if raw is None or not raw.strip():
        return None
    user = raw.strip()
    if len(user) > MAX_USER_ID_CHARS:
        raise ValueError(f"the X-User-Id header is {len(user)} characters; the limit is {MAX_USER_ID_CHARS}")
    return user


def pick_arm(user_id: str | None, request_id: str, percent: float, salt: str) -> tuple[str, str]:
    """(arm, what decided it: "user" or "request_id") for one request."""
    key, by = (user_id, "user") if user_id is not None else (request_id, "request_id")
    return (CANARY if assign_arm(key, percent, salt) == "B" else STABLE), by


class ArmWindow:
    """One arm's recent requests: (when, failed, seconds)."""

    def __init__(self, window_s: float):
        self.window_s = window_s
        self._items: deque[tuple[float, bool, float]] = deque(maxlen=WINDOW_MAX)

    def add(self, failed: bool, seconds: float, now: float | None = None) -> None:
        self._items.append((time.monotonic() if now is None else now, failed, seconds))

    def clear(self) -> None:
        self._items.clear()

    def summary(self, now: float | None = None) -> dict:
        """requests, errors, error_rate and p95 (seconds, of the answered requests) in the window."""
        now = time.monotonic() if now is None else now
        while self._items and self._items[0][0] < now - self.window_s:
            self._items.popleft()
        latencies = sorted(s for _, failed, s in self._items if not failed)
        requests = len(self._items)
        errors = requests - len(latencies)
        return {"requests": requests, "errors": errors, "error_rate": errors / requests if requests else None,
                "p95_s": nearest_rank(latencies, 0.95)}


def nearest_rank(ordered: list[float], q: float) -> float | None:
    """The nearest-rank quantile of sorted values (what "p95 of these requests" means; no interpolation)."""
    if not ordered:
        return None
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def rollback_reason(stable: dict, canary: dict, policy: RolloutPolicy) -> str | None:
    """Why the canary must go, with the figures, or None (a check is made only with enough requests in both arms)."""
    if min(stable["requests"], canary["requests"]) < policy.min_requests:
        return None
    window = f"over the last {policy.window_s:g} s ({canary['requests']} canary and {stable['requests']} stable " \
             f"requests)"
    if policy.error_rate_increase is not None:
        increase = canary["error_rate"] - stable["error_rate"]
        if increase > policy.error_rate_increase:
            return (f"canary error rate {canary['error_rate']:.1%} vs stable {stable['error_rate']:.1%} "
                    f"(+{increase * 100:.1f} points > the allowed +{policy.error_rate_increase * 100:g}) {window}")
    if policy.p95_ratio is not None and canary["p95_s"] is not None and stable["p95_s"]:
        ratio = canary["p95_s"] / stable["p95_s"]
        if ratio > policy.p95_ratio:
            return (f"canary p95 {canary['p95_s'] * 1000:.1f} ms vs stable {stable['p95_s'] * 1000:.1f} ms "
                    f"({ratio:.2f}x > the allowed {policy.p95_ratio:g}x) {window}")
    return None
