"""What the served app puts in front of Gradio's FastAPI app (`app_kwargs`, for `launch`): sign-in throttling, HTTP
statuses that say a playground call was the caller's mistake, and a 404 for an event index that does not exist.

Sign-in throttling: after a few wrong passwords an account, and the address they came from, are locked for a
while (longer each time), and every sign-in to them is refused until then, the right one too.

Gradio's `launch(auth=callable)` only sees the user name and password, not who sends them, so the count is kept
by an ASGI middleware in front of Gradio's `POST /login`: it reads the form's user name and the client address,
answers 429 (a one-line reason and `Retry-After`) while either is locked, and otherwise lets Gradio check the
password and counts its answer (400 wrong, 200 right). Sign-ins are checked one at a time, so a burst of parallel
guesses cannot all pass before the first failure is counted.

The client address is the one uvicorn reports: behind a proxy on this machine (Gradio's share tunnel is one) that
is the `X-Forwarded-For` address the proxy passes on. An attacker who can set that header rotates addresses, but
never escapes the per-account count.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import parse_qs

from storage import settings

FORGET_S = 900.0  # a key quiet for this long (after any lock ends) starts again from nothing
MAX_LOCK_S = 3600.0  # the doubling stops here
MAX_KEYS = 10_000  # records kept at most (guesses with random user names cannot fill the memory)
MAX_FORM_BYTES = 64 * 1024  # a sign-in form is a user name and a password
LOGIN_PATHS = ("/login", "/login/")


@dataclass
class _Record:
    failures: int = 0  # wrong passwords since the last lock ended (or since the start)
    locks: int = 0  # locks so far: the next lasts lockout * 2**locks
    locked_until: float = 0.0
    last: float = 0.0


class LoginThrottle:
    """Wrong-password counts per key ("user:NAME", "address:IP") and the locks they earn.

    `max_failures` wrong passwords lock a key for `lockout_s`; once a key has been locked, each further wrong
    password (until it is forgotten) locks it again for twice as long, up to an hour.
    """

    def __init__(self, max_failures: int, lockout_s: float, clock: Callable[[], float] = time.monotonic):
        self.max_failures = max(1, int(max_failures))
        self.lockout_s = max(0.0, float(lockout_s))
        self.clock = clock
        self.records: dict[str, _Record] = {}

    def _forget_old(self, now: float) -> None:
        stale = [k for k, r in self.records.items() if now - max(r.last, r.locked_until) > FORGET_S]
        for key in stale:
            del self.records[key]
        while len(self.records) >= MAX_KEYS:  # still full: drop the longest-quiet
            del self.records[min(self.records, key=lambda k: self.records[k].last)]

    def retry_after(self, keys: list[str]) -> float:
        """Seconds until every key is unlocked; 0 when none is locked."""
        now = self.clock()
        return max([0.0, *(r.locked_until - now for k in keys if (r := self.records.get(k)) is not None)])

    def failed(self, keys: list[str]) -> None:
        now = self.clock()
        self._forget_old(now)
        for key in keys:
            record = self.records.setdefault(key, _Record())
            if now - max(record.last, record.locked_until) > FORGET_S:
                record.failures, record.locks = 0, 0
            record.failures += 1
            record.last = now
            if record.failures >= self.max_failures or record.locks:
                record.locked_until = now + min(MAX_LOCK_S, self.lockout_s * 2 ** record.locks)
                record.locks += 1
                record.failures = 0

    def succeeded(self, key: str) -> None:
        """The right password for an account: its count starts again (its address keeps its own)."""
        self.records.pop(key, None)


def locked_message(retry_after: float) -> str:
    seconds = max(1, math.ceil(retry_after))
    return (f"too many failed sign-ins for this account or from this address: locked, try again in {seconds} s "
            "(each further failure doubles the wait)")


def _keys(username: str, client: str) -> list[str]:
    return [f"user:{username}", f"address:{client}"]


class LoginThrottleMiddleware:
    """ASGI middleware: throttles `POST /login` (see the module docstring); every other request passes through."""

    def __init__(self, app: Any, max_failures: int | None = None, lockout_s: float | None = None):
        self.app = app
        self.throttle = LoginThrottle(
            settings.get("WORKBENCH_LOGIN_MAX_FAILURES") if max_failures is None else max_failures,
            settings.get("WORKBENCH_LOGIN_LOCKOUT_S") if lockout_s is None else lockout_s,
        )
        self.lock: asyncio.Lock | None = None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].endswith(LOGIN_PATHS):
            await self.app(scope, receive, send)
            return
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > MAX_FORM_BYTES:
                await _answer(send, 413, "the sign-in form is too large")
                return
            if not message.get("more_body"):
                break
        username = (await _form_username(scope, body)).strip()
        client = (scope.get("client") or ("unknown", 0))[0]
        keys = _keys(username, client)
        if self.lock is None:
            self.lock = asyncio.Lock()
        async with self.lock:  # one sign-in at a time: a parallel burst is counted as it arrives
            wait = self.throttle.retry_after(keys)
            if wait > 0:
                await _answer(send, 429, locked_message(wait), {"retry-after": str(max(1, math.ceil(wait)))})
                return
            status: list[int] = []

            async def replay():
                return {"type": "http.request", "body": body, "more_body": False}

            async def watch(message):
                if message["type"] == "http.response.start":
                    status.append(message["status"])
                await send(message)

            await self.app(scope, replay, watch)
            if status and status[0] == 400:
                self.throttle.failed(keys)
            elif status and status[0] < 300:
                self.throttle.succeeded(keys[0])


async def _form_username(scope, body: bytes) -> str:
    """The `username` field of a urlencoded or multipart sign-in form ("" when there is none)."""
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
    content_type = headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        from starlette.requests import Request

        async def once():
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            form = await Request(scope, once).form(max_files=0, max_fields=10)
            value = form.get("username")
            return value if isinstance(value, str) else ""
        except Exception:  # noqa: BLE001 - a malformed form: Gradio refuses it; count it under no name
            return ""
    values = parse_qs(body.decode("utf-8", "replace")).get("username", [""])
    return values[0]


async def _answer(send, status: int, message: str, headers: dict[str, str] | None = None) -> None:
    payload = json.dumps({"detail": message, "error": message}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})


# ---- the playground API's user errors as 4xx ------------------------------------------------------------------

# `gr.Error` titles the playground API gives a caller's mistakes (see workbench.http_endpoints), and their status.
USER_ERROR_STATUS = {"Not found": 404, "Invalid input": 400, "Conflict": 409}
MAX_ERROR_BYTES = 64 * 1024


class UserErrorStatusMiddleware:
    """Gradio answers every failed `POST .../run/<api name>` with 500, a wrong variant id too; this turns the 500 of
    a `gr.Error` titled as a user error (USER_ERROR_STATUS) into its 4xx. The body (the one-line message) is kept."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or "/run/" not in scope["path"]:
            await self.app(scope, receive, send)
            return
        held: dict[str, Any] = {"start": None, "body": b""}  # a 500's start, held until its body is read

        async def watch(message):
            if message["type"] == "http.response.start" and message["status"] == 500:
                held["start"] = message
                return
            if held["start"] is None:
                await send(message)
                return
            held["body"] += message.get("body", b"")
            more = message.get("more_body", False)
            if more and len(held["body"]) <= MAX_ERROR_BYTES:
                return
            start = dict(held["start"])
            if not more:
                try:
                    title = json.loads(held["body"]).get("title")
                except (ValueError, AttributeError):
                    title = None
                start["status"] = USER_ERROR_STATUS.get(title, 500)
            await send(start)
            await send({"type": "http.response.body", "body": held["body"], "more_body": more})
            held["start"] = None  # the rest of a long body passes straight through

        await self.app(scope, receive, watch)


# ---- an event index that does not exist ----------------------------------------------------------------------


def unknown_event(request, exc: KeyError):
    """FastAPI exception handler: an event index that does not exist is the caller's mistake (404, one line),
    not a server fault with a traceback in the log; any other KeyError stays a server error."""
    from fastapi.responses import JSONResponse

    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None or tb.tb_frame.f_code.co_name != "get_fn":
        raise exc
    return JSONResponse({"detail": f"no event with index {exc.args[0] if exc.args else '?'}"}, status_code=404)


def app_kwargs() -> dict[str, Any]:
    """For `launch(app_kwargs=...)`: the sign-in throttle, the user-error statuses and the unknown-event answer."""
    from starlette.middleware import Middleware

    return {"middleware": [Middleware(LoginThrottleMiddleware), Middleware(UserErrorStatusMiddleware)],
            "exception_handlers": {KeyError: unknown_event}}
