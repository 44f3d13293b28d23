"""History of MLflow registered-model aliases moved from the workbench, so the last promote can be rolled back."""

from __future__ import annotations

from sqlalchemy import select

from storage.db import session_scope
from storage.entities import AliasEvent, from_row
from storage.orm import SqlAliasEvent


def record(tracking_uri: str, model: str, alias: str, action: str, version: str, previous: str | None) -> AliasEvent:
    with session_scope() as s:
        row = SqlAliasEvent(tracking_uri=tracking_uri, registered_model=model, alias=alias, action=action,
                            version=str(version), previous_version=None if previous is None else str(previous))
        s.add(row)
        s.flush()
        return from_row(AliasEvent, row)


def last_promote(tracking_uri: str, model: str, alias: str) -> AliasEvent | None:
    """The newest promote of this alias that no rollback has undone yet."""
    with session_scope() as s:
        row = s.scalars(
            select(SqlAliasEvent)
            .where(SqlAliasEvent.tracking_uri == tracking_uri, SqlAliasEvent.registered_model == model,
                   SqlAliasEvent.alias == alias, SqlAliasEvent.action == "promote", SqlAliasEvent.undone.is_(False))
            .order_by(SqlAliasEvent.id.desc())
        ).first()
        return None if row is None else from_row(AliasEvent, row)


def rolled_back(tracking_uri: str, promote_id: int, model: str, alias: str, version: str, previous: str) -> AliasEvent:
    """Mark the promote undone and record the rollback, in one transaction."""
    with session_scope() as s:
        s.get(SqlAliasEvent, promote_id).undone = True
        row = SqlAliasEvent(tracking_uri=tracking_uri, registered_model=model, alias=alias, action="rollback",
                            version=str(version), previous_version=str(previous))
        s.add(row)
        s.flush()
        return from_row(AliasEvent, row)


def history(tracking_uri: str, model: str | None = None, limit: int = 200) -> list[AliasEvent]:
    """Newest first."""
    with session_scope() as s:
        q = select(SqlAliasEvent).where(SqlAliasEvent.tracking_uri == tracking_uri)
        if model is not None:
            q = q.where(SqlAliasEvent.registered_model == model)
        return [from_row(AliasEvent, r) for r in s.scalars(q.order_by(SqlAliasEvent.id.desc()).limit(limit))]
