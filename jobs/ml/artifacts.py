"""Writing variant directories: Hugging Face layout for PyTorch, Optimum's layout for ONNX."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from jobs.runtimes.base import VARIANT_META, read_variant_meta, write_variant_meta

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".onnx", ".onnx_data", ".data", ".engine", ".pt", ".pth",
                   ".xml")  # .xml: an OpenVINO IR's graph (its weights are the .bin beside it)


def fresh_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def copy_support_files(source: Path, target: Path) -> None:
    """Config, tokenizer and workbench.json: every top-level file that is not weights."""
    for item in Path(source).iterdir():
        if item.is_file() and not item.name.endswith(WEIGHT_SUFFIXES):
            shutil.copy2(item, target / item.name)


def save_pytorch_variant(model: Any, tokenizer: Any, target: Path, meta: dict[str, Any]) -> Path:
    """save_pretrained (safetensors) + tokenizer + workbench.json with what a loader must redo."""
    fresh_dir(target)
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    write_variant_meta(target, meta)
    return target


def inherited_meta(source: Path, **updates: Any) -> dict[str, Any]:
    """The parent's workbench.json facts that still hold for a child (max length, pruned structure), plus updates."""
    meta = {k: v for k, v in read_variant_meta(source).items() if k in ("max_length", "kept_heads")}
    meta.update({k: v for k, v in updates.items() if v is not None})
    return meta


__all__ = ["VARIANT_META", "copy_support_files", "fresh_dir", "inherited_meta", "save_pytorch_variant"]
