"""Deployments (model servers started for variants): create, find, list and update, returning entities."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select, update

from storage.catalog import row_id
from storage.db import session_scope
from storage.entities import Deployment, from_row
from storage.errors import InvalidInput, NotFound
from storage.orm import SqlDeployment

STATUSES = ("starting", "ready", "crashed", "stopped")
RUNNING = ("starting", "ready")  # a server process is (or should be) alive


def create_deployment(**fields_: Any) -> Deployment:
    with session_scope() as s:
        row = SqlDeployment(**fields_)
        s.add(row)
        s.flush()
        return from_row(Deployment, row)


def get_deployment(ref: int | str) -> Deployment:
    with session_scope() as s:
        row = s.get(SqlDeployment, row_id(ref, "deployment"))
        if row is None:
            raise NotFound(f"no deployment {str(ref).strip()!r}", what="deployment")
        return from_row(Deployment, row)


def list_deployments(statuses: Iterable[str] | None = None) -> list[Deployment]:
    """Newest first."""
    with session_scope() as s:
        q = select(SqlDeployment).order_by(SqlDeployment.id.desc())
        if statuses is not None:
            q = q.where(SqlDeployment.status.in_(list(statuses)))
        return [from_row(Deployment, r) for r in s.scalars(q)]


def update_deployment(deployment_id: int, *, expect: Iterable[str] | None = None, **changes: Any) -> Deployment | None:
    """Apply `changes`; with `expect`, only while the status is one of those (compare-and-set), so a refresh that
    found the process gone cannot overwrite a `stopped` written meanwhile by a stop. None when it did not apply."""
    if "status" in changes and changes["status"] not in STATUSES:
        raise InvalidInput(f"a deployment's status is one of {', '.join(STATUSES)}, not {changes['status']!r}")
    with session_scope() as s:
        q = update(SqlDeployment).where(SqlDeployment.id == deployment_id).values(**changes)
        if expect is not None:
            q = q.where(SqlDeployment.status.in_(list(expect)))
        if s.execute(q).rowcount == 0:
            return None
        return from_row(Deployment, s.get(SqlDeployment, deployment_id))
