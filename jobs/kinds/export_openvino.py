"""`export-openvino`: a PyTorch or ONNX fp32 variant to OpenVINO IR, checked for parity with its source.

fp32 and bf16 variants hold the same fp32 IR; bf16 is an inference hint given at load (INFERENCE_PRECISION_HINT,
recorded in workbench.json). It is a variant of its own rather than a load option because a variant is what gets
evaluated, benchmarked and compared: a bf16 run has its own accuracy and speed, and the choice must show on the
Pareto chart. It is made only where it runs natively (AMX or AVX-512 BF16 and OpenVINO saying so); elsewhere bf16
would be emulated, slower than fp32, and never what the variant claims. int8 is `quantize:method=nncf-int8` on
the fp32 OpenVINO variant.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from jobs.ml.artifacts import copy_support_files, fresh_dir, inherited_meta
from jobs.ml.data import split_examples
from jobs.runner.context import JobContext, JobResult
from jobs.runner.registry import register, takes
from jobs.runtimes.base import capped_max_length, read_variant_meta, write_variant_meta
from jobs.runtimes.openvino_runtime import HINTS, PRECISION_META
from jobs.runtimes.ort_runtime import ONNX_FILE
from storage.entities import Variant
from storage.errors import InvalidInput


@dataclass(frozen=True)
class ExportOpenVinoParams:
    precision: Literal["fp32", "bf16"] = field(default="fp32", metadata={
        "help": "fp32; bf16: the same fp32 IR run with a bf16 inference hint (only on CPUs with AMX or AVX-512 "
                "BF16); int8 is quantize:method=nncf-int8 on the fp32 variant"})
    parity_examples: int = field(default=64, metadata={"help": "dataset examples used to compare logits with the source"})
    tolerance: float = field(default=1e-3, metadata={
        "help": "fp32: fail the export when any logit differs from the source by more than this (bf16's rounding is "
                "judged by its evaluation instead)"})

    def __post_init__(self) -> None:
        if self.parity_examples < 1:
            raise ValueError("parity_examples must be at least 1: an export is never kept unchecked")
        if self.tolerance <= 0:
            raise ValueError(f"tolerance must be positive, got {self.tolerance}")


def _check_source(variant: Variant) -> str:
    """'pytorch' or 'onnx': what the IR is converted from; InvalidInput for a variant that is not plain fp32."""
    from jobs.runtimes.torch_runtime import is_plain_fp32

    source = Path(variant.artifact_dir)
    if variant.runtime == "pytorch" and is_plain_fp32(variant):
        return "pytorch"
    if (variant.runtime == "onnxruntime" and variant.precision == "fp32" and not read_variant_meta(source).get("quantization")
            and (source / ONNX_FILE).exists()):
        return "onnx"
    raise InvalidInput(f"export-openvino needs an fp32 PyTorch or ONNX variant; variant {variant.id} is {variant.runtime} "
                       f"{variant.precision} (for OpenVINO int8, export the fp32 variant, then quantize:method=nncf-int8)")


def advice(params: dict[str, Any], hardware: dict[str, Any]) -> list[str]:
    """bf16 where this machine has no native bf16 (the job refuses it; said before launch too)."""
    from jobs.runtimes.openvino_runtime import BF16_CPU_FLAGS

    if params.get("precision") == "bf16" and not BF16_CPU_FLAGS & set(hardware.get("cpu_flags", [])):
        return ["this CPU has no AMX or AVX-512 BF16: a bf16 OpenVINO variant cannot run natively here and the "
                "export will be refused; use fp32, or int8 through quantize:method=nncf-int8"]
    return []


def _convert(kind: str, source: Path, texts: list[str], ctx: JobContext) -> Any:
    from jobs.ml import openvino_ir

    if kind == "onnx":
        ctx.progress(0.2, "reading the ONNX graph into OpenVINO")
        try:
            return openvino_ir.from_onnx(source / ONNX_FILE)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
    from transformers import AutoConfig, AutoTokenizer

    from jobs.runtimes.torch_runtime import load_torch_model

    ctx.progress(0.1, "loading the PyTorch model")
    model = load_torch_model(source)
    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False, local_files_only=True)
    config = AutoConfig.from_pretrained(source, trust_remote_code=False, local_files_only=True)
    max_length = capped_max_length(read_variant_meta(source).get("max_length"), config, tokenizer)
    # two texts of different lengths, so the traced example has padding (the attention mask's path is taken)
    pair = [texts[0], f"{texts[0]} {texts[-1]}"]
    encoded = tokenizer(pair, padding=True, truncation=True, max_length=max_length, return_tensors="np")
    ctx.progress(0.2, "tracing the model into OpenVINO (dynamic batch and sequence)")
    return openvino_ir.from_torch(model, {k: v.astype("int64") for k, v in encoded.items()})


@register("export-openvino", ExportOpenVinoParams,
          summary="Export to OpenVINO IR (fp32, or bf16 where the CPU has it), checked for parity with the source",
          output_runtime=takes("export-openvino", ("pytorch", "onnxruntime"), "openvino"), advice=advice)
def run(params: ExportOpenVinoParams, ctx: JobContext) -> JobResult:
    from transformers import AutoConfig

    from jobs.ml import openvino_ir
    from jobs.runtimes import load_predictor
    from jobs.runtimes.openvino_runtime import OpenVinoPredictor, bf16_here, import_openvino
    from jobs.tasks import text_classification

    variant, dataset = ctx.require_variant(), ctx.require_dataset()
    kind = _check_source(variant)
    if params.precision == "bf16":
        ok, why = bf16_here()
        if not ok:
            raise InvalidInput(f"no bf16 OpenVINO variant made: {why}")
        ctx.log(f"bf16: {why}")
    source = Path(variant.artifact_dir)
    config = AutoConfig.from_pretrained(source, trust_remote_code=False, local_files_only=True)
    if not text_classification.has_head(config):
        raise InvalidInput(f"variant {variant.id} has no classification head to export: fine-tune it first")
    texts = split_examples(dataset, "validation", params.parity_examples).texts
    out = fresh_dir(ctx.work_dir / "openvino")
    copy_support_files(source, out)
    write_variant_meta(out, inherited_meta(source, **{PRECISION_META: HINTS[params.precision]}))
    model = _convert(kind, source, texts, ctx)
    ctx.check_cancelled()
    ctx.progress(0.5, "saving the IR (fp32 weights)")
    openvino_ir.save_ir(model, out)
    del model
    ctx.progress(0.6, f"parity check on {len(texts)} {dataset.name} validation examples")
    reference, candidate = load_predictor(variant), OpenVinoPredictor(out)
    try:
        check = openvino_ir.parity(reference, candidate, texts)
    finally:
        reference.close()
    facts: dict[str, Any] = {"source": kind, "openvino": import_openvino().__version__,
                             "inference_precision": candidate.inference_precision, "parity": check}
    candidate.close()
    ctx.log(f"parity ({candidate.inference_precision}): max |logit difference| {check['max_abs_diff']:.2e}, "
            f"label agreement {check['label_agreement']:.4f}")
    if params.precision == "fp32" and check["max_abs_diff"] > params.tolerance:
        raise InvalidInput(
            f"parity check failed: logits differ by up to {check['max_abs_diff']:.2e}, above the tolerance "
            f"{params.tolerance:.0e} (label agreement {check['label_agreement']:.2%}); the export was not kept")
    step = "openvino" + ("-bf16" if params.precision == "bf16" else "")
    return ctx.output_variant(out, runtime="openvino", precision=params.precision, step=step, info={"export": facts},
                              result=facts)
