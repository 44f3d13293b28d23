"""A deployment's rollout: its events (canary deployed, share changed, promoted, rolled back) and the feedback its
users gave on answers (correct / wrong), by arm and variant."""

from __future__ import annotations

from typing import Any

from sqlalchemy import case, func, select, update
from sqlalchemy.exc import IntegrityError

from storage.db import session_scope
from storage.entities import Deployment, DeploymentEvent, from_row
from storage.errors import NotFound
from storage.orm import SqlDeployment, SqlDeploymentEvent, SqlServedFeedback, utcnow

EVENT_KINDS = ("canary", "percent", "promote", "rollback", "auto_rollback")


def add_event(deployment_id: int, kind: str, message: str, details: dict[str, Any] | None = None,
              **deployment_changes: Any) -> DeploymentEvent:
    """Record an event and, in the same transaction, the deployment's changes it brought (a rollback clears the
    canary), so the record never says one thing and the history another."""
    if kind not in EVENT_KINDS:
        raise ValueError(f"a deployment event is one of {', '.join(EVENT_KINDS)}, not {kind!r}")
    with session_scope() as s:
        if s.get(SqlDeployment, deployment_id) is None:
            raise NotFound(f"no deployment '{deployment_id}'", what="deployment")
        if deployment_changes:
            s.execute(update(SqlDeployment).where(SqlDeployment.id == deployment_id).values(**deployment_changes))
        row = SqlDeploymentEvent(deployment_id=deployment_id, kind=kind, message=message, details=details or {})
        s.add(row)
        s.flush()
        return from_row(DeploymentEvent, row)


def list_events(deployment_id: int, limit: int = 100) -> list[DeploymentEvent]:
    """Newest first."""
    with session_scope() as s:
        q = (select(SqlDeploymentEvent).where(SqlDeploymentEvent.deployment_id == deployment_id)
             .order_by(SqlDeploymentEvent.id.desc()).limit(limit))
        return [from_row(DeploymentEvent, r) for r in s.scalars(q)]


def latest_events(deployment_ids: list[int]) -> dict[int, DeploymentEvent]:
    """The newest event of each of these deployments (those with one)."""
    if not deployment_ids:
        return {}
    with session_scope() as s:
        newest = (select(func.max(SqlDeploymentEvent.id))
                  .where(SqlDeploymentEvent.deployment_id.in_(deployment_ids))
                  .group_by(SqlDeploymentEvent.deployment_id))
        rows = s.scalars(select(SqlDeploymentEvent).where(SqlDeploymentEvent.id.in_(newest)))
        return {r.deployment_id: from_row(DeploymentEvent, r) for r in rows}


def record_feedback(deployment_id: int, request_id: str, arm: str, variant_id: int, label: str | None,
                    correct: bool) -> bool:
    """Store (or replace: the user changed their mind) the verdict on one answer. False when it replaced one."""
    try:
        return _put_feedback(deployment_id, request_id, arm, variant_id, label, correct)
    except IntegrityError:  # a verdict on the same answer was inserted meanwhile: this one replaces it
        return _put_feedback(deployment_id, request_id, arm, variant_id, label, correct)


def _put_feedback(deployment_id: int, request_id: str, arm: str, variant_id: int, label: str | None,
                  correct: bool) -> bool:
    with session_scope() as s:
        row = s.scalars(select(SqlServedFeedback).where(SqlServedFeedback.deployment_id == deployment_id,
                                                        SqlServedFeedback.request_id == request_id)).first()
        if row is not None:
            row.correct, row.created_at = bool(correct), utcnow()
            return False
        s.add(SqlServedFeedback(deployment_id=deployment_id, request_id=request_id, arm=arm, variant_id=variant_id,
                                label=label, correct=bool(correct)))
        return True


def feedback_counts(deployment_id: int) -> dict[int, dict[str, int]]:
    """variant id -> {"with_feedback", "correct"} over the deployment's life (a promoted canary keeps its own)."""
    with session_scope() as s:
        rows = s.execute(
            select(SqlServedFeedback.variant_id, func.count(),
                   func.sum(case((SqlServedFeedback.correct.is_(True), 1), else_=0)))
            .where(SqlServedFeedback.deployment_id == deployment_id).group_by(SqlServedFeedback.variant_id))
        return {int(v): {"with_feedback": int(n), "correct": int(c or 0)} for v, n, c in rows}


def deployment_after(deployment_id: int) -> Deployment:
    with session_scope() as s:
        row = s.get(SqlDeployment, deployment_id)
        if row is None:
            raise NotFound(f"no deployment '{deployment_id}'", what="deployment")
        return from_row(Deployment, row)
