"""Dataset intake: built-ins or uploaded CSV / JSONL / Parquet, validated, split, stored as Parquet.

Every check runs before anything is stored; a refused file leaves no row and no file behind.
"""

from __future__ import annotations

import codecs
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from jobs.intake.builtin import builtin_dataset
from storage import catalog, files, settings, shared_artifacts
from storage.entities import Dataset
from storage.errors import InvalidInput
from storage.orm import SqlDataset

if TYPE_CHECKING:  # pandas and pyarrow are imported where a table is read: they cost every CLI call
    import pandas as pd  # half a second, and most commands read none

SPLITS = ("train", "validation", "test")
DEFAULT_FRACTIONS = {"train": 0.8, "validation": 0.1, "test": 0.1}
MIN_EXAMPLES_PER_CLASS = 10  # so a stratified 80/10/10 split puts at least one of each class in every split
MAX_CLASSES = 100
TEXT_GUESSES = ("text", "sentence", "content", "review", "document", "body", "tweet")
LABEL_GUESSES = ("label", "labels", "sentiment", "category", "class", "target", "topic")
READ_CHUNK = 1 << 20
PEEK_BYTES = 1 << 20  # how much of a text file is read to offer its columns
SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet", ".pq": "parquet"}


@dataclass(frozen=True)
class DatasetRequest:
    source: str  # "builtin:<name>" or a file path
    name: str | None = None
    text_column: str | None = None
    label_column: str | None = None
    seed: int = 42


def _check_file(path: Path, limit_setting: str) -> str:
    """The format of an uploaded table file, after its type, existence and size are checked."""
    fmt = SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise InvalidInput(f"{path.name}: unsupported file type; upload .csv, .tsv, .jsonl or .parquet")
    if not path.is_file():
        raise InvalidInput(f"{path}: no such file")
    limit_mb = settings.get(limit_setting)
    size = path.stat().st_size
    if size > limit_mb << 20:
        raise InvalidInput(f"{path.name} is {size / (1 << 20):.1f} MiB; the limit is {limit_mb} MiB ({limit_setting})")
    if size == 0:
        raise InvalidInput(f"{path.name} is empty")
    return fmt


def _check_utf8(path: Path, head: int | None = None) -> None:
    """Refuse a file that is not UTF-8, naming the byte and its line; read in chunks (only the first `head` bytes
    when given), nothing is kept."""
    pending, lines, seen = b"", 0, 0
    with open(path, "rb") as f:
        while chunk := f.read(READ_CHUNK):
            data = pending + chunk
            seen += len(chunk)
            try:
                _, consumed = codecs.utf_8_decode(data, "strict", False)  # an unfinished character waits
            except UnicodeDecodeError as exc:
                line = lines + data[: exc.start].count(b"\n") + 1
                raise InvalidInput(
                    f"{path.name} is not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}); "
                    f"save it as UTF-8 and upload again"
                ) from None
            lines += data[:consumed].count(b"\n")
            pending = data[consumed:]
            if head is not None and seen >= head:
                return
    if pending:
        raise InvalidInput(f"{path.name} is not UTF-8 text (byte 0x{pending[0]:02x} on line {lines + 1}, cut short); "
                           f"save it as UTF-8 and upload again")


def _too_many_rows(path: Path, max_rows: int) -> InvalidInput:
    return InvalidInput(f"{path.name} has more than {max_rows:,} rows (WORKBENCH_MAX_DATASET_ROWS); upload a sample")


def _parquet_bounds(path: Path, limit_bytes: int, limit_setting: str, max_rows: int):
    """Check a Parquet file's footer before any data is read: rows, values and the declared uncompressed sizes.

    Returns the open ParquetFile and the paths of its byte-array columns.
    """
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    meta = pf.metadata
    if meta.num_rows > max_rows:
        raise _too_many_rows(path, max_rows)
    stored = values = 0
    schema = pf.schema
    widths = [schema.column(j).length or 0 for j in range(len(schema))]
    for i in range(meta.num_row_groups):
        group = meta.row_group(i)
        for j in range(group.num_columns):
            column = group.column(j)
            stored += max(column.total_uncompressed_size, column.num_values * widths[j])
            values += column.num_values
    too_big = (f"{path.name} decodes to more than {limit_bytes >> 20} MiB ({limit_setting}); "
               f"is it the right file? upload a sample")
    if stored > limit_bytes or values > limit_bytes // 8:  # every value costs a pandas cell at least 8 bytes
        raise InvalidInput(too_big)
    byte_arrays = [schema.column(j).path for j in range(len(schema)) if schema.column(j).physical_type == "BYTE_ARRAY"]
    return pf, byte_arrays, too_big


