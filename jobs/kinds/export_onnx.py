"""`export-onnx`: a PyTorch variant to ONNX in Optimum's layout, checked by the ONNX checker and for parity.

The default exporter is TorchScript with eager attention: on torch 2.13 the dynamo exporter's graph breaks ONNX
Runtime's dynamic quantization (a shape-inference error) and neither SDPA graph gets the Attention fusion, while
eager + TorchScript fuses into EmbedLayerNormalization, Attention, BiasGelu and SkipLayerNormalization.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from jobs.ml.artifacts import copy_support_files, fresh_dir
from jobs.ml.data import split_examples
from jobs.runner.context import JobContext, JobResult
from jobs.runner.registry import register, takes
from jobs.runtimes.base import capped_max_length, read_variant_meta
from jobs.runtimes.ort_runtime import ONNX_FILE
from storage.errors import InvalidInput

FUSION_MODEL_TYPES = {"bert": "bert", "roberta": "bert", "xlm-roberta": "bert", "electra": "bert", "distilbert": "bert"}
ORT_LEVELS = {"basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}


@dataclass(frozen=True)
class ExportOnnxParams:
    opset: int = field(default=17, metadata={"help": "ONNX opset version (14-20)"})
    exporter: Literal["torchscript", "dynamo"] = field(default="torchscript", metadata={
        "help": "torchscript: graphs ONNX Runtime can fuse and quantize; dynamo: torch.export based"})
    dynamic_axes: bool = field(default=True, metadata={"help": "dynamic batch and sequence axes (off: fixed at the parity batch shape)"})
    fusion: bool = field(default=False, metadata={
        "help": "ONNX Runtime transformer fusion (Attention, SkipLayerNorm, Gelu); the graph still runs on any CPU"})
    optimization: Literal["none", "basic", "extended", "all"] = field(default="none", metadata={
        "help": "ONNX Runtime graph optimization level saved into the file ('all' may tie it to this CPU's kernels)"})
    parity_examples: int = field(default=64, metadata={"help": "dataset examples used to compare logits with the source"})
    tolerance: float = field(default=1e-3, metadata={"help": "fail the export when any logit differs by more than this"})

    def __post_init__(self) -> None:
        if not 14 <= self.opset <= 20:
            raise ValueError(f"opset={self.opset} is not supported here; use 14 to 20")
        if self.parity_examples < 1:
            raise ValueError("parity_examples must be at least 1: an export is never kept unchecked")
        if self.tolerance <= 0:
            raise ValueError(f"tolerance must be positive, got {self.tolerance}")


def _forward_names(model: Any, encoded: dict[str, Any]) -> list[str]:
    import inspect

    accepted = inspect.signature(model.forward).parameters
    return [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in encoded and n in accepted]


def export_graph(model: Any, sample: dict[str, Any], names: list[str], target: Path, params: ExportOnnxParams) -> None:
    import torch

    args = tuple(torch.from_numpy(sample[n]) for n in names)
    if params.exporter == "torchscript":
        axes = {n: {0: "batch", 1: "sequence"} for n in names} | {"logits": {0: "batch"}} if params.dynamic_axes else None
        torch.onnx.export(model, args, str(target), dynamo=False, input_names=names, output_names=["logits"],
                          dynamic_axes=axes, opset_version=params.opset, do_constant_folding=True)
        return

    class Logits(torch.nn.Module):  # the dynamo exporter needs plain tensor outputs
        def __init__(self, inner: Any):
            super().__init__()
            self.inner = inner

        def forward(self, *inputs: Any) -> Any:
            return self.inner(**dict(zip(names, inputs, strict=True))).logits

    shapes = None
    if params.dynamic_axes:
        batch, seq = torch.export.Dim("batch", min=1, max=4096), torch.export.Dim("sequence", min=2, max=512)
        shapes = tuple({0: batch, 1: seq} for _ in names)
    torch.onnx.export(Logits(model), args, str(target), dynamo=True, input_names=names, output_names=["logits"],
                      dynamic_shapes=shapes, opset_version=params.opset, external_data=False)


def fuse(path: Path, config: Any, pruned: bool, ctx: JobContext) -> dict[str, int]:
    from onnxruntime.transformers.optimizer import optimize_model

    fusion_type = FUSION_MODEL_TYPES.get(config.model_type)
    if fusion_type is None:
        raise InvalidInput(f"transformer fusion supports {', '.join(sorted(FUSION_MODEL_TYPES))}, not {config.model_type}")
    # pruned heads differ per layer, so let the optimizer read them from each Attention's weights
    heads, hidden = (0, 0) if pruned else (config.num_attention_heads, config.hidden_size)
    optimized = optimize_model(str(path), model_type=fusion_type, num_heads=heads, hidden_size=hidden, opt_level=0)
    stats = {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}
    optimized.save_model_to_file(str(path))
    ctx.log(f"fused operators: {stats}")
    return stats


def ort_optimize(path: Path, level: str) -> None:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, ORT_LEVELS[level])
    optimized = path.with_name("optimized.onnx")
    options.optimized_model_filepath = str(optimized)
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    optimized.replace(path)


def parity(source: Path, exported: Path, texts: list[str]) -> dict[str, Any]:
    """Logits of the exported graph against the source PyTorch model on the same encoded batch."""
    import numpy as np

    from jobs.runtimes.ort_runtime import OrtPredictor
    from jobs.runtimes.torch_runtime import TorchPredictor

    reference, candidate = TorchPredictor(source), OrtPredictor(exported)
    max_diff, agree = 0.0, 0
    for i in range(0, len(texts), 16):
        batch = candidate.encode(texts[i : i + 16])
        ref = reference.predict_encoded({k: v for k, v in batch.items() if k in reference.input_names})
        got = candidate.predict_encoded(batch)
        max_diff = max(max_diff, float(np.abs(ref - got).max()))
        agree += int((ref.argmax(-1) == got.argmax(-1)).sum())
    return {"max_abs_diff": max_diff, "label_agreement": agree / len(texts), "examples": len(texts)}


@register("export-onnx", ExportOnnxParams, summary="Export to ONNX (Optimum layout), checked for parity with the source",
          output_runtime=takes("export-onnx", ("pytorch",), "onnxruntime"), quick_params={"parity_examples": 16})
def run(params: ExportOnnxParams, ctx: JobContext) -> JobResult:
    import onnx
    from transformers import AutoConfig

    from jobs.runtimes.torch_runtime import is_classifier, is_plain_fp32, load_torch_model

    variant, dataset = ctx.require_variant(), ctx.require_dataset()
    source = Path(variant.artifact_dir)
    meta = read_variant_meta(source)
    if not is_plain_fp32(variant):
        raise InvalidInput(f"export-onnx needs an fp32 PyTorch variant; variant {variant.id} is {variant.runtime} {variant.precision}")
    config = AutoConfig.from_pretrained(source, trust_remote_code=False, local_files_only=True)
    if not is_classifier(config):
        raise InvalidInput(f"variant {variant.id} has no classification head to export: fine-tune it first")
    texts = split_examples(dataset, "validation", params.parity_examples).texts
    ctx.progress(0.05, "loading the model (eager attention, so ONNX Runtime can fuse it)")
    model = load_torch_model(source, attn_implementation="eager")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False, local_files_only=True)
    max_length = capped_max_length(meta.get("max_length"), config, tokenizer)
    encoded = {k: v.astype("int64") for k, v in tokenizer(texts[:2], padding=True, truncation=True, max_length=max_length,
                                                           return_tensors="np").items()}
    names = _forward_names(model, encoded)
    out = fresh_dir(ctx.work_dir / "onnx")
    copy_support_files(source, out)
    target = out / ONNX_FILE
    ctx.progress(0.2, f"exporting with the {params.exporter} exporter, opset {params.opset}")
    export_graph(model, encoded, names, target, params)
    del model
    ctx.check_cancelled()
    facts: dict[str, Any] = {"exporter": params.exporter, "opset": params.opset, "dynamic_axes": params.dynamic_axes}
    if params.fusion:
        ctx.progress(0.5, "fusing transformer operators")
        facts["fused_operators"] = fuse(target, config, bool(meta.get("kept_heads")), ctx)
    if params.optimization != "none":
        ctx.progress(0.6, f"ONNX Runtime graph optimization: {params.optimization}")
        ort_optimize(target, params.optimization)
        facts["optimization"] = params.optimization
    ctx.progress(0.7, "ONNX checker")
    onnx.checker.check_model(str(target))
    ctx.progress(0.75, f"parity check on {len(texts)} {dataset.name} validation examples")
    check = parity(source, out, texts)
    facts["parity"] = check
    ctx.log(f"parity: max |logit difference| {check['max_abs_diff']:.2e}, label agreement {check['label_agreement']:.4f}")
    if check["max_abs_diff"] > params.tolerance:
        raise InvalidInput(
            f"parity check failed: logits differ by up to {check['max_abs_diff']:.2e}, above the tolerance "
            f"{params.tolerance:.0e} (label agreement {check['label_agreement']:.2%}); the export was not kept"
        )
    step = "onnx" + ("-fused" if params.fusion else "") + ("" if params.optimization == "none" else f"-O{params.optimization}")
    return ctx.output_variant(out, runtime="onnxruntime", precision="fp32", step=step, info={"export": facts},
                              result=facts)
