"""The playground's HTTP endpoints, declared with `gr.api` (`gradio_client.Client(url).predict(...,
api_name="/predict")`, or one HTTP POST to `/gradio_api/run/predict` with `{"data": [variant, text]}`).

Plain JSON in and out, so scripts and other services can call the same cached predictors the tabs use. A variant
is its id or a registry alias `NAME@ALIAS` (`minilm-l6@production`: whatever version the alias points at now). A
WorkbenchError (the caller's mistake) becomes a `gr.Error`, which gradio_client raises with the same one-line
message; a plain POST to `/run/<name>` gets it with 404 (not found) or 400 (invalid input), see workbench.guards.
Anything else is a server fault: the caller gets one line, the server log the traceback.

Viewers may call `predict`, `predict_batch`, `ab_compare` and `ab_test_set`; `traffic_request` and
`traffic_feedback` write to a traffic experiment, so they need an editor (see workbench.roles).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import asdict
from typing import Any, Callable

import gradio as gr

from jobs import api
from storage.entities import to_dict
from storage.errors import Conflict, InvalidInput, NotFound, WorkbenchError
from workbench import roles

log = logging.getLogger(__name__)
# gr.Error titles, read by workbench.guards to answer a plain POST with 404 / 400 / 409 instead of 500
TITLES = ((NotFound, "Not found"), (InvalidInput, "Invalid input"), (Conflict, "Conflict"))
SERVER_FAULT = "the workbench could not answer this call (a server error; the details are in the server log)"


def _prediction(p) -> dict[str, Any]:
    return {**asdict(p), "truncated": p.truncated, "truncation_note": p.truncation_note}


def _user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)  # gr.api reads the endpoint's parameters and types from the wrapped signature
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except WorkbenchError as exc:  # the caller's mistake, not a server fault
            title = next((t for cls, t in TITLES if isinstance(exc, cls)), "Invalid input")
            raise gr.Error(str(exc), title=title, print_exception=False) from None
        except gr.Error:
            raise
        except Exception:  # a server fault: no internal message or path for the caller
            log.exception("playground API %s failed", fn.__name__)
            raise gr.Error(SERVER_FAULT, title="Server error", print_exception=False) from None

    return call


def predict(variant: str, text: str) -> dict:
    """Label probabilities of one text: label, confidence, probabilities, tokens, used_tokens, latency_ms."""
    return _prediction(api.predict(variant, text))


def predict_batch(variant: str, texts: list[str]) -> dict:
    """Many texts: one prediction each, and the total time."""
    batch = api.predict_batch(variant, texts)
    return {"variant_id": batch.variant_id, "labels": batch.labels, "total_ms": batch.total_ms,
            "predictions": [_prediction(p) for p in batch.predictions]}


def ab_compare(variant_a: str, variant_b: str, text: str) -> dict:
    """Both variants on one text, and whether they agree."""
    side = api.ab_compare(variant_a, variant_b, text)
    return {"a": _prediction(side.a), "b": _prediction(side.b), "agree": side.agree}


def ab_test_set(variant_a: str, variant_b: str, dataset: str, split: str = "test", limit: int = 500) -> dict:
    """Both variants on a dataset split: accuracies, agreement, McNemar's test and its verdict (`significant`,
    `better`: "a", "b" or null, `p_value`, `alpha`), latency and the disagreements."""
    try:
        limit = int(limit)
    except (TypeError, ValueError, OverflowError):
        raise InvalidInput(f"limit is a whole number of examples (0: the whole split), not {str(limit)[:40]!r}") from None
    result = api.ab_test_set(variant_a, variant_b, dataset, split, limit)
    out = asdict(result)
    for row, d in zip(out["disagreements"], result.disagreements, strict=True):
        row["confidence_gap"] = d.confidence_gap
    return out


TRAFFIC = "run traffic experiments (send requests, record feedback)"


@roles.editor_only(TRAFFIC)
def traffic_request(experiment: str, user_id: str, text: str) -> dict:
    """One request routed to the user's arm of a traffic-split experiment; the stored request and its answer."""
    routed = api.route_request(experiment, user_id, text)
    return {"request": to_dict(routed.request), "prediction": _prediction(routed.prediction)}


@roles.editor_only(TRAFFIC)
def traffic_feedback(request_id: int, correct: bool) -> dict:
    """Mark a routed request's answer correct or wrong."""
    return to_dict(api.record_feedback(request_id, correct))


# Single-text calls skip the queue: besides gradio_client (which always queues), they answer one plain
# `POST /gradio_api/run/<name>` with {"data": [...]} in one round trip. Long calls stay queued.
QUICK = (predict, ab_compare, traffic_request, traffic_feedback)
QUEUED = (predict_batch, ab_test_set)


def register() -> None:
    """Declare the endpoints; call inside the app's `gr.Blocks`."""
    for fn in QUICK + QUEUED:
        gr.api(_user_errors(fn), api_name=fn.__name__, queue=fn not in QUICK)
