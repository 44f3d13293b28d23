"""`create_app`: the model server's routes, its readiness, API keys and the prediction cache.

The app answers `/health` from its first moment; meanwhile it checks every file of the variant against the
sha256 stored for it, then loads the predictor, warms it up and starts the batcher. Only then is `/ready` 200:
a missing or altered file keeps it 503 with the reason, and the model is never loaded from such files.

Inputs are checked like the playground's (`jobs/playground/predict.py`): empty, too long
(WORKBENCH_MAX_TEXT_CHARS), too many texts (WORKBENCH_MAX_BATCH_LINES), wrong types; each refusal is a 422
with one line in `detail`. Texts longer than the model takes are truncated, and each prediction says so.

This module reads no database: `server.py` describes the stored variant as a `ServedVariant`, so anything that
can describe one (an exported bundle) can serve it the same way.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from jobs.playground.inputs import check_batch, check_text
from jobs.runtimes import Predictor, load_predictor
from jobs.runtimes.base import timed_probabilities
from jobs.serving.batcher import BatcherStats, DynamicBatcher, QueueFull
from jobs.serving.canary import (
    CANARY,
    STABLE,
    USER_HEADER,
    ArmWindow,
    RolloutPolicy,
    check_user_id,
    pick_arm,
    rollback_reason,
)
from jobs.serving.metrics import CONTENT_TYPE, ServingMetrics
from storage.errors import InvalidInput
from storage.files import hash_file

log = logging.getLogger("jobs.serving")

PREDICT = "/v1/predict"
FEEDBACK, ROLLOUT = "/v1/feedback", "/v1/rollout"
# the workbench's calls to change a running rollout: authorised by the deployment's admin token, not an API key
ADMIN_PERCENT, ADMIN_PROMOTE, ADMIN_ROLLBACK = "/v1/admin/percent", "/v1/admin/promote", "/v1/admin/rollback"
ADMIN_ROLLOUT = "/v1/admin/rollout"
ADMIN_PATHS = frozenset({ADMIN_PERCENT, ADMIN_PROMOTE, ADMIN_ROLLBACK, ADMIN_ROLLOUT})
ADMIN_HEADER = "x-admin-token"
OPEN_PATHS = frozenset({"/health", "/ready", "/metrics"}) | ADMIN_PATHS  # probes and scrapers carry no API key
KNOWN_ROUTES = frozenset({PREDICT, "/v1/model", "/health", "/ready", "/metrics", "/docs", "/redoc",
                          "/openapi.json", "/docs/oauth2-redirect", FEEDBACK, ROLLOUT}) | ADMIN_PATHS
REMEMBERED_REQUESTS = 100_000  # request ids a server can take feedback on (the oldest are forgotten first)
ROLLBACK_CHECK_S = 0.2  # how often, at most, the canary's window is compared with the stable's
ARM_FAILURES = frozenset({"model_error", "timeout", "queue_full"})  # what counts against an arm's error rate
WARM_UP_TEXT = "warm up"
SHOWN_PROBLEMS = 5  # file problems named in /ready's reason; the rest are counted
# (texts, results, *, variant_id, arm=None) -> None: sees each answered request (drift sampling); returns at once
PredictionSink = Callable[..., None]


@dataclass(frozen=True)
class ServingConfig:
    max_batch: int = 16
    max_wait_ms: float = 5.0
    max_queue: int = 256
    timeout_s: float = 10.0
    cache_size: int = 0  # predictions kept in memory, keyed by the text's sha256; 0: no cache
    device: str = "cpu"
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise ValueError(f"--max-batch must be at least 1, not {self.max_batch}")
        if self.max_wait_ms < 0:
            raise ValueError(f"--max-wait-ms must be 0 or more, not {self.max_wait_ms}")
        if self.max_queue < 1:
            raise ValueError(f"--max-queue must be at least 1, not {self.max_queue}")
        if self.timeout_s <= 0:
            raise ValueError(f"--timeout-s must be more than 0, not {self.timeout_s}")
        if self.cache_size < 0:
            raise ValueError(f"--cache-size must be 0 or more, not {self.cache_size}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"--threads must be at least 1, not {self.threads}")


@dataclass(frozen=True)
class ServedVariant:
    """What the server knows of the variant it serves (`load_predictor` reads runtime and artifact_dir)."""

    id: int
    name: str
    runtime: str
    precision: str
    artifact_dir: str
    sha256: str
    files: list[dict[str, Any]]  # [{"path", "size", "sha256"}], as stored when the variant was made
    parent_id: int | None = None
    lineage: list[int] = field(default_factory=list)  # variant ids from the original model's down to this one
    model_id: int | None = None
    model_name: str = ""
    task: str = "text-classification"
    recipe: dict[str, Any] = field(default_factory=dict)


# ---- readiness -------------------------------------------------------------------------------------------


def verify_files(variant: ServedVariant) -> list[str]:
    """What differs between the variant's directory and its stored file list (missing, altered or added
    files); empty when every file matches its stored sha256."""
    root = Path(variant.artifact_dir)
    if not root.is_dir():
        return [f"the variant's directory {root} is missing"]
    if not variant.files:
        return ["the variant has no stored file hashes to verify its files against"]
    problems = []
    resolved_root = root.resolve()
    for entry in variant.files:
        name = entry["path"]
        path = root / name
        if resolved_root not in path.resolve().parents:
            problems.append(f"{name}: outside the variant's directory")
        elif not path.is_file():
            problems.append(f"{name}: missing")
        elif path.stat().st_size != entry["size"]:
            problems.append(f"{name}: sha256 differs from the stored hash (the file is "
                            f"{path.stat().st_size:,} bytes, the stored one {entry['size']:,})")
        elif hash_file(path) != entry["sha256"]:
            problems.append(f"{name}: sha256 differs from the stored hash")
    stored = {entry["path"] for entry in variant.files}
    # a file added beside the stored ones could be read by the loader (a tokenizer file, say) just the same
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        name = path.relative_to(root).as_posix()
        if name not in stored:
            problems.append(f"{name}: not one of the variant's stored files")
    return problems


class RolloutRecorder(Protocol):
    """Where a server writes what its rollout needs kept (server.py: the deployment's rows in SQLite)."""

    def feedback(self, request_id: str, arm: str, variant_id: int, label: str | None, correct: bool) -> bool:
        """Store a verdict; False when it replaced an earlier one for the same request."""

    def auto_rollback(self, message: str, details: dict[str, Any]) -> None:
        """Record that the server rolled its canary back, and clear the canary from the deployment."""


@dataclass(eq=False)
class Arm:
    """One variant the server runs, with its own predictor and batcher: the stable one, or a canary beside it."""

    name: str  # canary.STABLE or canary.CANARY
    variant: ServedVariant
    ready: bool = False
    reason: str = "starting"
    predictor: Predictor | None = None
    batcher: DynamicBatcher | None = None
    in_flight: int = 0  # requests routed here and not answered yet: a retired arm is stopped once it is 0
    window: ArmWindow | None = None


class ServerState:
    """The arms the server runs. `ready`, `reason`, `predictor`, `batcher` and `variant` are the stable arm's (what
    the server is about before any canary); `canary` is None without one (or once it is promoted or rolled back)."""

    def __init__(self, variant: ServedVariant, canary: ServedVariant | None = None,
                 policy: RolloutPolicy | None = None):
        self.policy = policy or RolloutPolicy(percent=0.0)
        self.stable = Arm(STABLE, variant, window=ArmWindow(self.policy.window_s))
        self.canary = None if canary is None else Arm(CANARY, canary, window=ArmWindow(self.policy.window_s))
        self.percent = self.policy.percent if canary is not None else 0.0
        self.with_arms = canary is not None  # answers name their arm for drift samples once arms were asked for
        self.last_check = 0.0
        self.last_event = ""  # the last change of the rollout this server made or was told to make
        self.canary_pending = canary is not None  # /ready waits for the canary too (loaded, or refused with why)

    variant = property(lambda self: self.stable.variant)
    predictor = property(lambda self: self.stable.predictor)
    batcher = property(lambda self: self.stable.batcher)

    @property
    def ready(self) -> bool:
        return self.stable.ready

    @ready.setter
    def ready(self, value: bool) -> None:
        self.stable.ready = value

    @property
    def reason(self) -> str:
        return self.stable.reason

    @reason.setter
    def reason(self, value: str) -> None:
        self.stable.reason = value

    def route(self, user_id: str | None, request_id: str, salt: str) -> tuple[Arm, str]:
        """The arm for a request (the stable one while the canary is not ready) and what decided it."""
        canary = self.canary
        if canary is None or not canary.ready or self.percent <= 0:
            return self.stable, "no canary"
        name, by = pick_arm(user_id, request_id, self.percent, salt)
        return (canary if name == CANARY else self.stable), by


# ---- prediction ------------------------------------------------------------------------------------------


def predict_batch(predictor: Predictor, texts: list[str]) -> list[dict[str, Any]]:
    """One predictor call for a batch (padded to its longest text), in the model thread: a result per text."""
    probs, used, _ = timed_probabilities(predictor, texts)
    tokens = [int(n) for n in used]
    # a row shorter than max_length was not truncated, so only rows at the limit need counting in full
    at_limit = [i for i, n in enumerate(tokens) if n >= predictor.max_length]
    if at_limit:
        for i, count in zip(at_limit, predictor.token_counts([texts[i] for i in at_limit]), strict=True):
            tokens[i] = count
    labels = predictor.labels
    out = []
    for row, n_used, n_tokens in zip(probs, used, tokens, strict=True):
        best = int(row.argmax())
        out.append({"label": labels[best], "confidence": float(row[best]),
                    "probabilities": dict(zip(labels, row.tolist(), strict=True)),
                    "tokens": n_tokens, "truncated": n_tokens > int(n_used)})
    return out


class PredictionCache:
    """The last `size` predictions, keyed by the sha256 of the text; least recently used go first."""

    def __init__(self, size: int):
        self.size = size
        self._items: OrderedDict[str, dict[str, Any]] = OrderedDict()

    @staticmethod
    def key(text: str) -> str:
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def get(self, key: str) -> dict[str, Any] | None:
        item = self._items.get(key)
        if item is not None:
            self._items.move_to_end(key)
        return item

    def put(self, key: str, item: dict[str, Any]) -> None:
        self._items[key] = item
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)


