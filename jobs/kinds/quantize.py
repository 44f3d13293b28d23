"""`quantize`: PyTorch dynamic int8, bf16 / fp16 weights, ONNX Runtime dynamic and static (calibrated) int8, and
OpenVINO int8 through NNCF post-training quantization (optionally in its accuracy-control mode)."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal

from jobs.ml.artifacts import copy_support_files, fresh_dir, inherited_meta, save_pytorch_variant
from jobs.ml.data import split_examples
from jobs.runner.context import JobContext, JobResult
from jobs.runner.registry import register
from jobs.runtimes.base import capped_max_length, read_variant_meta, write_variant_meta
from jobs.runtimes.devices import detect
from jobs.runtimes.ort_runtime import ONNX_FILE
from storage.entities import Variant
from storage.errors import InvalidInput

Method = Literal["torch-dynamic-int8", "bf16", "fp16", "ort-dynamic-int8", "ort-static-int8", "nncf-int8"]
ONNX_METHODS = ("ort-dynamic-int8", "ort-static-int8")
OPENVINO_METHODS = ("nncf-int8",)
EXPORT_HINTS = {"onnxruntime": "export it with export-onnx first", "openvino": "export it with export-openvino first"}
# Nodes whose int8 activations wreck BERT accuracy under static quantization: normalisation statistics, GELU's
# erf, softmax. Op types for fused graphs; name fragments for the decomposed ops of an unfused export.
SENSITIVE_OP_TYPES = frozenset({
    "LayerNormalization", "SkipLayerNormalization", "EmbedLayerNormalization", "SimplifiedLayerNormalization",
    "Gelu", "BiasGelu", "FastGelu", "Erf", "Softmax", "Pow", "Sqrt", "ReduceMean", "Div", "Tanh",
})
SENSITIVE_NAME_PARTS = ("layernorm", "intermediate_act_fn", "gelu", "softmax")
# CPU instructions with an int8 dot product that accumulates in 32 bits: with them full 8-bit weights are safe.
# Without them (AVX2 only) ONNX Runtime's u8s8 kernels use VPMADDUBSW, whose 16-bit pair sums can saturate.
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})


@dataclass(frozen=True)
class QuantizeParams:
    method: Method = field(default="ort-dynamic-int8", metadata={
        "help": "torch-dynamic-int8 / bf16 / fp16 take a PyTorch variant; ort-* take an ONNX variant; nncf-int8 "
                "takes an fp32 OpenVINO variant"})
    per_channel: bool = field(default=False, metadata={"help": "ONNX Runtime: one scale per output channel of each weight"})
    op_types: tuple[str, ...] = field(default=(), metadata={
        "help": "ONNX Runtime: only quantize these op types (comma-separated, e.g. MatMul); empty = the tool's default"})
    exclude_op_types: tuple[str, ...] = field(default=(), metadata={"help": "ONNX Runtime: leave nodes of these op types in fp32"})
    exclude_nodes: tuple[str, ...] = field(default=(), metadata={"help": "ONNX Runtime: leave these node names in fp32"})
    exclusion_preset: bool = field(default=True, metadata={
        "help": "static int8: keep LayerNorm / GELU / Softmax-type nodes in fp32 (without it accuracy often collapses)"})
    calibration_examples: int = field(default=128, metadata={
        "help": "static int8 and nncf-int8: training examples used to calibrate"})
    calibration_method: Literal["minmax", "entropy", "percentile"] = field(default="minmax", metadata={
        "help": "static int8: how activation ranges are chosen from the calibration data"})
    activations: Literal["uint8", "int8-symmetric"] = field(default="uint8", metadata={
        "help": "static int8: uint8 activations suit ONNX Runtime on CPU; int8-symmetric is what TensorRT int8 engines need"})
    reduce_range: Literal["auto", "on", "off"] = field(default="auto", metadata={
        "help": "ONNX Runtime: 7-bit weights, which avoid saturating the u8s8 int8 path of x86 CPUs without VNNI "
                "(AVX2 only); auto = on where this CPU has no AVX-512 VNNI, AVX-VNNI or AMX int8"})
    accuracy_control: bool = field(default=False, metadata={
        "help": "nncf-int8: NNCF's accuracy-control mode, which keeps the layers whose int8 costs the most in fp32 "
                "until the drop on validation examples is at most max_drop_points"})
    max_drop_points: float = field(default=1.0, metadata={
        "help": "nncf-int8 accuracy control: the largest drop in quality (points) on the validation examples"})
    validation_examples: int = field(default=300, metadata={
        "help": "nncf-int8 accuracy control: validation-split examples the drop is measured on"})

    def __post_init__(self) -> None:
        if self.calibration_examples < 1:
            raise ValueError(f"calibration_examples must be at least 1, got {self.calibration_examples}")
        onnx_only = [n for n in ("per_channel", "op_types", "exclude_op_types", "exclude_nodes") if getattr(self, n)]
        if self.activations != "uint8" and self.method != "ort-static-int8":
            onnx_only.append("activations")
        if self.reduce_range != "auto":
            onnx_only.append("reduce_range")
        if self.method not in ONNX_METHODS and onnx_only:
            raise ValueError(f"{', '.join(onnx_only)} do not apply to method {self.method}")
        nncf_only = [n for n in ("accuracy_control", "max_drop_points", "validation_examples")
                     if getattr(self, n) != type(self).__dataclass_fields__[n].default]
        if self.method not in OPENVINO_METHODS and nncf_only:
            raise ValueError(f"{', '.join(nncf_only)} do not apply to method {self.method}")
        if not 0 < self.max_drop_points <= 100:
            raise ValueError(f"max_drop_points must be above 0 and at most 100, got {self.max_drop_points}")
        if self.validation_examples < 1:
            raise ValueError(f"validation_examples must be at least 1, got {self.validation_examples}")


def resolve_reduce_range(setting: str, flags: Iterable[str], activations: str = "uint8") -> tuple[bool, str]:
    """Whether ONNX Runtime should quantize weights to 7 bits, and why, for a `reduce_range` setting and CPU flags."""
    if setting in ("on", "off"):
        return setting == "on", f"set to {setting}"
    if activations == "int8-symmetric":
        return False, "auto: int8-symmetric activations are for TensorRT, whose int8 kernels use the full 8-bit range"
    vnni = sorted(VNNI_FLAGS & set(flags))
    if vnni:
        return False, f"auto: this CPU has {', '.join(vnni)}, whose int8 dot products do not saturate; full 8-bit weights"
    return True, ("auto: this CPU has no AVX-512 VNNI, AVX-VNNI or AMX int8, so ONNX Runtime's u8s8 path (AVX2 "
                  "VPMADDUBSW) can saturate with full 8-bit weights; 7-bit weights avoid it")


def sensitive_nodes(model_path: Path) -> list[str]:
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    return [n.name for n in graph.node
            if n.op_type in SENSITIVE_OP_TYPES or any(p in n.name.lower() for p in SENSITIVE_NAME_PARTS)]


def nodes_of_types(model_path: Path, op_types: tuple[str, ...]) -> list[str]:
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    return [n.name for n in graph.node if n.op_type in op_types]


class _Calibration:
    """ONNX Runtime CalibrationDataReader over encoded training texts, one batch at a time."""

    def __init__(self, model_dir: Path, texts: list[str], input_names: list[str], batch_size: int = 8):
        from transformers import AutoConfig, AutoTokenizer

        meta = read_variant_meta(model_dir)
        tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=False, local_files_only=True)
        config = AutoConfig.from_pretrained(model_dir, trust_remote_code=False, local_files_only=True)
        max_length = capped_max_length(meta.get("max_length"), config, tokenizer)
        self.batches = []
        for i in range(0, len(texts), batch_size):
            enc = tokenizer(texts[i : i + batch_size], padding=True, truncation=True,
                            max_length=max_length, return_tensors="np")
            self.batches.append({k: enc[k].astype("int64") for k in input_names})
        self._iter = iter(self.batches)

    def get_next(self) -> dict[str, Any] | None:
        return next(self._iter, None)

    def rewind(self) -> None:
        self._iter = iter(self.batches)


def _require(variant: Variant, runtime: str, method: str) -> None:
    meta = read_variant_meta(Path(variant.artifact_dir))
    ok = variant.runtime == runtime and variant.precision == "fp32" and not meta.get("quantization")
    if not ok:
        hint = EXPORT_HINTS.get(runtime, "quantize an fp32 PyTorch variant")
        raise InvalidInput(f"{method} needs an fp32 {runtime} variant; variant {variant.id} is {variant.runtime} "
                           f"{variant.precision}: {hint}")


def torch_variant(params: QuantizeParams, source: Path, out: Path, ctx: JobContext) -> tuple[str, dict[str, Any]]:
    import torch
    from transformers import AutoTokenizer

    from jobs.runtimes.torch_runtime import load_torch_model

    model = load_torch_model(source, apply_quantization=False)
    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False, local_files_only=True)
    if params.method == "torch-dynamic-int8":
        # packed int8 weights cannot be saved as safetensors; the fp32 weights are kept and quantized at load time
        ctx.progress(0.4, "quantizing Linear layers to int8 (to measure the in-memory size)")
        quantized = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        buffer = io.BytesIO()
        torch.save(quantized.state_dict(), buffer)
        layers = sum(1 for m in quantized.modules() if type(m).__name__ == "Linear" and "quantized" in type(m).__module__)
        save_pytorch_variant(model, tokenizer, out, inherited_meta(source, quantization="torch-dynamic-int8"))
        return "int8", {"in_memory_bytes": buffer.getbuffer().nbytes, "quantized_linear_layers": layers,
                        "note": "weights on disk are fp32; int8 packing is redone when the variant loads"}
    dtype = torch.bfloat16 if params.method == "bf16" else torch.float16
    ctx.progress(0.4, f"casting weights to {dtype}")
    model = model.to(dtype)
    save_pytorch_variant(model, tokenizer, out, inherited_meta(source, dtype=str(dtype).removeprefix("torch.")))
    note = "fast on CPUs with AMX / AVX-512 BF16" if params.method == "bf16" else "fp16 is fast on CUDA; slow on most CPUs"
    return params.method, {"note": note}


def onnx_variant(params: QuantizeParams, variant: Variant, source: Path, out: Path, ctx: JobContext) -> dict[str, Any]:
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    copy_support_files(source, out)
    src_model, dst_model = source / ONNX_FILE, out / ONNX_FILE
    excluded = list(params.exclude_nodes) + nodes_of_types(src_model, params.exclude_op_types)
    reduce_range, why = resolve_reduce_range(params.reduce_range, detect().get("cpu_flags", []), params.activations)
    facts: dict[str, Any] = {"per_channel": params.per_channel, "reduce_range": reduce_range, "reduce_range_why": why}
    ctx.log(f"reduce_range={params.reduce_range} -> {'on' if reduce_range else 'off'} ({why})")
    # quantizing a model saved by the transformer optimizer fails to find weight types without this default
    extra = {"DefaultTensorType": onnx.TensorProto.FLOAT}
    op_types = list(params.op_types) or None
    if params.method == "ort-dynamic-int8":
        ctx.progress(0.3, "ONNX Runtime dynamic int8")
        quantize_dynamic(str(src_model), str(dst_model), weight_type=QuantType.QInt8, per_channel=params.per_channel,
                         reduce_range=reduce_range, op_types_to_quantize=op_types, nodes_to_exclude=excluded or None,
                         extra_options=extra)
    else:
        if params.exclusion_preset:
            preset = sensitive_nodes(src_model)
            excluded += preset
            facts["preset_excluded_nodes"] = len(preset)
        dataset = ctx.require_dataset()
        texts = split_examples(dataset, "train", params.calibration_examples).texts
        import onnxruntime as ort

        names = [i.name for i in ort.InferenceSession(str(src_model), providers=["CPUExecutionProvider"]).get_inputs()]
        ctx.progress(0.2, f"calibrating on {len(texts)} training examples ({params.calibration_method})")
        method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                  "percentile": CalibrationMethod.Percentile}[params.calibration_method]
        # biases stay fp32: int32 bias quantization needs an input scale that ops left unquantized do not have
        extra["QuantizeBias"] = False
        activation_type = QuantType.QUInt8
        if params.activations == "int8-symmetric":
            activation_type = QuantType.QInt8
            extra.update(ActivationSymmetric=True, WeightSymmetric=True)
        quantize_static(str(src_model), str(dst_model), _Calibration(source, texts, names), quant_format=QuantFormat.QDQ,
                        per_channel=params.per_channel, reduce_range=reduce_range, activation_type=activation_type,
                        weight_type=QuantType.QInt8,
                        op_types_to_quantize=op_types, nodes_to_exclude=excluded or None, calibrate_method=method,
                        extra_options=extra)
        facts.update(calibration_examples=len(texts), calibration_method=params.calibration_method,
                     exclusion_preset=params.exclusion_preset, activations=params.activations)
    facts["excluded_nodes"] = len(excluded)
    for leftover in out.glob("*.onnx-augmented*"):
        leftover.unlink()
    return facts


def openvino_variant(params: QuantizeParams, source: Path, out: Path, ctx: JobContext) -> dict[str, Any]:
    """NNCF int8 of an fp32 OpenVINO variant, calibrated on training texts; with accuracy control, the drop is
    measured with the model's task metric on validation examples (never the test split evaluations score)."""
    from jobs.ml import openvino_ir
    from jobs.runtimes.openvino_runtime import PRECISION_META, OpenVinoPredictor
    from jobs.tasks import get_task
    from storage import catalog

    copy_support_files(source, out)
    dataset = ctx.require_dataset()
    texts = split_examples(dataset, "train", params.calibration_examples).texts
    predictor = OpenVinoPredictor(source)
    control = None
    if params.accuracy_control:
        examples = split_examples(dataset, "validation", params.validation_examples)
        task = get_task(catalog.get_model(ctx.require_variant().model_id).task)  # the quality metric is the task's
        labels = predictor.labels
        control = openvino_ir.AccuracyControl(
            examples.texts, examples.label_ids(labels), params.max_drop_points / 100,
            lambda gold, predicted: task.metrics(gold, predicted, labels)[task.quality_metric])
        ctx.progress(0.2, f"NNCF int8 with accuracy control: at most {params.max_drop_points} points on "
                          f"{len(examples)} validation examples")
    else:
        ctx.progress(0.2, f"NNCF int8, calibrating on {len(texts)} training examples")
    quantized, facts = openvino_ir.nncf_int8(predictor, texts, control)
    predictor.close()
    openvino_ir.save_ir(quantized, out)
    # the parts NNCF leaves in floating point run in f32 (not OpenVINO's bf16 default on AMX CPUs)
    write_variant_meta(out, inherited_meta(source, quantization=params.method, **{PRECISION_META: "f32"}))
    ctx.log(f"NNCF: {facts['fake_quantize_ops']} int8 quantization points")
    return facts


