"""benchmarks/search_targets.py's own arithmetic: the FLOPs it counts from a config equal torch's FLOP counter on a
real forward pass (full, and with heads and FFN neurons pruned), and a peak is the best of its measurements."""

from __future__ import annotations

import json


def _counted(model, seq: int) -> int:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    ids = torch.randint(1000, 2000, (1, seq))
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(input_ids=ids, attention_mask=torch.ones_like(ids))
    return counter.get_total_flops()


def test_flops_per_text_equals_torchs_flop_counter(tmp_path, minilm_dir):
    from transformers import AutoModelForSequenceClassification

    from benchmarks.search_targets import flops_per_text
    from tests.support.tiny import tiny_classifier

    path = tiny_classifier(tmp_path / "tiny", minilm_dir)
    model = AutoModelForSequenceClassification.from_pretrained(path, attn_implementation="eager").eval()
    config = json.loads((path / "config.json").read_text())
    assert flops_per_text(config, 64) == _counted(model, 64)
    # structured pruning: one head of two kept, the FFN narrowed (as the prune kind does and records it)
    import torch

    from jobs.runtimes.structure import encoder_layers, keep_heads, keep_neurons

    layer = encoder_layers(model)[0]
    keep_heads(layer, [0])
    keep_neurons(layer, torch.arange(40))
    pruned = {**config, "intermediate_size": 40}
    assert flops_per_text(pruned, 64, {"0": [0]}) == _counted(model, 64)


def test_a_peak_is_the_best_of_its_measurements():
    from benchmarks.search_targets import best_peaks

    busy = {"fp32": (80.0, "torch.mm fp32"), "int8": (500.0, "ORT")}
    quiet = {"fp32": (320.0, "torch.mm fp32"), "int8": (400.0, "torch._int_mm")}
    assert best_peaks(busy, quiet) == {"fp32": (320.0, "torch.mm fp32"), "int8": (500.0, "ORT")}
