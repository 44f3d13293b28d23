"""Traffic-split simulation, as deployment teams run A/B tests on live traffic.

A user is put in an arm by hashing the experiment's name with the user id (consistent hashing): the same user
always gets the same arm, no assignment table is needed, and raising B's share only moves users from A to B.
Every request and its feedback (correct / wrong) is stored in SQLite; per-arm accuracy comes with a Wilson 95 %
confidence interval, which stays sensible for small counts and accuracies near 0 or 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from jobs.ml.data import Examples, split_examples
from jobs.playground.predict import Prediction, predict_text, predict_texts
from jobs.playground.predictor_cache import CACHE, PredictorCache
from jobs.traffic_split import assign_arm, bucket  # noqa: F401 - bucket: this module's API too
from storage import catalog, traffic
from storage.entities import Experiment, TrafficRequest
from storage.errors import InvalidInput
from storage.orm import utcnow

ARMS = ("A", "B")
CONFIDENCE = 0.95
SIMULATION_SEED = 2026


def _check_user(user_id: str | None) -> str:
    user = (user_id or "").strip()
    if not user:
        raise InvalidInput("a user id is needed: the same id always lands in the same arm")
    if len(user) > 200:
        raise InvalidInput(f"the user id is {len(user)} characters; the limit is 200")
    return user


def start_experiment(variant_a: int | str, variant_b: int | str, split_b_percent: float, name: str | None = None) -> Experiment:
    a, b = catalog.get_variant(variant_a), catalog.get_variant(variant_b)
    if a.id == b.id:
        raise InvalidInput("pick two different variants for A and B")
    split = float(split_b_percent)
    if not 0 <= split <= 100:
        raise InvalidInput(f"B's share of traffic must be between 0 and 100 %, not {split}")
    name = (name or "").strip() or f"A{a.id}-vs-B{b.id}-{split:g}pct-{utcnow():%Y%m%d-%H%M%S-%f}"
    return traffic.create_experiment(name=name, variant_a_id=a.id, variant_b_id=b.id, split_b_percent=split)


def list_experiments() -> list[Experiment]:
    return traffic.list_experiments()


def _arm_variant(experiment: Experiment, arm: str) -> int:
    return experiment.variant_b_id if arm == "B" else experiment.variant_a_id


def _request_row(experiment: Experiment, user: str, arm: str, prediction: Prediction, source: str,
                 feedback: str | None = None) -> dict:
    return {
        "experiment_id": experiment.id, "user_id": user, "arm": arm, "variant_id": _arm_variant(experiment, arm),
        "text": prediction.text, "label": prediction.label, "confidence": prediction.confidence,
        "latency_ms": prediction.latency_ms, "source": source, "feedback": feedback,
        "feedback_at": utcnow() if feedback else None,
    }


@dataclass(frozen=True)
class Routed:
    request: TrafficRequest
    prediction: Prediction


def route(experiment: int | str, user_id: str, text: str, device: str = "cpu", cache: PredictorCache = CACHE) -> Routed:
    """Serve one request from the user's arm and store it (feedback comes later with `record_feedback`)."""
    exp = traffic.get_experiment(experiment)
    user = _check_user(user_id)
    arm = assign_arm(user, exp.split_b_percent, exp.name)
    prediction = predict_text(_arm_variant(exp, arm), text, device, cache)
    (request,) = traffic.add_requests([_request_row(exp, user, arm, prediction, "manual")])
    return Routed(request, prediction)


def record_feedback(request_id: int | str, correct: bool) -> TrafficRequest:
    return traffic.set_feedback(request_id, "correct" if correct else "wrong")  # the store checks the id


def simulate(experiment: int | str, dataset: int | str, split: str = "test", requests: int = 200, users: int = 50,
             device: str = "cpu", progress: Callable[[int, int], None] | None = None,
             cache: PredictorCache = CACHE) -> list[TrafficRequest]:
    """`requests` examples of a split sent by `users` simulated users; feedback is whether the answer matches gold."""
    exp = traffic.get_experiment(experiment)
    if requests < 1 or users < 1:
        raise InvalidInput("simulate at least one request from at least one user")
    pool = split_examples(catalog.get_dataset(dataset), split)
    if not len(pool):
        raise InvalidInput(f"the {split} split is empty")
    # a fixed sample of the split; with replacement when more requests are asked for than it has examples
    picks = np.random.default_rng(SIMULATION_SEED).choice(len(pool), size=requests, replace=requests > len(pool))
    examples = Examples([pool.texts[i] for i in picks], [pool.labels[i] for i in picks])
    senders = [f"sim-user-{k % users}" for k in range(len(examples))]
    arms = [assign_arm(u, exp.split_b_percent, exp.name) for u in senders]
    rows: list[dict] = []
    done = 0
    for arm in ARMS:
        picked = [i for i, a in enumerate(arms) if a == arm]
        if not picked:
            continue

        def arm_progress(i: int, _total: int, base: int = done) -> None:
            if progress is not None:
                progress(base + i, len(examples))

        batch = predict_texts(_arm_variant(exp, arm), [examples.texts[i] for i in picked], device=device,
                              progress=arm_progress, cache=cache)
        for i, prediction in zip(picked, batch.predictions, strict=True):
            feedback = "correct" if prediction.label == examples.labels[i] else "wrong"
            rows.append(_request_row(exp, senders[i], arm, prediction, "simulated", feedback))
        done += len(picked)
    return traffic.add_requests(rows)


@dataclass(frozen=True)
class ArmStats:
    arm: str
    variant_id: int
    requests: int
    share: float  # of all requests in the experiment
    with_feedback: int
    correct: int
    accuracy: float | None  # correct / with feedback
    ci_low: float | None
    ci_high: float | None


def arm_report(experiment: int | str) -> list[ArmStats]:
    from statsmodels.stats.proportion import proportion_confint

    exp = traffic.get_experiment(experiment)
    counts = traffic.arm_counts(exp.id)
    total = sum(c["requests"] for c in counts.values())
    out = []
    for arm in ARMS:
        c = counts.get(arm, {"requests": 0, "with_feedback": 0, "correct": 0})
        acc = low = high = None
        if c["with_feedback"]:
            acc = c["correct"] / c["with_feedback"]
            low, high = (float(x) for x in proportion_confint(c["correct"], c["with_feedback"], alpha=1 - CONFIDENCE, method="wilson"))
        out.append(ArmStats(arm, _arm_variant(exp, arm), c["requests"], c["requests"] / total if total else 0.0,
                            c["with_feedback"], c["correct"], acc, low, high))
    return out


def recent_requests(experiment: int | str, limit: int = 50) -> list[TrafficRequest]:
    return traffic.list_requests(traffic.get_experiment(experiment).id, limit)
