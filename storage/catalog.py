"""Models, datasets, variants and evaluations: create, find and list, returning entities."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storage.db import session_scope
from storage.entities import Dataset, Evaluation, Measurement, Model, Variant, from_row
from storage.errors import Conflict, InvalidInput, NotFound
from storage.orm import SqlDataset, SqlEvaluation, SqlMeasurement, SqlModel, SqlVariant

# The largest id an INTEGER primary key holds on every database: PostgreSQL's is 32-bit (SQLite's 64-bit, but its
# ids count up from 1 just the same). A larger one names no row, and a server would refuse to compare with it.
MAX_ID = 2**31 - 1


def shown_ref(ref: Any, limit: int = 80) -> str:
    """A user's reference as quoted in an error: `repr`, and a very long one cut short."""
    text = str(ref).strip()
    return repr(text if len(text) <= limit else text[:limit] + "...")


def row_id(value: Any, what: str) -> int:
    """An id typed by a user (an int, or a string of ASCII digits) as an int; InvalidInput when it is not a whole
    number, NotFound when it is beyond any stored id (the database would overflow on it)."""
    text = str(value).strip()
    if isinstance(value, bool) or not (isinstance(value, int) or (text.isascii() and text.isdigit())):
        raise InvalidInput(f"a {what} id is a whole number, not {shown_ref(value)}")
    number = int(text)
    if not 0 <= number <= MAX_ID:
        raise NotFound(f"no {what} {shown_ref(value)}", what=what)
    return number


def by_ref(session: Session, orm_cls: type, ref: int | str, what: str):
    """Find a row by id (an int or a string of ASCII digits) or by its unique name."""
    ref_text = str(ref).strip()
    row = None
    is_id = ref_text.isascii() and ref_text.isdigit()  # "²" and "١" are digits to str.isdigit, not to int()
    if is_id and int(ref_text) <= MAX_ID:
        row = session.get(orm_cls, int(ref_text))
    if row is None and hasattr(orm_cls, "name") and not is_id:
        row = session.scalars(select(orm_cls).where(orm_cls.name == ref_text)).first()
    if row is None:
        raise NotFound(f"no {what} {shown_ref(ref_text)}", what=what)
    return row


def name_taken(orm_cls: type, name: str) -> bool:
    with session_scope() as s:
        return s.scalars(select(orm_cls.id).where(orm_cls.name == name)).first() is not None


# ---- models -------------------------------------------------------------------------------------------------


def create_model(*, name: str, source_kind: str, source: str, allow_pickle: bool, variant: dict[str, Any],
                 task: str = "text-classification") -> tuple[Model, Variant]:
    """A model row and its root variant, in one transaction. `task` names a task of jobs.tasks."""
    try:
        with session_scope() as s:
            model = SqlModel(name=name, source_kind=source_kind, source=source, allow_pickle=allow_pickle, info={},
                             task=task)
            s.add(model)
            s.flush()
            root = SqlVariant(model_id=model.id, parent_id=None, **variant)
            s.add(root)
            s.flush()
            return from_row(Model, model), from_row(Variant, root)
    except IntegrityError:
        raise Conflict(f"a model named {name!r} already exists; choose another name") from None


def get_model(ref: int | str) -> Model:
    with session_scope() as s:
        return from_row(Model, by_ref(s, SqlModel, ref, "model"))


def list_models() -> list[Model]:
    with session_scope() as s:
        return [from_row(Model, r) for r in s.scalars(select(SqlModel).order_by(SqlModel.id))]


def update_model_info(model_id: int, info: dict[str, Any], task: str | None = None) -> Model:
    """Merge `info` into the model's; `task` (when given) replaces its task, as inspecting its config found it."""
    with session_scope() as s:
        row = by_ref(s, SqlModel, model_id, "model")
        row.info = {**(row.info or {}), **info}
        if task is not None:
            row.task = task
        s.flush()
        return from_row(Model, row)


def root_variant(model_id: int) -> Variant:
    with session_scope() as s:
        row = s.scalars(
            select(SqlVariant).where(SqlVariant.model_id == model_id, SqlVariant.parent_id.is_(None)).order_by(SqlVariant.id)
        ).first()
        if row is None:
            raise NotFound(f"model {model_id} has no root variant")
        return from_row(Variant, row)


