"""`truncate`: the same model, reading fewer tokens per text. A variant of its own, not a load option, because a
shorter maximum length changes both accuracy (the end of long texts is cut) and speed on real traffic (fewer tokens
per request), and both must be measured and compared like any other step's.

The weights are not touched: the new variant's files are hard links to its parent's (a copy where the artifact
store is on another filesystem), and only workbench.json's `max_length` changes, which every predictor, the
benchmark's real traffic, the playground, the export bundle and a served endpoint read. On a fixed batch x length
grid cell it changes nothing (the cell says the length), so the search offers it only for real traffic.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobs.ml.artifacts import fresh_dir
from jobs.runner.context import JobContext, JobResult
from jobs.runner.registry import register
from jobs.runtimes.base import (
    VARIANT_META,
    capped_max_length,
    load_tokenizer,
    read_variant_meta,
    write_variant_meta,
)
from storage.errors import InvalidInput

MIN_TOKENS = 8  # [CLS], [SEP] and a few words: below this a text classifier reads next to nothing


@dataclass(frozen=True)
class TruncateParams:
    max_length: int = field(default=0, metadata={"help": "tokens per text (at least 8); 0: use fraction"})
    fraction: float = field(default=0.0, metadata={
        "help": "the variant's own maximum length times this (0-1), rounded up to a multiple of 8; 0: use max_length"})

    def __post_init__(self) -> None:
        if bool(self.max_length) == bool(self.fraction):
            raise ValueError("give exactly one of max_length (tokens) or fraction (of the variant's own length)")
        if self.max_length and not MIN_TOKENS <= self.max_length <= 512:
            raise ValueError(f"max_length must be between {MIN_TOKENS} and 512 tokens, got {self.max_length}")
        if self.fraction and not 0 < self.fraction < 1:
            raise ValueError(f"fraction must be between 0 and 1 (exclusive), got {self.fraction}")


def own_max_length(model_dir: Path) -> int:
    """The length the variant reads today: its workbench.json's, capped by its positions and its tokenizer's limit,
    as a predictor loads it (jobs.runtimes.base.Predictor)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=False, local_files_only=True)
    return capped_max_length(read_variant_meta(model_dir).get("max_length"), config, load_tokenizer(model_dir))


def new_length(params: TruncateParams, own: int) -> int:
    """The truncated length; InvalidInput when it would not be shorter than `own` (a variant identical to its
    parent measured twice would only add noise to the comparison)."""
    wanted = params.max_length or max(MIN_TOKENS, -(-int(own * params.fraction) // 8) * 8)
    if wanted >= own:
        raise InvalidInput(f"this variant already reads at most {own} tokens per text; truncating to {wanted} "
                           "would change nothing", inputs=("max_length", "fraction"))
    return wanted


def link_tree(source: Path, target: Path, skip: str) -> None:
    """`source`'s files under `target`, hard-linked (artifacts are never written after they are committed, so a
    link is as safe as a copy and costs no space); copied where a link cannot cross filesystems."""
    for root, _, names in os.walk(source):
        relative = Path(root).relative_to(source)
        (target / relative).mkdir(parents=True, exist_ok=True)
        for name in names:
            if relative == Path(".") and name == skip:
                continue
            try:
                os.link(Path(root) / name, target / relative / name)
            except OSError:
                shutil.copy2(Path(root) / name, target / relative / name)


@register("truncate", TruncateParams,
          summary="Read fewer tokens per text (a shorter maximum length; weights unchanged, files shared)",
          output_runtime=lambda _params, runtime: runtime)
def run(params: TruncateParams, ctx: JobContext) -> JobResult:
    variant = ctx.require_variant()
    source = Path(variant.artifact_dir)
    own = own_max_length(source)
    length = new_length(params, own)
    out = fresh_dir(ctx.work_dir / "truncated")
    link_tree(source, out, skip=VARIANT_META)
    write_variant_meta(out, {**read_variant_meta(source), "max_length": length})
    facts: dict[str, Any] = {"from_tokens": own, "to_tokens": length}
    ctx.log(f"variant {variant.id} reads at most {length} tokens per text (was {own}); weights unchanged")
    return ctx.output_variant(out, runtime=variant.runtime, precision=variant.precision, step=f"max{length}",
                              info={"truncation": facts}, result=facts)