def output_runtime(params: QuantizeParams, runtime: str) -> str:
    wanted = "onnxruntime" if params.method in ONNX_METHODS else "openvino" if params.method in OPENVINO_METHODS else "pytorch"
    if runtime != wanted:
        hint = f"; {EXPORT_HINTS[wanted]}" if wanted in EXPORT_HINTS else ""
        raise InvalidInput(f"quantize method {params.method} takes a {wanted} variant, not {runtime}{hint}")
    return runtime


def advice(params: dict[str, Any], hardware: dict[str, Any]) -> list[str]:
    """Known slow paths of a quantization method on this hardware (`hardware` as `detect()` reports it)."""
    from jobs.runtimes.devices import fast_bf16

    cuda = "cuda" in hardware.get("devices", [])
    flags = set(hardware.get("cpu_flags", []))
    method = str(params.get("method", ""))
    notes: list[str] = []
    if method == "fp16" and not cuda:
        notes.append("fp16 on this CPU goes through slow conversion paths; bf16 is the CPU half-precision"
                     + (" and this CPU has AMX bf16 tiles" if "amx_bf16" in flags else ""))
    if method == "bf16" and not fast_bf16("cpu") and not cuda:
        notes.append("this CPU has no AMX or AVX-512 BF16: bf16 may be slower than fp32 here")
    if method.startswith("ort-") and cuda:
        notes.append("int8 on ONNX Runtime's CUDA execution provider falls back to slow kernels for many ops; "
                     "on a GPU prefer fp16, or TensorRT int8 from an ort-static-int8 (int8-symmetric) variant")
    if method.endswith("int8") and not cuda and not flags & {"avx512_vnni", "amx_int8"}:
        notes.append("this CPU has no VNNI or AMX int8 instructions: int8 speedups will be small")
    if method.startswith("ort-") and not flags & {"avx512_vnni", "avx_vnni", "amx_int8"}:
        setting = params.get("reduce_range", "auto")
        if setting == "off":
            notes.append("reduce_range=off: without VNNI, ONNX Runtime's u8s8 int8 path (AVX2 VPMADDUBSW) can "
                         "saturate with full 8-bit weights and cost accuracy")
        elif setting == "auto" and params.get("activations") != "int8-symmetric":  # that one is for TensorRT
            notes.append("reduce_range is on by default here: without VNNI, ONNX Runtime's u8s8 int8 path (AVX2 "
                         "VPMADDUBSW) can saturate with full 8-bit weights, so weights get 7 bits, as ONNX "
                         "Runtime recommends for such CPUs (reduce_range=off keeps 8)")
    return notes


