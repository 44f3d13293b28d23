"""`inspect`: load a model and record what it is: architecture, parameters, size, task, tokenizer, labels."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs.context import JobContext, JobResult
from jobs.registry import register
from jobs.runtimes.torch_runtime import is_classifier
from storage import catalog


@dataclass(frozen=True)
class InspectParams:
    """No options: inspect reads the variant as it is."""


def _inspect_pytorch(model_dir: Path, allow_pickle: bool, ctx: JobContext) -> dict[str, Any]:
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    ctx.progress(0.1, "reading config")
    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=False, local_files_only=True)
    architectures = list(config.architectures or [])
    has_head = is_classifier(config)

    ctx.progress(0.3, "loading tokenizer")
    tokenizer_info: dict[str, Any] = {}
    try:
        tok = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=False, local_files_only=True)
        tokenizer_info = {
            "tokenizer": type(tok).__name__,
            "vocab_size": tok.vocab_size,
            "model_max_length": min(int(tok.model_max_length), 1_000_000),
        }
    except (OSError, ValueError) as exc:
        tokenizer_info = {"tokenizer": None, "tokenizer_error": str(exc).splitlines()[0]}

    ctx.progress(0.5, "loading weights")
    use_safetensors = any(model_dir.glob("*.safetensors"))
    if not use_safetensors and not allow_pickle:
        raise ValueError("this model has only pickle weights and pickle was not allowed at intake")
    auto_cls = AutoModelForSequenceClassification if has_head else AutoModel
    # transformers loads .bin files with torch.load(weights_only=True); safetensors never run code.
    model = auto_cls.from_pretrained(
        model_dir, trust_remote_code=False, local_files_only=True, use_safetensors=use_safetensors
    )
    ctx.progress(0.8, "counting parameters")
    num_parameters = sum(p.numel() for p in model.parameters())
    dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters()})
    labels = [config.id2label[i] for i in sorted(config.id2label)] if has_head else []
    del model, torch
    return {
        "format": "transformers",
        "architecture": architectures[0] if architectures else type(config).__name__,
        "model_type": config.model_type,
        "num_parameters": num_parameters,
        "parameter_dtypes": dtypes,
        "num_layers": getattr(config, "num_hidden_layers", None),
        "hidden_size": getattr(config, "hidden_size", None),
        "num_attention_heads": getattr(config, "num_attention_heads", None),
        "max_position_embeddings": getattr(config, "max_position_embeddings", None),
        "has_classification_head": has_head,
        "task": "text-classification" if has_head else "feature-extraction",
        "task_note": "" if has_head else "no classification head: fine-tune it before it can classify",
        "labels": labels,
        **tokenizer_info,
    }


def _inspect_onnx(model_dir: Path, ctx: JobContext) -> dict[str, Any]:
    import numpy as np
    import onnx
    import onnxruntime as ort

    path = model_dir / "model.onnx"
    ctx.progress(0.2, "reading ONNX graph")
    graph_model = onnx.load(str(path), load_external_data=False)
    num_parameters = int(sum(np.prod(t.dims) for t in graph_model.graph.initializer))
    ctx.progress(0.5, "creating an ONNX Runtime session")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def describe(args) -> list[dict[str, Any]]:
        return [{"name": a.name, "type": a.type, "shape": [d if isinstance(d, int) else str(d) for d in a.shape]} for a in args]

    info: dict[str, Any] = {
        "format": "onnx",
        "architecture": graph_model.graph.name or "onnx-graph",
        "opset": max((o.version for o in graph_model.opset_import if o.domain in ("", "ai.onnx")), default=None),
        "producer": graph_model.producer_name,
        "num_parameters": num_parameters,
        "inputs": describe(session.get_inputs()),
        "outputs": describe(session.get_outputs()),
        "task": "unknown",
        "labels": [],
    }
    if (model_dir / "config.json").exists():
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(model_dir, trust_remote_code=False, local_files_only=True)
        info["model_type"] = config.model_type
        if is_classifier(config):
            info["task"] = "text-classification"
            info["labels"] = [config.id2label[i] for i in sorted(config.id2label)]
    return info


@register("inspect", InspectParams, summary="Load a model and record its architecture, size, task and labels",
          automatic=True)
def run(params: InspectParams, ctx: JobContext) -> JobResult:
    variant = ctx.variant
    assert variant is not None and ctx.model is not None
    model_dir = Path(variant.artifact_dir)
    if variant.runtime == "onnxruntime":
        info = _inspect_onnx(model_dir, ctx)
    else:
        info = _inspect_pytorch(model_dir, ctx.model.allow_pickle, ctx)
    info["size_bytes"] = variant.size_bytes
    info["sha256"] = variant.sha256
    ctx.progress(0.95, "saving")
    if variant.parent_id is None:  # the root variant describes the model itself
        catalog.update_model_info(ctx.model.id, info)
    params_m = info["num_parameters"] / 1e6
    ctx.log(f"{info['architecture']}: {params_m:.1f}M parameters, {variant.size_bytes / 1e6:.1f} MB, task {info['task']}")
    return JobResult(result=info)
