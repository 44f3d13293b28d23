"""Structural edits to BERT-family encoders that a config cannot express, recorded so a loader can redo them.

transformers 5 dropped `prune_heads`, so head pruning slices the query/key/value rows and the attention output
columns here. The kept heads are recorded in the variant's `workbench.json` ("kept_heads": {layer: [heads]}) and
re-applied to a freshly built model before its (smaller) weights are loaded.
"""

from __future__ import annotations

from typing import Any

ENCODER_PATHS = ("bert", "roberta", "electra", "xlm_roberta", "camembert")


def encoder_module(model: Any) -> Any:
    """The encoder (holding `.layer`) of a BERT-family model, or a clear error for other architectures."""
    for attr in ENCODER_PATHS:
        base = getattr(model, attr, None)
        if base is not None and hasattr(base, "encoder"):
            return base.encoder
    raise ValueError(
        f"structured pruning supports BERT-family encoders ({', '.join(ENCODER_PATHS)}); "
        f"{type(model).__name__} is not one"
    )


def encoder_layers(model: Any) -> list[Any]:
    return list(encoder_module(model).layer)


def _slice_linear(linear: Any, index: Any, dim: int) -> Any:
    """A new Linear keeping `index` along `dim` (0 = output rows, 1 = input columns)."""
    import torch

    weight = linear.weight.detach().index_select(dim, index).clone()
    bias = linear.bias.detach().clone() if linear.bias is not None else None
    if dim == 0 and bias is not None:
        bias = bias.index_select(0, index).clone()
    new = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, dtype=weight.dtype)
    with torch.no_grad():
        new.weight.copy_(weight)
        if bias is not None:
            new.bias.copy_(bias)
    return new


def keep_heads(layer: Any, heads: list[int]) -> None:
    """Keep only `heads` (sorted indices) in one layer's self-attention."""
    import torch

    attn = layer.attention.self
    size = attn.attention_head_size
    index = torch.tensor([h * size + i for h in sorted(heads) for i in range(size)], dtype=torch.long)
    attn.query = _slice_linear(attn.query, index, 0)
    attn.key = _slice_linear(attn.key, index, 0)
    attn.value = _slice_linear(attn.value, index, 0)
    layer.attention.output.dense = _slice_linear(layer.attention.output.dense, index, 1)
    attn.num_attention_heads = len(heads)
    attn.all_head_size = len(heads) * size


def keep_neurons(layer: Any, neurons: Any) -> None:
    """Keep only `neurons` (a LongTensor of indices) of one layer's feed-forward block."""
    layer.intermediate.dense = _slice_linear(layer.intermediate.dense, neurons, 0)
    layer.output.dense = _slice_linear(layer.output.dense, neurons, 1)


def apply_kept_heads(model: Any, kept_heads: dict[str, list[int]]) -> None:
    layers = encoder_layers(model)
    for index, heads in kept_heads.items():
        keep_heads(layers[int(index)], heads)
