"""`inspect`: load a model and record what it is: architecture, parameters, size, task, tokenizer, labels."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs.runner.context import JobContext, JobResult
from jobs.runner.registry import register
from jobs.tasks import Task, task_of_config
from storage import catalog
from storage.errors import InvalidInput


@dataclass(frozen=True)
class InspectParams:
    """No options: inspect reads the variant as it is."""


# Weights of other tasks' heads that a checkpoint may carry without harm (BERT's pretraining `cls.*`, an LM head,
# ELECTRA's discriminator, ...): unexpected for the model built here, but not a sign that the weights are wrong.
OTHER_HEADS = frozenset({
    "cls", "lm_head", "mlm", "nsp", "predictions", "generator_predictions", "generator_lm_head",
    "discriminator_predictions", "qa_outputs", "classifier", "pre_classifier", "score", "sop_classifier",
    "vocab_transform", "vocab_layer_norm", "vocab_projector", "lm_loss", "pooler", "dropout",
})
SHOWN_KEYS = 10


def _shown(keys: list[str]) -> str:
    more = f" and {len(keys) - SHOWN_KEYS} more" if len(keys) > SHOWN_KEYS else ""
    return ", ".join(keys[:SHOWN_KEYS]) + more


def check_loaded_weights(model: Any, loading: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Compare what `from_pretrained(..., output_loading_info=True)` loaded with what the architecture needs.

    Returns (problems, fresh_head): one line per kind of mismatch (missing encoder weights, unexpected ones,
    shapes that differ), and the classification-head weights that were newly initialised. A fresh head (on a base
    checkpoint) and a missing pooler are expected; anything else missing means random weights inside the model.
    """
    prefix = getattr(model, "base_model_prefix", "") or ""
    encoder_parts = {name for name, _ in model.base_model.named_children()}
    is_base = model.base_model is model

    def first_part(key: str) -> str:
        if prefix and key.startswith(prefix + "."):
            key = key[len(prefix) + 1:]
        return key.split(".", 1)[0]

    def in_head(key: str) -> bool:  # a weight of the task head, outside the encoder (model naming)
        return not is_base and not (prefix and key.startswith(prefix + ".")) and first_part(key) not in encoder_parts

    missing = sorted(loading.get("missing_keys") or ())
    fresh_head = [k for k in missing if in_head(k)]
    missing = [k for k in missing if not in_head(k) and first_part(k) != "pooler"]
    unexpected = sorted(k for k in (loading.get("unexpected_keys") or ())
                        if first_part(k) in encoder_parts or first_part(k) not in OTHER_HEADS)
    mismatched = []
    for item in sorted(loading.get("mismatched_keys") or (), key=str):
        if isinstance(item, (tuple, list)) and len(item) == 3:
            key, stored, wanted = item
            mismatched.append(f"{key} (stored {list(stored)}, the architecture needs {list(wanted)})")
        else:
            mismatched.append(str(item))
    problems = []
    if missing:
        problems.append(f"{len(missing)} weights missing (they would be random): {_shown(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected weights the architecture has no place for: {_shown(unexpected)}")
    if mismatched:
        problems.append(f"{len(mismatched)} weights of the wrong shape: {_shown(mismatched)}")
    return problems, fresh_head


def _inspect_pytorch(model_dir: Path, allow_pickle: bool, ctx: JobContext) -> tuple[dict[str, Any], Task]:
    """What the model is, and the task its config makes it (see jobs.tasks)."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    ctx.progress(0.1, "reading config")
    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=False, local_files_only=True)
    architectures = list(config.architectures or [])
    task = task_of_config(config)
    has_head = task.has_head(config)

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
    auto_cls = task.model_class() if has_head else AutoModel
    # transformers loads .bin files with torch.load(weights_only=True); safetensors never run code.
    model, loading = auto_cls.from_pretrained(
        model_dir, trust_remote_code=False, local_files_only=True, use_safetensors=use_safetensors,
        output_loading_info=True, ignore_mismatched_sizes=True,  # shape mismatches are listed below, not raised
    )
    problems, fresh_head = check_loaded_weights(model, loading)
    if problems:
        for key in ("missing_keys", "unexpected_keys", "mismatched_keys"):
            if loading.get(key):
                ctx.log(f"{key}: {', '.join(map(str, sorted(loading[key], key=str)))}")
        raise InvalidInput(f"the weights do not match the {type(model).__name__} architecture in config.json: "
                           + "; ".join(problems))
    ctx.progress(0.8, "counting parameters")
    num_parameters = sum(p.numel() for p in model.parameters())
    dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters()})
    labels = task.labels(config) if has_head else []
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
        "task": task.name if has_head else "feature-extraction",  # what the checkpoint does as it is
        "task_note": ("no classification head: fine-tune it before it can classify" if not has_head else
                      "its classification head is not in the weights (newly initialised): fine-tune it before "
                      "trusting its answers" if fresh_head else ""),
        "labels": labels,
        **tokenizer_info,
    }, task


def _inspect_onnx(model_dir: Path, ctx: JobContext) -> tuple[dict[str, Any], Task | None]:
    """What the graph is, and the task its config.json makes it (None for a bare .onnx with no config)."""
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
    task = None
    if (model_dir / "config.json").exists():
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(model_dir, trust_remote_code=False, local_files_only=True)
        info["model_type"] = config.model_type
        task = task_of_config(config)
        if task.has_head(config):
            info["task"] = task.name
            info["labels"] = task.labels(config)
    return info, task


@register("inspect", InspectParams, summary="Load a model and record its architecture, size, task and labels",
          automatic=True)
def run(params: InspectParams, ctx: JobContext) -> JobResult:
    variant = ctx.variant
    assert variant is not None and ctx.model is not None
    model_dir = Path(variant.artifact_dir)
    if variant.runtime == "onnxruntime":
        info, task = _inspect_onnx(model_dir, ctx)
    else:
        info, task = _inspect_pytorch(model_dir, ctx.model.allow_pickle, ctx)
    info["size_bytes"] = variant.size_bytes
    info["sha256"] = variant.sha256
    ctx.progress(0.95, "saving")
    if variant.parent_id is None:  # the root variant describes the model itself
        catalog.update_model_info(ctx.model.id, info, task=task.name if task else None)
    params_m = info["num_parameters"] / 1e6
    ctx.log(f"{info['architecture']}: {params_m:.1f}M parameters, {variant.size_bytes / 1e6:.1f} MB, task {info['task']}")
    return JobResult(result=info)