def _decoded_nbytes(array) -> int:
    """What an Arrow array takes once every dictionary is expanded (measured from the dictionary and its indices)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = array.type
    if pa.types.is_dictionary(kind):
        values = array.dictionary
        if pa.types.is_binary(values.type) or pa.types.is_string(values.type) or pa.types.is_large_string(values.type) \
                or pa.types.is_large_binary(values.type):
            per_value = pc.binary_length(values).take(array.indices)
            return int(pc.sum(per_value).as_py() or 0) + 4 * len(array)
        return (values.nbytes // max(len(values), 1) + 4) * len(array)
    if pa.types.is_struct(kind):
        return sum(_decoded_nbytes(field) for field in array.flatten())
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind) \
            or pa.types.is_map(kind):
        return 8 * len(array) + _decoded_nbytes(array.flatten())
    return array.nbytes


def _read_parquet(path: Path, limit_bytes: int, limit_setting: str, max_rows: int) -> pd.DataFrame:
    """Read a Parquet file with its expansion bounded: the footer is checked first; then byte-array columns are
    read as dictionaries (as small as they are stored), their expanded size is measured, and only a table under the
    limit is expanded into a DataFrame. Text that is not valid UTF-8 is kept as bytes (refused if used as text)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    _, byte_arrays, too_big = _parquet_bounds(path, limit_bytes, limit_setting, max_rows)
    table = pq.read_table(path, read_dictionary=byte_arrays)
    if len(table) > max_rows:
        raise _too_many_rows(path, max_rows)
    if sum(_decoded_nbytes(chunk) for column in table.columns for chunk in column.chunks) > limit_bytes:
        raise InvalidInput(too_big)
    columns = []
    for column in table.columns:
        kind = column.type.value_type if pa.types.is_dictionary(column.type) else column.type
        if pa.types.is_string(kind) or pa.types.is_binary(kind) or pa.types.is_large_string(kind) or pa.types.is_large_binary(kind):
            column = column.cast(kind)
            try:
                column = column.cast(pa.string())  # binary that is UTF-8 is text; validates UTF-8 text too
                column.validate(full=True)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                column = column.cast(pa.binary())  # not UTF-8: bytes, refused if chosen as text or label
        columns.append(column)
    return pa.table(columns, names=table.column_names).to_pandas()


def _check_cells(frame: pd.DataFrame, name: str) -> None:
    """Refuse a cell longer than WORKBENCH_MAX_TEXT_FIELD_CHARS, naming its data row and column."""
    import pandas as pd

    limit = settings.get("WORKBENCH_MAX_TEXT_FIELD_CHARS")
    for column in frame.columns:
        values = frame[column]
        if isinstance(values.dtype, pd.StringDtype):
            lengths = values.str.len()
        elif values.dtype == object:
            lengths = values.map(lambda v: len(v) if isinstance(v, (str, bytes)) else 0)
        else:
            continue
        over = (lengths.fillna(0) > limit).to_numpy(dtype=bool, na_value=False)
        if over.any():
            row = int(over.argmax())
            raise InvalidInput(
                f"{name}: data row {row + 1}, column {str(column)!r}, holds {int(lengths.iloc[row]):,} characters; "
                f"a cell may hold at most {limit:,} (WORKBENCH_MAX_TEXT_FIELD_CHARS)"
            )


