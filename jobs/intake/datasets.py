"""Dataset intake: built-ins or uploaded CSV / JSONL / Parquet, validated, split, stored as Parquet.

Every check runs before anything is stored; a refused file leaves no row and no file behind.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from jobs.intake.builtin import builtin_dataset
from storage import catalog, files, settings
from storage.entities import Dataset
from storage.errors import InvalidInput
from storage.orm import SqlDataset

SPLITS = ("train", "validation", "test")
DEFAULT_FRACTIONS = {"train": 0.8, "validation": 0.1, "test": 0.1}
MIN_EXAMPLES_PER_CLASS = 10  # so a stratified 80/10/10 split puts at least one of each class in every split
MAX_CLASSES = 100
TEXT_GUESSES = ("text", "sentence", "content", "review", "document", "body", "tweet")
LABEL_GUESSES = ("label", "labels", "sentiment", "category", "class", "target", "topic")
SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet", ".pq": "parquet"}


@dataclass(frozen=True)
class DatasetRequest:
    source: str  # "builtin:<name>" or a file path
    name: str | None = None
    text_column: str | None = None
    label_column: str | None = None
    seed: int = 42


def read_table(path: Path, limit_setting: str = "WORKBENCH_MAX_DATASET_MB") -> pd.DataFrame:
    """Read an uploaded CSV / TSV / JSONL / Parquet file through pandas, with clear errors for bad input.

    `limit_setting` names the setting whose MiB the file may not exceed.
    """
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
    try:
        if fmt == "parquet":
            return pd.read_parquet(path)
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = raw[: exc.start].count(b"\n") + 1
            raise InvalidInput(
                f"{path.name} is not UTF-8 text (byte 0x{raw[exc.start]:02x} on line {line}); save it as UTF-8 and upload again"
            ) from None
        if fmt == "jsonl":
            return pd.read_json(io.StringIO(text), lines=True, dtype=False)
        return pd.read_csv(io.StringIO(text), sep="\t" if fmt == "tsv" else ",", dtype=str, keep_default_na=False)
    except InvalidInput:
        raise
    except (ValueError, pd.errors.ParserError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidInput(f"{path.name} could not be read as {fmt}: {first}") from None


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
    return pd.DataFrame({"text": text.to_numpy(), "label": label.to_numpy()}), text_col, label_col


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
            artifact_dir=str(artifact),
            sha256=sha,
        )
    except Exception:
        if created:
            files.remove_artifact(artifact)
        raise


def load_split(dataset: Dataset, split: str) -> pd.DataFrame:
    if split not in SPLITS:
        raise InvalidInput(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    return pd.read_parquet(Path(dataset.artifact_dir) / f"{split}.parquet")


def split_class_counts(dataset: Dataset) -> dict[str, dict[str, int]]:
    """Label counts per split, for the distribution chart."""
    return {
        split: {str(k): int(v) for k, v in load_split(dataset, split)["label"].value_counts().items()} for split in SPLITS
    }
