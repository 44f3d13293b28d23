"""Catalog rows with no files behind them, for tests (and benchmarks) of what is computed from rows alone."""

from __future__ import annotations

from typing import Any


def placeholder_model(name: str = "m", size_bytes: int = 1) -> tuple[Any, Any]:
    """A model and its original PyTorch variant; returns (model, original variant)."""
    from storage import catalog

    return catalog.create_model(name=name, source_kind="builtin", source="x", allow_pickle=False, variant=dict(
        name=f"{name} (original)", artifact_dir="/nonexistent", runtime="pytorch", precision="fp32", recipe={},
        files=[], sha256="root", size_bytes=size_bytes))


def placeholder_dataset(name: str = "d", labels: tuple[str, ...] = ("a", "b")) -> Any:
    from storage import catalog

    return catalog.create_dataset(name=name, source_kind="builtin", source="x", text_column="text",
                                  label_column="label", labels=list(labels), class_counts={}, num_rows=0,
                                  split_seed=42, split_fractions={}, split_sizes={}, artifact_dir="/nonexistent",
                                  sha256=name)
