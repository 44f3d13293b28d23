"""`build-tensorrt`: compile an ONNX variant into a TensorRT engine (fp16, int8 or fp32) for one GPU model.

The engine is tied to the TensorRT version and GPU model it was built on; the new variant holds `model.engine`
plus the parent's config, tokenizer and workbench.json (with the engine's shape profile), so the TensorRT
predictor can tokenize and check batches against the profile.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from jobs.runner.context import JobContext, JobResult
from jobs.runner.registry import register, takes
from jobs.runtimes.base import read_variant_meta, write_variant_meta
from jobs.runtimes.tensorrt_runtime import availability
from storage.errors import InvalidInput

MAX_SEQ_LIMIT = 512
ONNX_SUFFIXES = (".onnx", ".onnx.data", ".onnx_data")
SMOKE_TEXTS = ("This works well.", "A second, slightly longer sentence to check the engine end to end.")


@dataclass(frozen=True)
class BuildTensorRTParams:
    precision: Literal["fp16", "int8", "fp32"] = field(
        default="fp16",
        metadata={"help": "fp16: fast, near-fp32 accuracy; int8: needs an ONNX variant quantized with ort-static-int8; "
                          "fp32: reference accuracy"},
    )
    min_batch: int = field(default=1, metadata={"help": "smallest batch size the engine accepts"})
    opt_batch: int = field(default=8, metadata={"help": "batch size TensorRT tunes the engine for"})
    max_batch: int = field(default=32, metadata={"help": "largest batch size the engine accepts"})
    min_seq: int = field(default=1, metadata={"help": "shortest sequence (tokens) the engine accepts"})
    opt_seq: int = field(default=128, metadata={"help": "sequence length TensorRT tunes the engine for"})
    max_seq: int = field(
        default=128, metadata={"help": f"longest sequence the engine accepts (at most {MAX_SEQ_LIMIT})"}
    )
    workspace_gb: float = field(default=4.0, metadata={"help": "GPU memory (GB) the builder may use for tactics"})

    def __post_init__(self):
        for what in ("batch", "seq"):
            lo, opt, hi = (getattr(self, f"{k}_{what}") for k in ("min", "opt", "max"))
            if not 1 <= lo <= opt <= hi:
                raise ValueError(
                    f"the {what} profile needs 1 <= min_{what} <= opt_{what} <= max_{what}, got min_{what}={lo}, "
                    f"opt_{what}={opt}, max_{what}={hi}: raise opt_{what}/max_{what} or lower min_{what}"
                )
        if self.max_seq > MAX_SEQ_LIMIT:
            raise ValueError(f"max_seq={self.max_seq} is too long: use max_seq <= {MAX_SEQ_LIMIT}")
        if not self.workspace_gb > 0:
            raise ValueError(f"workspace_gb must be > 0, got {self.workspace_gb}: use e.g. 4")


def _onnx_input_names(onnx_path: Path) -> list[str]:
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    initializers = {t.name for t in graph.initializer}
    return [i.name for i in graph.input if i.name not in initializers]


def _copy_non_onnx(src: Path, dst: Path) -> list[str]:
    copied = []
    for path in sorted(src.rglob("*")):
        if not path.is_file() or path.name.endswith(ONNX_SUFFIXES):
            continue
        rel = path.relative_to(src)
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dst / rel)
        copied.append(str(rel))
    return copied


@register(
    "build-tensorrt",
    BuildTensorRTParams,
    summary="Build a TensorRT engine (fp16 / int8) from an ONNX variant",
    needs_variant=True,
    device="cuda",
    available=availability,
    output_runtime=takes("build-tensorrt", ("onnxruntime",), "tensorrt"),
    progress_weight=2.0,  # an engine build tries kernel tactics for minutes
)
def run(params: BuildTensorRTParams, ctx: JobContext) -> JobResult:
    from jobs.runtimes.tensorrt_runtime import ENGINE_FILE, TensorRTPredictor, availability, build_engine

    variant = ctx.require_variant()
    if variant.runtime != "onnxruntime":
        raise InvalidInput("build-tensorrt needs an ONNX variant; export one with export-onnx first")
    ok, reason = availability()
    if not ok:
        raise InvalidInput(reason)
    parent_dir = Path(variant.artifact_dir)
    onnx_path = parent_dir / "model.onnx"
    if not onnx_path.exists():
        raise InvalidInput(f"variant {variant.id} has no model.onnx; export one with export-onnx first")
    if (parent_dir / "config.json").exists():
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(parent_dir, trust_remote_code=False, local_files_only=True)
        positions = getattr(config, "max_position_embeddings", None)
        if positions and params.max_seq > positions:
            raise InvalidInput(f"max_seq={params.max_seq} is longer than this model's {positions} positions: "
                               f"use max_seq <= {positions}")

    out_dir = ctx.work_dir / "engine"
    if out_dir.exists():  # a retried attempt starts clean
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    ctx.progress(0.02, "copying config and tokenizer")
    copied = _copy_non_onnx(parent_dir, out_dir)
    input_names = _onnx_input_names(onnx_path)
    ctx.log(f"copied {', '.join(copied) or 'nothing'}; ONNX inputs: {', '.join(input_names)}")
    ctx.check_cancelled()

    min_shape = (params.min_batch, params.min_seq)
    opt_shape = (params.opt_batch, params.opt_seq)
    max_shape = (params.max_batch, params.max_seq)
    ctx.progress(0.05, f"building the {params.precision} TensorRT engine (this can take minutes)")

    def keep_going() -> bool:
        ctx.check_cancelled()  # JobCancelled stops the builder, and build_engine raises it once the builder returns
        return True

    try:
        facts = build_engine(
            onnx_path,
            out_dir / ENGINE_FILE,
            precision=params.precision,
            input_names=input_names,
            min_shape=min_shape,
            opt_shape=opt_shape,
            max_shape=max_shape,
            workspace_gb=params.workspace_gb,
            log=ctx.log,
            keep_going=keep_going,
        )
    except ValueError as exc:  # the input cannot be built as asked (no Q/DQ nodes, wrong inputs): the user's to fix
        raise InvalidInput(str(exc)) from None
    except RuntimeError:
        ctx.check_cancelled()  # a build stopped by cancellation ends as cancelled, not failed
        raise
    ctx.check_cancelled()

    ctx.progress(0.85, "recording the engine's shape profile")
    meta = read_variant_meta(out_dir)
    meta["trt_profile"] = {"min": list(min_shape), "opt": list(opt_shape), "max": list(max_shape)}
    meta["max_length"] = params.max_seq
    write_variant_meta(out_dir, meta)

    ctx.progress(0.9, "smoke-testing the engine")
    predictor = TensorRTPredictor(out_dir, device="cuda")
    try:
        logits = predictor.predict_encoded(predictor.encode(list(SMOKE_TEXTS)))
    finally:
        predictor.close()
    if logits.shape != (len(SMOKE_TEXTS), len(predictor.labels)):
        raise RuntimeError(f"the engine returned logits of shape {logits.shape}, expected "
                           f"{(len(SMOKE_TEXTS), len(predictor.labels))}")
    if not np.all(np.isfinite(logits)):
        raise RuntimeError(
            f"the {params.precision} engine returned NaN/inf logits on a smoke test"
            + ("; fp16 overflowed: build with precision fp32" if params.precision == "fp16" else "")
        )
    ctx.log(f"smoke test logits: {np.round(logits, 4).tolist()}")

    info = {
        **facts,
        "input_variant_id": variant.id,
        "note": f"runs only with TensorRT {facts['tensorrt_version']} on a {facts['gpu']}",
    }
    ctx.progress(0.97, "saving the engine variant")
    return ctx.output_variant(
        out_dir,
        runtime="tensorrt",
        precision=params.precision,
        step=f"tensorrt-{params.precision}",
        info=info,
        result={**facts, "smoke_logits": np.round(logits, 4).tolist()},
    )