@register("quantize", QuantizeParams, summary="int8 / bf16 / fp16 quantization with PyTorch, ONNX Runtime or OpenVINO (NNCF)",
          output_runtime=output_runtime, advice=advice, cites_measured_speedups=True)
def run(params: QuantizeParams, ctx: JobContext) -> JobResult:
    variant = ctx.require_variant()
    source = Path(variant.artifact_dir)
    out = fresh_dir(ctx.work_dir / "quantized")
    if params.method in ONNX_METHODS:
        _require(variant, "onnxruntime", params.method)
        facts = onnx_variant(params, variant, source, out, ctx)
        precision, runtime = "int8", "onnxruntime"
        write_variant_meta(out, inherited_meta(source, quantization=params.method))
        ctx.progress(0.9, "loading the quantized graph once")
        import onnxruntime as ort

        ort.InferenceSession(str(out / ONNX_FILE), providers=["CPUExecutionProvider"])
    elif params.method in OPENVINO_METHODS:
        _require(variant, "openvino", params.method)
        facts = openvino_variant(params, source, out, ctx)
        precision, runtime = "int8", "openvino"
        ctx.progress(0.9, "loading the quantized IR once")
        from jobs.runtimes.openvino_runtime import OpenVinoPredictor

        OpenVinoPredictor(out).close()
    else:
        _require(variant, "pytorch", params.method)
        precision, facts = torch_variant(params, source, out, ctx)
        runtime = "pytorch"
    before = sum(f["size"] for f in variant.files)
    after = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    facts.update(method=params.method, size_before=before, size_after=after)
    ctx.log(f"{params.method}: {before / 1e6:.1f} MB -> {after / 1e6:.1f} MB on disk")
    step = params.method + ("-accuracy-control" if params.accuracy_control else "")
    return ctx.output_variant(out, runtime=runtime, precision=precision, step=step, info={"quantization": facts},
                              result=facts)