def read_table(path: Path, limit_setting: str = "WORKBENCH_MAX_DATASET_MB") -> pd.DataFrame:
    """Read an uploaded CSV / TSV / JSONL / Parquet file through pandas, with clear errors for bad input.

    `limit_setting` names the setting whose MiB the file may not exceed, nor its cells decode to. Rows are bounded
    by WORKBENCH_MAX_DATASET_ROWS and cells by WORKBENCH_MAX_TEXT_FIELD_CHARS; both hold before the whole table is
    in memory (text files are parsed from disk up to one row past the limit; Parquet is checked from its footer and
    its dictionaries first).
    """
    import pandas as pd
    from pyarrow import ArrowException as ArrowError

    fmt = _check_file(path, limit_setting)
    limit_bytes = settings.get(limit_setting) << 20
    max_rows = settings.get("WORKBENCH_MAX_DATASET_ROWS")
    try:
        if fmt == "parquet":
            frame = _read_parquet(path, limit_bytes, limit_setting, max_rows)
        else:
            _check_utf8(path)
            if fmt == "jsonl":
                frame = pd.read_json(path, lines=True, dtype=False, nrows=max_rows + 1, encoding="utf-8-sig")
            else:
                frame = pd.read_csv(path, sep="\t" if fmt == "tsv" else ",", dtype=str, keep_default_na=False,
                                    nrows=max_rows + 1, encoding="utf-8-sig")
            if len(frame) > max_rows:
                raise _too_many_rows(path, max_rows)
    except InvalidInput:
        raise
    except (ValueError, pd.errors.ParserError, OSError, ArrowError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidInput(f"{path.name} could not be read as {fmt}: {first}") from None
    _check_cells(frame, path.name)
    return frame


def peek_columns(path: Path, limit_setting: str = "WORKBENCH_MAX_DATASET_MB") -> list[str]:
    """Column names of an uploaded table, from its head (or a Parquet footer): cheap, the rows are not read."""
    import pandas as pd
    from pyarrow import ArrowException as ArrowError

    fmt = _check_file(path, limit_setting)
    try:
        if fmt == "parquet":
            pf, _, _ = _parquet_bounds(path, settings.get(limit_setting) << 20, limit_setting,
                                       settings.get("WORKBENCH_MAX_DATASET_ROWS"))
            return [str(c) for c in pf.schema_arrow.names]
        _check_utf8(path, head=PEEK_BYTES)
        with open(path, "rb") as f:
            head = f.read(PEEK_BYTES)
        if len(head) == PEEK_BYTES:
            if b"\n" not in head:
                raise InvalidInput(f"{path.name}: its first line is longer than {PEEK_BYTES >> 20} MiB; is it the right file?")
            head = head[: head.rindex(b"\n") + 1]  # whole lines only
        text = head.decode("utf-8-sig", errors="ignore")
        if fmt == "jsonl":
            frame = pd.read_json(io.StringIO(text), lines=True, dtype=False)
        else:
            frame = pd.read_csv(io.StringIO(text), sep="\t" if fmt == "tsv" else ",", dtype=str, nrows=0)
    except InvalidInput:
        raise
    except (ValueError, pd.errors.ParserError, OSError, ArrowError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidInput(f"{path.name} could not be read as {fmt}: {first}") from None
    return [str(c) for c in frame.columns]


def _pick_column(df: pd.DataFrame, wanted: str | None, guesses: tuple[str, ...], role: str) -> str:
    columns = [str(c) for c in df.columns]
    if wanted:
        if wanted not in columns:
            raise InvalidInput(f"{role} column {wanted!r} not found; the file has: {', '.join(columns)}")
        return wanted
    lower = {c.lower(): c for c in columns}
    for guess in guesses:
        if guess in lower:
            return lower[guess]
    raise InvalidInput(f"no {role} column given and none guessed; pick one of: {', '.join(columns)}")


def validate_frame(
    df: pd.DataFrame, text_column: str | None, label_column: str | None
) -> tuple[pd.DataFrame, str, str]:
    """Map columns and check the data is usable for classification.

    Returns a frame with `text` and `label` (as strings) and the names of the columns they came from.
    """
    if df.empty:
        raise InvalidInput("the file has no rows")
    df.columns = [str(c) for c in df.columns]
    text_col = _pick_column(df, text_column, TEXT_GUESSES, "text")
    label_col = _pick_column(df, label_column, LABEL_GUESSES, "label")
    if text_col == label_col:
        raise InvalidInput(f"text and label must be different columns (both are {text_col!r})")

    text = df[text_col]
    label = df[label_col]
    refuse_bytes(text, "text", text_col)
    refuse_bytes(label, "label", label_col)
    if text.isna().all() or (text.astype(str).str.strip() == "").all():
        raise InvalidInput(f"text column {text_col!r} is empty")
    if label.isna().all() or (label.astype(str).str.strip() == "").all():
        raise InvalidInput(f"label column {label_col!r} is empty")

    text = text.where(text.notna(), "").astype(str)
    empty = text.str.strip() == ""
    if empty.any():
        rows = ", ".join(str(i + 1) for i in list(df.index[empty])[:5])
        raise InvalidInput(f"{int(empty.sum())} row(s) have an empty text (data rows {rows}...); remove or fill them")
    missing_label = label.isna() | (label.astype(str).str.strip() == "")
    if missing_label.any():
        rows = ", ".join(str(i + 1) for i in list(df.index[missing_label])[:5])
        raise InvalidInput(f"{int(missing_label.sum())} row(s) have no label (data rows {rows}...)")

    label = label.map(_label_text)
    counts = label.value_counts()
    if len(counts) < 2:
        raise InvalidInput(f"label column {label_col!r} has a single class ({counts.index[0]!r}); a classifier needs two or more")
    if len(counts) > MAX_CLASSES:
        raise InvalidInput(
            f"label column {label_col!r} has {len(counts)} distinct values (limit {MAX_CLASSES}); is it really the label column?"
        )
    rare = counts[counts < MIN_EXAMPLES_PER_CLASS]
    if not rare.empty:
        listed = ", ".join(f"{k!r} ({v})" for k, v in rare.items())
        raise InvalidInput(
            f"classes with too few examples: {listed}; each class needs at least {MIN_EXAMPLES_PER_CLASS} "
            f"so every split gets some"
        )
    import pandas as pd

    return pd.DataFrame({"text": text.to_numpy(), "label": label.to_numpy()}), text_col, label_col


def refuse_bytes(values: pd.Series, role: str, column: str) -> None:
    """Bytes reach here from a Parquet column that is not valid UTF-8; they cannot be text or labels."""
    if values.dtype != object:
        return
    is_bytes = values.map(lambda v: isinstance(v, (bytes, bytearray))).to_numpy(dtype=bool)
    if is_bytes.any():
        row = int(is_bytes.argmax())
        raise InvalidInput(f"{role} column {column!r} holds bytes that are not UTF-8 text ({int(is_bytes.sum()):,} "
                           f"row(s), the first is data row {row + 1}); store it as UTF-8 strings")


def _label_text(value) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def stratified_split(df: pd.DataFrame, seed: int, fractions: dict[str, float] = DEFAULT_FRACTIONS) -> dict[str, pd.DataFrame]:
    """Deterministic stratified train / validation / test split."""
    from sklearn.model_selection import train_test_split  # imported here: it costs every CLI call a second

    holdout = fractions["validation"] + fractions["test"]
    train, rest = train_test_split(df, test_size=holdout, stratify=df["label"], random_state=seed)
    validation, test = train_test_split(
        rest, test_size=fractions["test"] / holdout, stratify=rest["label"], random_state=seed
    )
    return {name: part.reset_index(drop=True) for name, part in zip(SPLITS, (train, validation, test), strict=True)}


def add_dataset(request: DatasetRequest) -> Dataset:
    if not 0 <= request.seed < 2**32:
        raise InvalidInput(f"split seed must be between 0 and {2**32 - 1}, not {request.seed}")
    if request.source.startswith("builtin:"):
        builtin = builtin_dataset(request.source.removeprefix("builtin:"))
        source_kind, source, default_name = "builtin", request.source, builtin.name
        raw = builtin.frame()
    else:
        path = Path(request.source).expanduser()
        source_kind, source, default_name = "upload", path.name, path.stem
        raw = read_table(path)
    name = (request.name or default_name).strip()
    if not name:
        raise InvalidInput("the dataset needs a name")
    if catalog.name_taken(SqlDataset, name):
        raise InvalidInput(f"a dataset named {name!r} already exists; choose another name")

    frame, text_column, label_column = validate_frame(raw, request.text_column, request.label_column)
    splits = stratified_split(frame, request.seed)

    with files.staging("dataset") as stage:
        for split, part in splits.items():
            part.to_parquet(stage / f"{split}.parquet", index=False)
        meta = {"text_column": text_column, "label_column": label_column, "seed": request.seed, "fractions": DEFAULT_FRACTIONS}
        (stage / "split.json").write_text(json.dumps(meta, indent=2))
        sha = files.manifest_sha256(files.manifest(stage))
        artifact, created = files.commit_dir(stage, "datasets", sha)
    counts = frame["label"].value_counts()
    try:
        return catalog.create_dataset(
            name=name,
            source_kind=source_kind,
            source=source,
            text_column=text_column,
            label_column=label_column,
            labels=sorted(counts.index.tolist()),
            class_counts={str(k): int(v) for k, v in counts.items()},
            num_rows=len(frame),
            split_seed=request.seed,
            split_fractions=DEFAULT_FRACTIONS,
            split_sizes={k: len(v) for k, v in splits.items()},
            artifact_dir=shared_artifacts.key("datasets", sha),  # found by kind and sha256 on every node
            sha256=sha,
        )
    except Exception:
        if created:
            files.remove_artifact(artifact)
        raise


def load_split(dataset: Dataset, split: str) -> pd.DataFrame:
    import pandas as pd

    if split not in SPLITS:
        raise InvalidInput(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    return pd.read_parquet(Path(dataset.artifact_dir) / f"{split}.parquet")


def split_class_counts(dataset: Dataset) -> dict[str, dict[str, int]]:
    """Label counts per split, for the distribution chart."""
    return {
        split: {str(k): int(v) for k, v in load_split(dataset, split)["label"].value_counts().items()} for split in SPLITS
    }
