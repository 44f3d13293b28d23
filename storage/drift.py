"""Drift samples (what a model server saw, sampled per request) and the cached references they are compared with.

Samples are written in batches by the server's background writer (`jobs.serving.drift_sampling`) and read as a
window: the last N of a deployment (optionally of one canary arm), or those since a time.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Iterable

from sqlalchemy import delete, func, insert, select
from sqlalchemy.exc import IntegrityError

from storage.db import session_scope
from storage.entities import DriftSample, from_row
from storage.errors import InvalidInput
from storage.orm import SqlDriftReference, SqlDriftSample

SAMPLE_FIELDS = ("deployment_id", "variant_id", "arm", "sampled_at", "tokens", "unknown_token_rate", "label",
                 "confidence")
REFERENCE_KEYS = ("tokens", "unknown_token_rate", "label", "confidence")


def add_samples(rows: Iterable[dict[str, Any]]) -> int:
    """Insert sample rows (dicts with SAMPLE_FIELDS; `arm` and `unknown_token_rate` may be None) in one
    transaction; returns how many."""
    rows = [{name: row.get(name) for name in SAMPLE_FIELDS} for row in rows]
    # a bulk insert skips the session's length check (storage.portable): a label longer than its column, which
    # PostgreSQL would refuse mid-batch, is cut, since the sample is a statistic and the label's head identifies it
    limit = SqlDriftSample.__table__.c.label.type.length
    for row in rows:
        if isinstance(row["label"], str) and len(row["label"]) > limit:
            row["label"] = row["label"][:limit]
    if not rows:
        return 0
    with session_scope() as s:
        s.execute(insert(SqlDriftSample), rows)
    return len(rows)


def _where(q, deployment_id: int, arm: str | None, since: datetime | None):
    q = q.where(SqlDriftSample.deployment_id == deployment_id)
    if arm is not None:
        q = q.where(SqlDriftSample.arm == arm)
    if since is not None:
        q = q.where(SqlDriftSample.sampled_at >= since)
    return q


def window(deployment_id: int, last: int | None = None, since: datetime | None = None,
           arm: str | None = None) -> list[DriftSample]:
    """The deployment's samples, oldest first: the newest `last` of them (all when None), from `since` on."""
    if last is not None and (isinstance(last, bool) or not isinstance(last, int) or last < 1):
        raise InvalidInput(f"a window is a whole number of samples of at least 1, not {last!r}", inputs=["window"])
    with session_scope() as s:
        q = _where(select(SqlDriftSample), deployment_id, arm, since).order_by(SqlDriftSample.id.desc())
        if last is not None:
            q = q.limit(last)
        rows = [from_row(DriftSample, r) for r in s.scalars(q)]
    rows.reverse()
    return rows


def count(deployment_id: int, since: datetime | None = None, arm: str | None = None) -> int:
    with session_scope() as s:
        q = _where(select(func.count(SqlDriftSample.id)), deployment_id, arm, since)
        return int(s.scalar(q) or 0)


# ---- references -------------------------------------------------------------------------------------------------


def get_reference(variant_sha256: str, dataset_id: int, dataset_sha256: str, split: str) -> dict[str, list] | None:
    """The cached reference samples of this variant (by its files' hash) on this dataset split; None when there
    is none, or it was made from a dataset whose content has changed since."""
    with session_scope() as s:
        row = s.scalars(select(SqlDriftReference).where(
            SqlDriftReference.variant_sha256 == variant_sha256, SqlDriftReference.dataset_id == dataset_id,
            SqlDriftReference.split == split)).first()
        if row is None or row.dataset_sha256 != dataset_sha256:
            return None
        return {key: list(row.samples.get(key, [])) for key in REFERENCE_KEYS}


def put_reference(variant_sha256: str, dataset_id: int, dataset_sha256: str, split: str,
                  samples: dict[str, list]) -> None:
    """Store (or replace) the reference: lists of equal length under REFERENCE_KEYS."""
    lengths = {len(samples.get(key, [])) for key in REFERENCE_KEYS}
    if len(lengths) != 1:
        raise InvalidInput(f"a drift reference has one value per example under each of {', '.join(REFERENCE_KEYS)}")
    try:
        _replace_reference(variant_sha256, dataset_id, dataset_sha256, split, lengths.pop(), samples)
    except IntegrityError:
        # another process stored the same reference between our delete and insert (two views refreshed at once):
        # both ran the same variant on the same split, so theirs is as good as ours
        pass


def _replace_reference(variant_sha256: str, dataset_id: int, dataset_sha256: str, split: str, num_examples: int,
                       samples: dict[str, list]) -> None:
    with session_scope() as s:
        s.execute(delete(SqlDriftReference).where(
            SqlDriftReference.variant_sha256 == variant_sha256, SqlDriftReference.dataset_id == dataset_id,
            SqlDriftReference.split == split))
        s.add(SqlDriftReference(variant_sha256=variant_sha256, dataset_id=dataset_id, dataset_sha256=dataset_sha256,
                                split=split, num_examples=num_examples,
                                samples={key: list(samples[key]) for key in REFERENCE_KEYS}))