# ---- request and response bodies -------------------------------------------------------------------------


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"text": "what a wonderful day"}, {"texts": ["great", "awful"]}]})
    text: str | None = Field(None, description="One text to classify.")
    texts: list[str] | None = Field(None, description="Several texts, answered in order.")


class PredictionOut(BaseModel):
    label: str
    confidence: float
    probabilities: dict[str, float] = Field(description="Each label's probability, in the model's order.")
    tokens: int = Field(description="Tokens in the text, special tokens included, before truncation.")
    truncated: bool = Field(description="Whether the model read only the first max_length tokens.")


class PredictResponse(BaseModel):
    predictions: list[PredictionOut]
    variant_id: int
    arm: str = Field(description="Which arm answered: stable, or canary (routed by the X-User-Id header).")
    request_id: str = Field(description="This answer's id: send it to /v1/feedback to say whether it was right.")
    routed_by: str = Field(description="What chose the arm: user (X-User-Id), request_id, or no canary.")
    latency_ms: float = Field(description="Time in the server, from the request's arrival to its answer.")


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"request_id": "…", "correct": True}]})
    request_id: str = Field(min_length=1, max_length=64, description="The request_id of an answer.")
    correct: bool = Field(description="Whether the answer was right.")


class PercentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    percent: float = Field(description="The canary's share of users, 0 to 100.")


