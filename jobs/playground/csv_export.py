"""Every CSV the product writes goes through here, because people open them in spreadsheets.

A cell that starts with `=`, `+`, `-`, `@`, a tab or a carriage return is read by Excel, LibreOffice and Google
Sheets as a formula (CSV injection: `=cmd|' /C calc'!A0`, `=HYPERLINK(...)`). Following OWASP, such a text cell
(a header included) gets a leading apostrophe, which spreadsheets show as text; numbers are written as numbers.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: Any) -> Any:
    """`value`, with an apostrophe in front if it is text a spreadsheet would run as a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def safe_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of `frame` with every text cell and column name made safe."""
    safe = frame.rename(columns=lambda c: safe_cell(str(c)))
    for column in safe.columns:
        if not pd.api.types.is_numeric_dtype(safe[column]) and not pd.api.types.is_bool_dtype(safe[column]):
            safe[column] = safe[column].map(safe_cell)
    return safe


def write_frame(frame: pd.DataFrame, path: Path) -> Path:
    """Write `frame` as CSV (no index) with formula-looking cells neutralised."""
    safe_frame(frame).to_csv(path, index=False)
    return path


def rows_text(rows: Iterable[dict[str, Any]]) -> str:
    """Dicts as CSV text (the first row's keys are the header), formula-looking cells neutralised."""
    rows = list(rows)
    out = io.StringIO()
    if rows:
        fields = list(rows[0])
        writer = csv.writer(out)
        writer.writerow([safe_cell(str(f)) for f in fields])
        for row in rows:
            writer.writerow([safe_cell(row.get(f)) for f in fields])
    return out.getvalue()