# ---- variants -----------------------------------------------------------------------------------------------


def create_variant(session: Session | None = None, **fields_: Any) -> Variant:
    """A new variant row; pass `session` to make it part of a larger transaction (a job's final commit)."""
    if session is not None:
        row = SqlVariant(**fields_)
        session.add(row)
        session.flush()
        return from_row(Variant, row)
    with session_scope() as s:
        return create_variant(session=s, **fields_)


def get_variant(ref: int | str) -> Variant:
    with session_scope() as s:
        return from_row(Variant, by_ref(s, SqlVariant, ref, "variant"))


def list_variants(model_id: int | None = None) -> list[Variant]:
    with session_scope() as s:
        q = select(SqlVariant).order_by(SqlVariant.id)
        if model_id is not None:
            q = q.where(SqlVariant.model_id == model_id)
        return [from_row(Variant, r) for r in s.scalars(q)]


# ---- datasets -----------------------------------------------------------------------------------------------


def create_dataset(**fields_: Any) -> Dataset:
    try:
        with session_scope() as s:
            row = SqlDataset(**fields_)
            s.add(row)
            s.flush()
            return from_row(Dataset, row)
    except IntegrityError:
        raise Conflict(f"a dataset named {fields_.get('name')!r} already exists; choose another name") from None


def get_dataset(ref: int | str) -> Dataset:
    with session_scope() as s:
        return from_row(Dataset, by_ref(s, SqlDataset, ref, "dataset"))


def list_datasets() -> list[Dataset]:
    with session_scope() as s:
        return [from_row(Dataset, r) for r in s.scalars(select(SqlDataset).order_by(SqlDataset.id))]


# ---- evaluations --------------------------------------------------------------------------------------------


def add_evaluation(session: Session | None = None, **fields_: Any) -> Evaluation:
    """A new evaluation row; pass `session` to make it part of a larger transaction (a job's final commit)."""
    if session is not None:
        row = SqlEvaluation(**fields_)
        session.add(row)
        session.flush()
        return from_row(Evaluation, row)
    with session_scope() as s:
        return add_evaluation(session=s, **fields_)


def list_evaluations(variant_id: int | None = None) -> list[Evaluation]:
    with session_scope() as s:
        q = select(SqlEvaluation).order_by(SqlEvaluation.id)
        if variant_id is not None:
            q = q.where(SqlEvaluation.variant_id == variant_id)
        return [from_row(Evaluation, r) for r in s.scalars(q)]


def latest_evaluations() -> dict[int, Evaluation]:
    """The newest evaluation of every variant, without the per-example predictions (for tables and charts)."""
    columns = [c for c in SqlEvaluation.__table__.columns if c.name != "predictions"]
    newest = select(func.max(SqlEvaluation.id)).group_by(SqlEvaluation.variant_id)
    with session_scope() as s:
        rows = s.execute(select(*columns).where(SqlEvaluation.id.in_(newest))).mappings()
        return {r["variant_id"]: Evaluation(**r, predictions=[]) for r in rows}


# ---- measurements -------------------------------------------------------------------------------------------


def add_measurements(rows: list[dict[str, Any]], session: Session | None = None) -> list[Measurement]:
    """New measurement rows; pass `session` to make them part of a larger transaction (a job's final commit)."""
    if session is not None:
        objs = [SqlMeasurement(**r) for r in rows]
        session.add_all(objs)
        session.flush()
        return [from_row(Measurement, o) for o in objs]
    with session_scope() as s:
        return add_measurements(rows, session=s)


def list_measurements(variant_ids: list[int] | None = None, fingerprint_hash: str | None = None,
                      dataset_id: int | None = None) -> list[Measurement]:
    with session_scope() as s:
        q = select(SqlMeasurement).order_by(SqlMeasurement.id)
        if variant_ids is not None:
            q = q.where(SqlMeasurement.variant_id.in_(variant_ids))
        if fingerprint_hash is not None:
            q = q.where(SqlMeasurement.fingerprint_hash == fingerprint_hash)
        if dataset_id is not None:
            q = q.where(SqlMeasurement.dataset_id == dataset_id)
        return [from_row(Measurement, r) for r in s.scalars(q)]
