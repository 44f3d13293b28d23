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
from collections import OrderedDict
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from jobs.playground.predict import check_batch, check_text, timed_probabilities
from jobs.runtimes import Predictor, load_predictor
from jobs.serving.batcher import BatcherStats, DynamicBatcher, QueueFull
from jobs.serving.metrics import CONTENT_TYPE, ServingMetrics
from storage.errors import InvalidInput
from storage.files import hash_file

log = logging.getLogger("jobs.serving")

PREDICT = "/v1/predict"
OPEN_PATHS = frozenset({"/health", "/ready", "/metrics"})  # probes and scrapers carry no API key
KNOWN_ROUTES = frozenset({PREDICT, "/v1/model", "/health", "/ready", "/metrics", "/docs", "/redoc",
                          "/openapi.json", "/docs/oauth2-redirect"})
WARM_UP_TEXT = "warm up"
SHOWN_PROBLEMS = 5  # file problems named in /ready's reason; the rest are counted


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


@dataclass
class ServerState:
    ready: bool = False
    reason: str = "starting"
    predictor: Predictor | None = None
    batcher: DynamicBatcher | None = None


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
    latency_ms: float = Field(description="Time in the server, from the request's arrival to its answer.")


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
               api_keys: Sequence[str] = ()) -> FastAPI:
    """The model server for one variant; it verifies and loads the model in the background once it starts."""
    config = config or ServingConfig()
    metrics = ServingMetrics(variant.id)
    state = ServerState()
    cache = PredictionCache(config.cache_size) if config.cache_size else None

    async def bring_up() -> None:
        state.reason = "verifying the model files against their stored sha256"
        problems = await asyncio.to_thread(verify_files, variant)
        if problems:
            more = f" (and {len(problems) - SHOWN_PROBLEMS} more)" if len(problems) > SHOWN_PROBLEMS else ""
            state.reason = "; ".join(problems[:SHOWN_PROBLEMS]) + more
            log.error("variant %s is not served: %s", variant.id, state.reason)
            return
        state.reason = "loading the model"
        try:
            predictor = await asyncio.to_thread(load_predictor, variant, config.device, None, config.threads)
            # a session's first call is slow (allocations, kernel choice): pay it before the first user does
            await asyncio.to_thread(predict_batch, predictor, [WARM_UP_TEXT])
        except Exception as exc:  # the reason is what /ready reports; the traceback goes to the log
            log.exception("variant %s could not be loaded", variant.id)
            state.reason = f"the model could not be loaded: {exc}"
            return
        state.predictor = predictor
        state.batcher = DynamicBatcher(
            lambda texts: predict_batch(predictor, texts), max_batch=config.max_batch,
            max_wait_ms=config.max_wait_ms, max_queue=config.max_queue,
            stats=BatcherStats(on_batch=batch_ran, on_queue_time=metrics.queue_time.observe,
                               on_depth=metrics.queue_depth.set),
        )
        worker = state.batcher.start()
        worker.add_done_callback(batcher_ended)
        state.ready, state.reason = True, ""
        metrics.ready.set(1)
        log.info("variant %s is ready", variant.id)

    def batch_ran(size: int, seconds: float) -> None:
        metrics.batch_size.observe(size)
        metrics.batch_latency.observe(seconds)

    def batcher_ended(task: asyncio.Task) -> None:
        if task.cancelled():
            return
        state.ready = False
        state.reason = f"the batcher stopped: {task.exception()!r}"
        metrics.ready.set(0)
        log.error(state.reason)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        starting = asyncio.create_task(bring_up())
        try:
            yield
        finally:
            starting.cancel()
            state.ready = False
            state.reason = "the server is shutting down"
            if state.batcher is not None:
                await state.batcher.stop()
            if state.predictor is not None:
                state.predictor.close()

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

    @app.post(PREDICT, response_model=PredictResponse, dependencies=[Depends(bearer)],
              responses={401: {"model": Problem}, 422: {"model": Problem}, 429: {"model": Problem},
                         503: {"model": Problem}},
              summary="Classify one text or a list of texts")
    async def predict(body: PredictRequest) -> Response:
        started = time.perf_counter()
        try:
            texts = checked_texts(body)
        except InvalidInput as exc:
            return refuse(422, str(exc), "invalid_input")
        batcher = state.batcher
        if not state.ready or batcher is None:
            return refuse(503, f"the model is not ready: {state.reason}", "not_ready")
        results: list[dict[str, Any] | None] = [None] * len(texts)
        keys: list[str] = []
        if cache is not None:
            keys = [PredictionCache.key(t) for t in texts]
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
                return refuse(429, str(exc), "queue_full", {"Retry-After": str(exc.retry_after_s)})
            except TimeoutError:
                waited = f"timed out after {config.timeout_s:g} s waiting for the model"
                return refuse(503, f"{waited}: the server is overloaded", "timeout")
            except Exception as exc:  # the model failed on the batch, or the server is stopping: say which
                if not state.ready:
                    return refuse(503, f"the model is not ready: {state.reason}", "not_ready")
                log.exception("a batch failed")
                return refuse(500, f"the model failed on this request: {exc}", "model_error")
            for i, result in zip(missing, computed, strict=True):
                results[i] = result
                if cache is not None:
                    cache.put(keys[i], result)
        metrics.predicted_texts.inc(len(texts))
        return JSONResponse({"predictions": results, "variant_id": variant.id,
                             "latency_ms": round((time.perf_counter() - started) * 1000, 3)})

    @app.get("/health", summary="Alive: 200 while the process runs")
    async def health() -> dict[str, Any]:
        return {"status": "alive", "variant_id": variant.id}

    @app.get("/ready", summary="200 once the files are verified and the model loaded",
             responses={503: {"description": "Not ready yet or not at all, with the reason."}})
    async def ready() -> JSONResponse:
        if state.ready:
            return JSONResponse({"ready": True, "variant_id": variant.id})
        return JSONResponse({"ready": False, "variant_id": variant.id, "reason": state.reason},
                            status_code=503)

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/v1/model", response_model=ModelOut, dependencies=[Depends(bearer)],
             summary="The served variant: runtime, precision, hashes, labels, lineage")
    async def model() -> dict[str, Any]:
        predictor = state.predictor
        return {"variant_id": variant.id, "name": variant.name, "model_id": variant.model_id,
                "model_name": variant.model_name, "task": variant.task, "runtime": variant.runtime,
                "precision": variant.precision, "sha256": variant.sha256, "files": variant.files,
                "parent_id": variant.parent_id, "lineage": variant.lineage, "recipe": variant.recipe,
                "labels": predictor.labels if predictor else None,
                "max_length": predictor.max_length if predictor else None, "device": config.device,
                "ready": state.ready}

    app.add_middleware(GuardAndMeasure, metrics=metrics, api_keys=api_keys)
    return app
