"""Traffic-split experiments and their requests: create, route records, feedback, and per-arm counts."""

from __future__ import annotations

from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.exc import IntegrityError

from storage.catalog import by_ref, row_id
from storage.db import session_scope
from storage.entities import Experiment, TrafficRequest, from_row
from storage.errors import Conflict, InvalidInput, NotFound
from storage.orm import SqlExperiment, SqlTrafficRequest, utcnow

FEEDBACK = ("correct", "wrong")


def create_experiment(*, name: str, variant_a_id: int, variant_b_id: int, split_b_percent: float) -> Experiment:
    try:
        with session_scope() as s:
            row = SqlExperiment(name=name, variant_a_id=variant_a_id, variant_b_id=variant_b_id, split_b_percent=split_b_percent)
            s.add(row)
            s.flush()
            return from_row(Experiment, row)
    except IntegrityError:
        raise Conflict(f"an experiment named {name!r} already exists; choose another name") from None


def get_experiment(ref: int | str) -> Experiment:
    with session_scope() as s:
        return from_row(Experiment, by_ref(s, SqlExperiment, ref, "experiment"))


def list_experiments() -> list[Experiment]:
    with session_scope() as s:
        return [from_row(Experiment, r) for r in s.scalars(select(SqlExperiment).order_by(SqlExperiment.id.desc()))]


def add_requests(rows: list[dict[str, Any]]) -> list[TrafficRequest]:
    with session_scope() as s:
        objs = [SqlTrafficRequest(**r) for r in rows]
        s.add_all(objs)
        s.flush()
        return [from_row(TrafficRequest, o) for o in objs]


def set_feedback(request_id: int, feedback: str) -> TrafficRequest:
    if feedback not in FEEDBACK:
        raise InvalidInput(f"feedback must be one of {', '.join(FEEDBACK)}, not {feedback!r}")
    with session_scope() as s:
        row = s.get(SqlTrafficRequest, row_id(request_id, "request"))
        if row is None:
            raise NotFound(f"no request {request_id}")
        row.feedback, row.feedback_at = feedback, utcnow()
        s.flush()
        return from_row(TrafficRequest, row)


def list_requests(experiment_id: int, limit: int = 50) -> list[TrafficRequest]:
    """The newest requests first."""
    with session_scope() as s:
        q = (select(SqlTrafficRequest).where(SqlTrafficRequest.experiment_id == experiment_id)
             .order_by(SqlTrafficRequest.id.desc()).limit(limit))
        return [from_row(TrafficRequest, r) for r in s.scalars(q)]


def arm_counts(experiment_id: int) -> dict[str, dict[str, int]]:
    """Per arm: requests, requests with feedback, and those marked correct."""
    r = SqlTrafficRequest
    q = (select(r.arm, func.count(r.id), func.count(r.feedback), func.sum(case((r.feedback == "correct", 1), else_=0)))
         .where(r.experiment_id == experiment_id).group_by(r.arm))
    with session_scope() as s:
        return {arm: {"requests": n, "with_feedback": fb, "correct": int(ok or 0)} for arm, n, fb, ok in s.execute(q)}