class ModelOut(BaseModel):
    variant_id: int
    name: str
    model_id: int | None
    model_name: str
    task: str
    runtime: str
    precision: str
    sha256: str = Field(description="The hash of the variant's file list (each path, size and sha256).")
    files: list[dict[str, Any]]
    parent_id: int | None
    lineage: list[int] = Field(description="Variant ids from the original model's down to this one.")
    recipe: dict[str, Any]
    labels: list[str] | None = Field(description="The model's labels, once it is loaded.")
    max_length: int | None = Field(description="Most tokens the model reads of a text, once it is loaded.")
    device: str
    ready: bool
    arm: str = STABLE
    canary_percent: float = Field(0.0, description="The canary's share of users (0: no canary).")
    canary: dict[str, Any] | None = Field(None, description="The canary variant beside it, described the same way.")


class Problem(BaseModel):
    detail: str


JSON_NAMES = {"int": "a number", "float": "a number", "bool": "true or false", "dict": "an object",
              "list": "an array", "NoneType": "null", "str": "a string"}


def _json_type(value: Any) -> str:
    name = type(value).__name__
    return JSON_NAMES.get(name, name)


def validation_line(errors: Sequence[dict[str, Any]]) -> str:
    """Pydantic's errors as one line about the request's fields (the first error; the others follow)."""
    error = errors[0]
    loc = [part for part in error.get("loc", ()) if part != "body"]
    kind = error.get("type", "")
    shape = 'send a JSON object with "text" (a string) or "texts" (a list of strings)'
    if kind == "json_invalid":
        return f"the body is not valid JSON ({error.get('msg', '')}): {shape}"
    if not loc and isinstance(error.get("input"), bytes):  # FastAPI parses JSON only when the request says so
        return f"the body was not sent as JSON: send the header 'Content-Type: application/json' and {shape}"
    if not loc:
        return f"the body is {_json_type(error.get('input'))}: {shape}"
    if kind == "extra_forbidden":
        return f"unknown field {loc[0]!r}: {shape}"
    if loc == ["text"] and kind == "string_type":
        return f"a text must be a string, not {_json_type(error.get('input'))}"
    if loc == ["texts"] and kind == "list_type":
        return f"texts must be a list of strings, not {_json_type(error.get('input'))}"
    if len(loc) == 2 and loc[0] == "texts" and isinstance(loc[1], int):
        return f"text {loc[1] + 1}: a text must be a string, not {_json_type(error.get('input'))}"
    return f"{'.'.join(str(p) for p in loc)}: {error.get('msg', 'is not valid')}"


