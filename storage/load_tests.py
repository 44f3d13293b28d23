"""Load-test rows (one per concurrency level of a `loadtest` job): added in the job's final transaction, listed
for the Deploy and Compare tabs."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.db import session_scope
from storage.entities import LoadTest, from_row
from storage.orm import SqlLoadTest


def add_load_tests(rows: list[dict[str, Any]], session: Session | None = None) -> list[LoadTest]:
    """New rows; pass `session` to make them part of a larger transaction (a job's final commit)."""
    if session is None:
        with session_scope() as s:
            return add_load_tests(rows, session=s)
    objs = [SqlLoadTest(**r) for r in rows]
    session.add_all(objs)
    session.flush()
    return [from_row(LoadTest, o) for o in objs]


def list_load_tests(*, deployment_id: int | None = None, variant_ids: list[int] | None = None,
                    job_id: int | None = None, fingerprint_hash: str | None = None) -> list[LoadTest]:
    """Oldest first; `variant_ids` matches the stable variant (a canary's rows are found through its deployment)."""
    with session_scope() as s:
        q = select(SqlLoadTest).order_by(SqlLoadTest.id)
        if deployment_id is not None:
            q = q.where(SqlLoadTest.deployment_id == deployment_id)
        if variant_ids is not None:
            q = q.where(SqlLoadTest.variant_id.in_(variant_ids))
        if job_id is not None:
            q = q.where(SqlLoadTest.job_id == job_id)
        if fingerprint_hash is not None:
            q = q.where(SqlLoadTest.fingerprint_hash == fingerprint_hash)
        return [from_row(LoadTest, r) for r in s.scalars(q)]
