"""The Optuna study a search asks for its next point: two objectives (minimise p50 latency at the goal's cell,
maximise accuracy) under one constraint (accuracy drop at most the goal's), with a seeded TPE sampler.

The study lives in memory only and is rebuilt from the search's record on every start (`create_trial` +
`add_trial`), so the database stays the one record of truth. Optuna's pruners work on intermediate values of
single-objective studies only, so hopeless trials are pruned by the search itself (after their evaluation, before
their benchmark) and told to the study as PRUNED.
"""

from __future__ import annotations

from typing import Any

from jobs.search import space as search_space
from jobs.search.record import SearchRecord
from jobs.search.status import TrialRow

CONSTRAINT = "drop_over_limit"  # accuracy points lost beyond the goal's maximum; <= 0 is feasible
DUPLICATE_ASKS = 20  # proposals of points already tried before the search picks an untried one itself


def _quiet() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


def new_study(record: SearchRecord) -> Any:
    import optuna

    _quiet()
    startup = min(10, max(3, search_space.size(_space(record)) // 10))
    sampler = optuna.samplers.TPESampler(seed=record.seed, n_startup_trials=startup)
    return optuna.create_study(directions=["minimize", "maximize"], sampler=sampler)


def _space(record: SearchRecord) -> dict[str, tuple[str, ...]]:
    return {k: tuple(v) for k, v in record.space.items()}


def outcome_kwargs(row: TrialRow | None, state: str, max_drop: float) -> dict[str, Any]:
    """What to tell the study about a finished trial: values and constraint when measured, else its state."""
    from optuna.trial import TrialState

    if state == "complete" and row is not None and row.p50_ms is not None and row.accuracy is not None:
        drop = row.drop_points if row.drop_points is not None else 0.0
        return {"values": [row.p50_ms, row.accuracy], "constraint": drop - max_drop}
    return {"state": TrialState.PRUNED if state == "pruned" else TrialState.FAIL}


def add_finished(study: Any, params: dict[str, str], record: SearchRecord, told: dict[str, Any]) -> None:
    """Add a trial that finished outside this study (before a restart, or a duplicate) to it."""
    from optuna.trial import TrialState, create_trial

    dists = search_space.distributions(params, _space(record))
    if dists is None:
        return
    if "values" in told:
        frozen = create_trial(params=params, distributions=dists, values=told["values"],
                              constraints={CONSTRAINT: told["constraint"]})
    else:
        frozen = create_trial(params=params, distributions=dists, state=told.get("state", TrialState.FAIL))
    study.add_trial(frozen)


def tell(study: Any, trial: Any, told: dict[str, Any]) -> None:
    if "values" in told:
        trial.set_constraint(CONSTRAINT, told["constraint"])
        study.tell(trial, told["values"])
    else:
        study.tell(trial, state=told["state"])


def next_point(study: Any, record: SearchRecord, outcomes: dict[tuple, dict[str, Any]]) -> tuple[Any, dict] | None:
    """Ask the study for a point not tried yet (`outcomes`: what each tried point gave, the baseline included).

    A proposal already tried is told its earlier outcome (the sampler learns from it) and the study is asked
    again; after DUPLICATE_ASKS such proposals the first untried point of the space is enqueued. None: every
    point is tried (the space is exhausted).
    """
    space = _space(record)
    for _ in range(DUPLICATE_ASKS):
        trial = study.ask()
        point = search_space.suggest(trial, space)
        known = outcomes.get(search_space.key(point))
        if known is None:
            return trial, point
        tell(study, trial, known)
    untried = [p for p in search_space.points(space) if search_space.key(p) not in outcomes]
    if not untried:
        return None
    study.enqueue_trial(untried[0])
    trial = study.ask()
    return trial, search_space.suggest(trial, space)