def checked_texts(body: PredictRequest) -> list[str]:
    if body.text is not None and body.texts is not None:
        raise InvalidInput('give "text" (one string) or "texts" (a list of strings), not both')
    if body.texts == []:  # the playground's words for this ("paste one per line") speak of its text box
        raise InvalidInput('"texts" is an empty list: give at least one text')
    if body.texts is not None:
        return check_batch(body.texts)
    if body.text is None:
        raise InvalidInput('the body needs "text" (one string) or "texts" (a list of strings)')
    return [check_text(body.text)]


# ---- API keys and per-request metrics --------------------------------------------------------------------


class GuardAndMeasure:
    """ASGI middleware: refuses requests without a valid API key (when keys are set) and counts every answer
    by route and status. Plain ASGI: Starlette's BaseHTTPMiddleware would cost a task per request."""

    def __init__(self, app: Any, metrics: ServingMetrics, api_keys: Sequence[str]):
        self.app = app
        self.metrics = metrics
        self.api_keys = [key.encode() for key in api_keys]

    def authorized(self, scope: dict[str, Any]) -> bool:
        header = next((value for name, value in scope["headers"] if name == b"authorization"), b"")
        scheme, _, token = header.partition(b" ")
        if scheme.lower() != b"bearer":
            return False
        token = token.strip()
        found = False
        for key in self.api_keys:  # every key is compared, in constant time, so timing tells nothing
            found |= hmac.compare_digest(token, key)
        return found

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        route = path if path in KNOWN_ROUTES else "other"
        started = time.perf_counter()
        status = 500

        async def send_and_note(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            if self.api_keys and path not in OPEN_PATHS and not self.authorized(scope):
                self.metrics.error(route, "unauthorized")
                detail = "a valid API key is needed: send the header 'Authorization: Bearer KEY'"
                refusal = JSONResponse({"detail": detail}, status_code=401,
                                       headers={"WWW-Authenticate": "Bearer"})
                await refusal(scope, receive, send_and_note)
                return
            await self.app(scope, receive, send_and_note)
        except Exception:
            self.metrics.error(route, "internal")
            raise
        finally:
            self.metrics.observe_request(route, status, time.perf_counter() - started)


# ---- the app ---------------------------------------------------------------------------------------------


def create_app(variant: ServedVariant, config: ServingConfig | None = None, *,
               api_keys: Sequence[str] = (), on_predictions: PredictionSink | None = None,
               canary: ServedVariant | None = None, policy: RolloutPolicy | None = None,
               recorder: RolloutRecorder | None = None, admin_token: str | None = None, salt: str = "") -> FastAPI:
    """The model server for one variant; it verifies and loads the model in the background once it starts.
    `on_predictions(texts, results, variant_id=, arm=)` sees every answered request (drift sampling); it must
    return at once (`jobs.serving.drift_sampling` only buffers).

    With `canary`, a second variant runs beside it (its own files verified, its own predictor and batcher) and
    takes `policy.percent` % of users, routed by consistent hashing of X-User-Id with `salt` (`jobs.serving.canary`).
    `recorder` stores feedback and automatic rollbacks (server.py: the deployment's rows); it is called in a thread
    of its own, never in the event loop. `admin_token` authorises the workbench's /v1/admin/* calls (none: off)."""
    config = config or ServingConfig()
    metrics = ServingMetrics(variant.id)
    state = ServerState(variant, canary, policy)
    metrics.canary_percent.set(state.percent)
    cache = PredictionCache(config.cache_size) if config.cache_size else None
    # request id -> (arm, variant id, label): what a later /v1/feedback is about
    answered: OrderedDict[str, tuple[str, int, str | None]] = OrderedDict()
    # one thread writes to the database: a slow write never holds the event loop, so never a prediction
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="recorder") if recorder is not None else None
    background: set[asyncio.Task] = set()

    async def bring_up_arm(arm: Arm) -> None:
        arm.reason = "verifying the model files against their stored sha256"
        problems = await asyncio.to_thread(verify_files, arm.variant)
        if problems:
            more = f" (and {len(problems) - SHOWN_PROBLEMS} more)" if len(problems) > SHOWN_PROBLEMS else ""
            arm.reason = "; ".join(problems[:SHOWN_PROBLEMS]) + more
            log.error("variant %s (%s) is not served: %s", arm.variant.id, arm.name, arm.reason)
            return
        arm.reason = "loading the model"
        try:
            predictor = await asyncio.to_thread(load_predictor, arm.variant, config.device, None, config.threads)
            # a session's first call is slow (allocations, kernel choice): pay it before the first user does
            await asyncio.to_thread(predict_batch, predictor, [WARM_UP_TEXT])
        except Exception as exc:  # the reason is what /ready reports; the traceback goes to the log
            log.exception("variant %s (%s) could not be loaded", arm.variant.id, arm.name)
            arm.reason = f"the model could not be loaded: {exc}"
            return
        arm.predictor = predictor
        arm.batcher = DynamicBatcher(
            lambda texts: predict_batch(predictor, texts), max_batch=config.max_batch,
            max_wait_ms=config.max_wait_ms, max_queue=config.max_queue,
            stats=BatcherStats(on_batch=batch_ran, on_queue_time=metrics.queue_time.observe,
                               on_depth=metrics.queue_depth.set),
        )
        worker = arm.batcher.start()
        worker.add_done_callback(lambda task: batcher_ended(arm, task))
        arm.ready, arm.reason = True, ""
        log.info("variant %s (%s) is ready", arm.variant.id, arm.name)

    async def bring_up() -> None:
        await bring_up_arm(state.stable)
        if state.canary is not None:
            await bring_up_arm(state.canary)
        state.canary_pending = False
        metrics.ready.set(1 if state.ready else 0)

    def batch_ran(size: int, seconds: float) -> None:
        metrics.batch_size.observe(size)
        metrics.batch_latency.observe(seconds)

    def batcher_ended(arm: Arm, task: asyncio.Task) -> None:
        if task.cancelled():
            return
        arm.ready = False
        arm.reason = f"the batcher stopped: {task.exception()!r}"
        if arm is state.stable:
            metrics.ready.set(0)
        log.error("%s: %s", arm.name, arm.reason)

    async def retire(arm: Arm) -> None:
        """Stop an arm no request is routed to any more, once the requests it holds are answered."""
        deadline = time.monotonic() + config.timeout_s + 1
        while arm.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        arm.ready, arm.reason = False, "retired"
        if arm.batcher is not None:
            await arm.batcher.stop("this variant is no longer served here")
        if arm.predictor is not None:
            await asyncio.to_thread(arm.predictor.close)

    def in_background(coroutine) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        background.add(task)  # a task nobody holds may be collected before it ran
        task.add_done_callback(background.discard)

    def remove_canary() -> Arm | None:
        arm, state.canary, state.percent = state.canary, None, 0.0
        metrics.canary_percent.set(0)
        if arm is not None:
            in_background(retire(arm))
        return arm

    def record(call, *args) -> asyncio.Future | None:
        """Run a recorder call in the writer's thread; its failure is logged, never raised into a request."""
        if writer is None:
            return None
        future = asyncio.get_running_loop().run_in_executor(writer, call, *args)
        future.add_done_callback(lambda f: f.cancelled() or f.exception() is None or log.error(
            "could not record to the database: %r", f.exception()))
        return future

    def check_rollback() -> None:
        """Roll the canary back when it does worse than stable by the user's thresholds (a few times a second)."""
        arm, rules = state.canary, state.policy
        if arm is None or (rules.error_rate_increase is None and rules.p95_ratio is None):
            return
        now = time.monotonic()
        if now - state.last_check < ROLLBACK_CHECK_S:
            return
        state.last_check = now
        figures = {STABLE: state.stable.window.summary(now), CANARY: arm.window.summary(now)}
        reason = rollback_reason(figures[STABLE], figures[CANARY], rules)
        if reason is None:
            return
        remove_canary()
        state.last_event = f"canary rolled back automatically: {reason}"
        log.warning(state.last_event)
        details = {"reason": reason, "canary_variant_id": arm.variant.id, "stable_variant_id": state.variant.id,
                   "figures": figures, "thresholds": rules.thresholds()}
        if recorder is not None:
            record(recorder.auto_rollback, state.last_event, details)

    def arm_finished(arm: Arm, started: float, failure: str | None) -> None:
        seconds = time.perf_counter() - started
        arm.in_flight -= 1
        metrics.arm_request(arm.name, arm.variant.id, seconds, failure)
        if arm.window is not None and (failure is None or failure in ARM_FAILURES):
            arm.window.add(failure is not None, seconds)
        check_rollback()

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        starting = asyncio.create_task(bring_up())
        try:
            yield
        finally:
            starting.cancel()
            state.ready = False
            state.reason = "the server is shutting down"
            for arm in filter(None, (state.stable, state.canary)):
                if arm.batcher is not None:
                    await arm.batcher.stop()
                if arm.predictor is not None:
                    arm.predictor.close()
            if writer is not None:
                writer.shutdown(wait=True)  # what was accepted is written before the process ends

    app = FastAPI(title=f"Model server: variant {variant.id} ({variant.name})", lifespan=lifespan,
                  description="Serves one stored variant of the Transformer Deployment Workbench.")
    app.state.serving = state
    app.state.metrics = metrics
    # documents the key in OpenAPI (the docs' Authorize button); GuardAndMeasure is what checks it
    bearer = HTTPBearer(auto_error=False, description="One of WORKBENCH_SERVING_API_KEYS, when it is set.")

    def refuse(status: int, detail: str, reason: str, headers: dict[str, str] | None = None) -> JSONResponse:
        metrics.error(PREDICT, reason)
        return JSONResponse({"detail": detail}, status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        metrics.error(request.url.path if request.url.path in KNOWN_ROUTES else "other", "invalid_input")
        return JSONResponse({"detail": validation_line(exc.errors())}, status_code=422)

    async def answer(arm: Arm, batcher: DynamicBatcher, texts: list[str]
                     ) -> tuple[list[dict[str, Any]], JSONResponse | None, str | None]:
        """(results, None, None), or ([], the refusal, why) when the arm could not answer."""
        results: list[dict[str, Any] | None] = [None] * len(texts)
        keys: list[str] = []
        if cache is not None:  # keyed by the variant too: two arms answer the same text differently
            keys = [PredictionCache.key(f"{arm.variant.sha256}\x00{t}") for t in texts]
            results = [cache.get(k) for k in keys]
            hits = sum(r is not None for r in results)
            metrics.cache_hits.inc(hits)
            metrics.cache_misses.inc(len(texts) - hits)
        missing = [i for i, r in enumerate(results) if r is None]
        if missing:
            try:
                asked = [texts[i] for i in missing]
                computed = await asyncio.wait_for(batcher.submit(asked), config.timeout_s)
            except QueueFull as exc:
                return [], refuse(429, str(exc), "queue_full", {"Retry-After": str(exc.retry_after_s)}), "queue_full"
            except TimeoutError:
                waited = f"timed out after {config.timeout_s:g} s waiting for the model"
                return [], refuse(503, f"{waited}: the server is overloaded", "timeout"), "timeout"
            except Exception as exc:  # the model failed on the batch, or the server is stopping: say which
                if not arm.ready:
                    return [], refuse(503, f"the model is not ready: {arm.reason}", "not_ready"), "not_ready"
                log.exception("a batch failed (%s arm)", arm.name)
                return [], refuse(500, f"the model failed on this request: {exc}", "model_error"), "model_error"
            for i, result in zip(missing, computed, strict=True):
                results[i] = result
                if cache is not None:
                    cache.put(keys[i], result)
        return results, None, None  # type: ignore[return-value] - every None was filled

    @app.post(PREDICT, response_model=PredictResponse, dependencies=[Depends(bearer)],
              responses={401: {"model": Problem}, 422: {"model": Problem}, 429: {"model": Problem},
                         503: {"model": Problem}},
              summary="Classify one text or a list of texts")
    async def predict(body: PredictRequest, request: Request) -> Response:
        started = time.perf_counter()
        try:
            texts = checked_texts(body)
            user_id = check_user_id(request.headers.get(USER_HEADER))
        except (InvalidInput, ValueError) as exc:
            return refuse(422, str(exc), "invalid_input")
        request_id = uuid.uuid4().hex
        arm, routed_by = state.route(user_id, request_id, salt)
        batcher = arm.batcher
        if not arm.ready or batcher is None:
            return refuse(503, f"the model is not ready: {arm.reason}", "not_ready")
        arm.in_flight += 1
        failure: str | None = "internal"
        try:
            results, refusal, failure = await answer(arm, batcher, texts)
        finally:
            arm_finished(arm, started, failure)
        if refusal is not None:
            return refusal
        metrics.predicted_texts.inc(len(texts))
        answered[request_id] = (arm.name, arm.variant.id, results[0]["label"] if len(results) == 1 else None)
        if len(answered) > REMEMBERED_REQUESTS:
            answered.popitem(last=False)
        if on_predictions is not None:
            on_predictions(texts, results, variant_id=arm.variant.id, arm=arm.name if state.with_arms else None)
        return JSONResponse({"predictions": results, "variant_id": arm.variant.id, "arm": arm.name,
                             "request_id": request_id, "routed_by": routed_by,
                             "latency_ms": round((time.perf_counter() - started) * 1000, 3)},
                            headers={"X-Request-Id": request_id})

    @app.get("/health", summary="Alive: 200 while the process runs")
    async def health() -> dict[str, Any]:
        return {"status": "alive", "variant_id": state.variant.id}

    @app.get("/ready", summary="200 once the files are verified and the model loaded",
             responses={503: {"description": "Not ready yet or not at all, with the reason."}})
    async def ready() -> JSONResponse:
        if state.ready and not state.canary_pending:
            return JSONResponse({"ready": True, "variant_id": state.variant.id})
        reason = state.reason or f"the canary: {state.canary.reason if state.canary else 'starting'}"
        return JSONResponse({"ready": False, "variant_id": state.variant.id, "reason": reason}, status_code=503)

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    def describe(arm: Arm) -> dict[str, Any]:
        variant, predictor = arm.variant, arm.predictor
        return {"variant_id": variant.id, "name": variant.name, "model_id": variant.model_id,
                "model_name": variant.model_name, "task": variant.task, "runtime": variant.runtime,
                "precision": variant.precision, "sha256": variant.sha256, "files": variant.files,
                "parent_id": variant.parent_id, "lineage": variant.lineage, "recipe": variant.recipe,
                "labels": predictor.labels if predictor else None,
                "max_length": predictor.max_length if predictor else None, "device": config.device,
                "ready": arm.ready}

    @app.get("/v1/model", response_model=ModelOut, dependencies=[Depends(bearer)],
             summary="The served variant (the stable arm): runtime, precision, hashes, labels, lineage; the canary's "
                     "under `canary`")
    async def model() -> dict[str, Any]:
        canary_arm = state.canary
        return {**describe(state.stable), "arm": STABLE, "canary_percent": state.percent,
                "canary": None if canary_arm is None else {**describe(canary_arm), "arm": CANARY,
                                                           "reason": canary_arm.reason or None}}

    def rollout() -> dict[str, Any]:
        now = time.monotonic()
        arms = []
        for arm in filter(None, (state.stable, state.canary)):
            arms.append({"arm": arm.name, "variant_id": arm.variant.id, "name": arm.variant.name,
                         "sha256": arm.variant.sha256, "ready": arm.ready, "reason": arm.reason or None,
                         "share_percent": (state.percent if arm.name == CANARY else 100 - state.percent),
                         "window": arm.window.summary(now) if arm.window else None})
        return {"arms": arms, "canary_percent": state.percent, "policy": state.policy.thresholds(),
                "routing": "consistent hash of the X-User-Id header (without it: of the request id)",
                "last_event": state.last_event or None}

    @app.get(ROLLOUT, dependencies=[Depends(bearer)], summary="Both arms: variants, shares, recent error rates and p95")
    async def rollout_route() -> dict[str, Any]:
        return rollout()

    @app.post(FEEDBACK, dependencies=[Depends(bearer)],
              responses={401: {"model": Problem}, 404: {"model": Problem}, 409: {"model": Problem}},
              summary="Say whether an answer (by its request_id) was correct")
    async def feedback(body: FeedbackRequest) -> JSONResponse:
        known = answered.get(body.request_id)
        if known is None:
            return JSONResponse({"detail": f"no answer with request_id {body.request_id!r} (this server remembers "
                                           f"its last {REMEMBERED_REQUESTS:,} answers)"}, status_code=404)
        if recorder is None:
            return JSONResponse({"detail": "this server keeps no feedback: it was not started as a deployment"},
                                status_code=409)
        arm_name, variant_id, label = known
        future = record(recorder.feedback, body.request_id, arm_name, variant_id, label, body.correct)
        try:
            new = await future  # in the writer's thread: the event loop serves predictions meanwhile
        except Exception as exc:  # noqa: BLE001 - the database refused: say so, the server goes on
            return JSONResponse({"detail": f"the feedback could not be stored: {exc}"}, status_code=503)
        return JSONResponse({"stored": True, "replaced": not new, "request_id": body.request_id, "arm": arm_name,
                             "variant_id": variant_id})

    # ---- the workbench's calls: change the rollout of the running server ----

    def admin_refusal(request: Request) -> JSONResponse | None:
        if not admin_token:
            return JSONResponse({"detail": "admin calls are off: the server was started without an admin token"},
                                status_code=403)
        given = request.headers.get(ADMIN_HEADER, "").encode()
        if not hmac.compare_digest(given, admin_token.encode()):
            return JSONResponse({"detail": "a valid admin token is needed (header X-Admin-Token)"}, status_code=403)
        return None

    def no_canary() -> JSONResponse:
        return JSONResponse({"detail": "this deployment has no canary now" + (
            f" ({state.last_event})" if state.last_event else "")}, status_code=409)

    @app.get(ADMIN_ROLLOUT, include_in_schema=False)
    async def admin_rollout(request: Request) -> JSONResponse:
        return admin_refusal(request) or JSONResponse(rollout())

    @app.post(ADMIN_PERCENT, include_in_schema=False)
    async def admin_percent(body: PercentRequest, request: Request) -> JSONResponse:
        if (refusal := admin_refusal(request)) is not None:
            return refusal
        if state.canary is None:
            return no_canary()
        try:
            checked = replace(state.policy, percent=body.percent)
        except ValueError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=422)
        before, state.percent, state.policy = state.percent, checked.percent, checked
        metrics.canary_percent.set(state.percent)
        state.last_event = f"canary share changed from {before:g} % to {state.percent:g} %"
        return JSONResponse(rollout())

    @app.post(ADMIN_PROMOTE, include_in_schema=False)
    async def admin_promote(request: Request) -> JSONResponse:
        if (refusal := admin_refusal(request)) is not None:
            return refusal
        arm = state.canary
        if arm is None:
            return no_canary()
        if not arm.ready:
            return JSONResponse({"detail": f"the canary is not ready, so it cannot be promoted: {arm.reason}"},
                                status_code=409)
        old = state.stable
        arm.name, arm.window = STABLE, old.window  # new requests go to it at once, with nothing else changed
        if arm.window is not None:
            arm.window.clear()
        state.stable, state.canary, state.percent = arm, None, 0.0
        metrics.canary_percent.set(0)
        metrics.serving(old.variant.id, arm.variant.id)
        in_background(retire(old))
        state.last_event = f"canary variant {arm.variant.id} promoted: it replaces variant {old.variant.id}"
        return JSONResponse(rollout())

    @app.post(ADMIN_ROLLBACK, include_in_schema=False)
    async def admin_rollback(request: Request) -> JSONResponse:
        if (refusal := admin_refusal(request)) is not None:
            return refusal
        arm = remove_canary()
        if arm is None:
            return no_canary()
        state.last_event = f"canary variant {arm.variant.id} rolled back"
        return JSONResponse(rollout())

    app.add_middleware(GuardAndMeasure, metrics=metrics, api_keys=api_keys)
    return app
