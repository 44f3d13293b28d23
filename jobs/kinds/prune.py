"""`prune`: L1 unstructured (zeros, same shapes) or structured (attention heads and FFN neurons removed: smaller)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from jobs.ml.artifacts import inherited_meta, save_pytorch_variant
from jobs.runner.context import JobContext, JobResult
from jobs.runner.registry import register, takes
from storage.errors import InvalidInput


@dataclass(frozen=True)
class PruneParams:
    method: Literal["l1-unstructured", "structured"] = field(default="l1-unstructured", metadata={
        "help": "l1-unstructured: zero the smallest weights (same size, needs a sparse runtime to be faster); "
                "structured: remove whole attention heads and FFN neurons (really smaller and faster)"})
    amount: float = field(default=0.3, metadata={"help": "l1-unstructured: fraction of encoder Linear weights set to zero"})
    scope: Literal["global", "per-layer"] = field(default="global", metadata={
        "help": "l1-unstructured: rank weights across all layers (global) or within each layer"})
    head_ratio: float = field(default=0.25, metadata={"help": "structured: fraction of attention heads removed in every layer"})
    ffn_ratio: float = field(default=0.25, metadata={"help": "structured: fraction of feed-forward neurons removed in every layer"})

    def __post_init__(self) -> None:
        if not 0 < self.amount < 1:
            raise ValueError(f"amount={self.amount} must be between 0 and 1 (e.g. 0.3 for 30%)")
        for name in ("head_ratio", "ffn_ratio"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be in [0, 1): at least one head and neuron stay")
        if self.method == "structured" and self.head_ratio == 0 and self.ffn_ratio == 0:
            raise ValueError("structured pruning needs head_ratio or ffn_ratio above 0")


def encoder_linears(model: Any) -> list[tuple[str, Any]]:
    import torch

    from jobs.runtimes.structure import encoder_layers

    layers = {id(m) for layer in encoder_layers(model) for m in layer.modules()}
    return [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and id(m) in layers]


def sparsity(modules: list[tuple[str, Any]]) -> float:
    zeros = sum(int((m.weight == 0).sum()) for _, m in modules)
    return zeros / max(1, sum(m.weight.numel() for _, m in modules))


def l1_unstructured(model: Any, params: PruneParams, ctx: JobContext) -> dict[str, Any]:
    import torch.nn.utils.prune as torch_prune

    linears = encoder_linears(model)
    before = sparsity(linears)
    if params.scope == "global":
        torch_prune.global_unstructured([(m, "weight") for _, m in linears], pruning_method=torch_prune.L1Unstructured,
                                        amount=params.amount)
    else:
        for _, module in linears:
            torch_prune.l1_unstructured(module, "weight", amount=params.amount)
    for _, module in linears:
        torch_prune.remove(module, "weight")  # permanent: the mask is folded into the weights
    after = sparsity(linears)
    per_layer = {name: round(float((m.weight == 0).float().mean()), 4) for name, m in linears}
    ctx.log(f"encoder Linear sparsity {before:.1%} -> {after:.1%} ({params.scope})")
    return {"sparsity_before": before, "sparsity_after": after, "per_layer_sparsity": per_layer}


def structured(model: Any, params: PruneParams, meta: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    import torch

    from jobs.runtimes.structure import encoder_layers, keep_heads, keep_neurons

    layers = encoder_layers(model)
    kept_heads: dict[str, list[int]] = {}
    old_kept = meta.get("kept_heads") or {}
    heads_before = heads_after = 0
    ffn_keep = None
    for index, layer in enumerate(layers):
        attn = layer.attention.self
        size, count = attn.attention_head_size, attn.num_attention_heads
        heads_before += count
        original = old_kept.get(str(index), list(range(count)))
        keep_count = max(1, count - round(count * params.head_ratio))
        if keep_count < count:
            # importance of a head: L1 norm of its query/key/value rows and its output-projection columns
            w = [attn.query.weight, attn.key.weight, attn.value.weight]
            out = layer.attention.output.dense.weight
            scores = torch.stack([sum(x[h * size:(h + 1) * size].abs().sum() for x in w) + out[:, h * size:(h + 1) * size].abs().sum()
                                  for h in range(count)])
            positions = sorted(scores.topk(keep_count).indices.tolist())
            keep_heads(layer, positions)
            original = [original[p] for p in positions]
        kept_heads[str(index)] = original
        heads_after += len(original)
        inner = layer.intermediate.dense
        ffn_keep = max(1, inner.out_features - round(inner.out_features * params.ffn_ratio))
        if ffn_keep < inner.out_features:
            scores = inner.weight.abs().sum(1) + layer.output.dense.weight.abs().sum(0)
            keep_neurons(layer, scores.topk(ffn_keep).indices.sort().values)
    if ffn_keep is not None:
        model.config.intermediate_size = ffn_keep  # same count in every layer, so the config describes it
    total_heads = model.config.num_attention_heads * len(layers)
    if heads_after < total_heads:
        meta["kept_heads"] = kept_heads
    ctx.log(f"attention heads {heads_before} -> {heads_after}; FFN width -> {ffn_keep} per layer")
    return {"heads_before": heads_before, "heads_after": heads_after, "ffn_width_after": ffn_keep}


def advice(params: dict[str, Any], _hardware: dict[str, Any]) -> list[str]:
    """What a pruning method cannot do for speed, whatever the hardware."""
    if str(params.get("method", "")) == "l1-unstructured":
        return ["zeros do not make a dense runtime faster: expect the same latency and size; "
                "use structured pruning (or a sparse runtime) for speed"]
    return []


@register("prune", PruneParams, summary="L1 unstructured or structured (heads / FFN neurons) pruning",
          output_runtime=takes("prune", ("pytorch",)), advice=advice, cites_measured_speedups=True)
def run(params: PruneParams, ctx: JobContext) -> JobResult:
    from transformers import AutoTokenizer

    from jobs.runtimes.torch_runtime import is_plain_fp32, load_torch_model

    variant = ctx.require_variant()
    source = Path(variant.artifact_dir)
    if not is_plain_fp32(variant):
        raise InvalidInput(f"prune needs an fp32 PyTorch variant; variant {variant.id} is {variant.runtime} {variant.precision}")
    ctx.progress(0.1, "loading the model")
    model = load_torch_model(source, apply_quantization=False)
    params_before = sum(p.numel() for p in model.parameters())
    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False, local_files_only=True)
    new_meta = inherited_meta(source)
    try:
        ctx.progress(0.3, f"pruning ({params.method})")
        facts = l1_unstructured(model, params, ctx) if params.method == "l1-unstructured" else structured(model, params, new_meta, ctx)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    facts["parameters_before"] = params_before
    facts["parameters_after"] = sum(p.numel() for p in model.parameters())
    ctx.progress(0.8, "saving")
    out = save_pytorch_variant(model, tokenizer, ctx.work_dir / "pruned", new_meta)
    facts["size_before"] = variant.size_bytes
    facts["size_after"] = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    ctx.log(f"parameters {facts['parameters_before']:,} -> {facts['parameters_after']:,}; "
            f"size {facts['size_before'] / 1e6:.1f} MB -> {facts['size_after'] / 1e6:.1f} MB")
    step = f"prune-l1-{params.amount:g}" if params.method == "l1-unstructured" else f"prune-heads{params.head_ratio:g}-ffn{params.ffn_ratio:g}"
    return ctx.output_variant(out, runtime="pytorch", precision="fp32", step=step,
                              info={"pruning": {k: v for k, v in facts.items() if k != "per_layer_sparsity"}}, result=facts)
