"""Where SQLite and a database server (PostgreSQL) would treat the same value differently, the store decides once.

- **String lengths.** SQLite keeps a string of any length in a `VARCHAR(200)` column; PostgreSQL refuses it with a
  driver error in the middle of a transaction. Every session checks the `String(n)` columns of what it is about to
  write and refuses an over-long value with one line, on every database alike.
- **Non-finite floats in JSON.** Python writes NaN and ±Infinity into JSON as bare `NaN` / `Infinity`, which SQLite
  keeps as text but PostgreSQL's `json` type refuses (they are not JSON). For a database server they are written as
  `null` (a diverged training's loss is "no number"), so a job that recorded one still commits its result.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from sqlalchemy import String, inspect
from sqlalchemy.orm import Session

from storage.errors import InvalidInput


def _what(obj: Any) -> str:
    """`SqlTrafficRequest` -> "traffic request": the kind of record, as a message names it."""
    name = type(obj).__name__.removeprefix("Sql")
    return re.sub(r"(?<!^)(?=[A-Z])", " ", name).lower()


def check_string_lengths(session: Session, _context, _instances) -> None:
    """A `before_flush` hook: refuse any new row, or changed value, whose text is longer than its column holds.

    Only what is being written is checked: a row SQLite kept before this check existed can still be updated.
    """
    for obj in [*session.new, *session.dirty]:
        state = inspect(obj)
        loaded = state.dict  # only what is loaded: reading an expired attribute here would query mid-flush
        for attr in state.mapper.column_attrs:
            column_type = attr.columns[0].type
            limit = column_type.length if isinstance(column_type, String) else None
            value = loaded.get(attr.key)
            if not limit or not isinstance(value, str) or len(value) <= limit:
                continue
            if state.pending or state.attrs[attr.key].history.has_changes():
                raise InvalidInput(f"a {_what(obj)}'s {attr.key.replace('_', ' ')} is {len(value):,} characters "
                                   f"long; at most {limit} are kept")


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def server_json(value: Any) -> str:
    """JSON text a database server's `json` column accepts: non-finite floats become null (see module doc)."""
    try:
        return json.dumps(value, allow_nan=False)  # the usual case, in one pass
    except ValueError:
        return json.dumps(_finite(value), allow_nan=False)
