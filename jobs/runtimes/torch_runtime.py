"""PyTorch runtime: fp32, bf16, fp16 and dynamic int8 variants saved as Hugging Face directories."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from jobs.runtimes.base import Predictor, read_variant_meta
from jobs.runtimes.registry import register_runtime
from jobs.tasks import text_classification

DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


def torch_device(device: str) -> str:
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device cuda was asked for but torch sees no CUDA device")
    return device


def load_torch_model(model_dir: Path, *, device: str = "cpu", attn_implementation: str | None = None,
                     apply_quantization: bool = True) -> Any:
    """Load a sequence-classification model from a variant directory, redoing what its workbench.json records.

    Never runs remote code; reads safetensors only (intake refuses or converts pickle checkpoints).
    """
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    model_dir = Path(model_dir)
    meta = read_variant_meta(model_dir)
    dtype = getattr(torch, DTYPES[meta.get("dtype", "float32")])
    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=False, local_files_only=True)
    extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
    kept_heads = meta.get("kept_heads")
    if kept_heads:
        # the weights are smaller than the config says: build, shrink, then load strictly
        from safetensors.torch import load_file

        from jobs.runtimes.structure import apply_kept_heads

        model = AutoModelForSequenceClassification.from_config(config, **extra)
        apply_kept_heads(model, kept_heads)
        state = load_file(str(model_dir / "model.safetensors"))
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.endswith("position_ids")]
        if missing or unexpected:
            raise ValueError(f"weights do not match the pruned structure: missing {missing[:3]}, unexpected {unexpected[:3]}")
        model = model.to(dtype)
    else:
        use_safetensors = any(model_dir.glob("*.safetensors"))
        model = AutoModelForSequenceClassification.from_pretrained(
            model_dir, trust_remote_code=False, local_files_only=True, dtype=dtype,
            use_safetensors=use_safetensors or None, **extra,
        )
    model.eval()
    if apply_quantization and meta.get("quantization") == "torch-dynamic-int8":
        # dynamic int8 packs weights at load time; the files on disk stay fp32 (see the quantize kind)
        model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    return model.to(torch_device(device))


def is_classifier(config: Any) -> bool:
    """Whether a transformers config describes a sequence-classification model (a head to predict with)."""
    return text_classification.has_head(config)


def is_plain_fp32(variant: Any) -> bool:
    """An fp32 PyTorch variant with nothing redone at load (no dynamic int8, no reduced-precision weights):
    what fine-tuning, pruning, export and a half-layers student start from."""
    meta = read_variant_meta(Path(variant.artifact_dir))
    return (variant.runtime == "pytorch" and variant.precision == "fp32" and not meta.get("quantization")
            and meta.get("dtype", "float32") == "float32")


def model_labels(config: Any) -> list[str]:
    return text_classification.labels(config)


class TorchPredictor(Predictor):
    runtime = "pytorch"

    def __init__(self, model_dir: Path, device: str = "cpu", max_length: int | None = None):
        import torch
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(model_dir, trust_remote_code=False, local_files_only=True)
        if not is_classifier(config):
            # checked before loading: a bare encoder would get a random head and answer nonsense
            raise ValueError("this variant has no classification head: fine-tune it first")
        self._torch = torch
        self.model = load_torch_model(model_dir, device=device)
        config = self.model.config
        names = ["input_ids", "attention_mask"] + (["token_type_ids"] if config.type_vocab_size else [])
        super().__init__(model_dir, device, model_labels(config), names, max_length, config=config)

    def _forward(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            inputs = {k: torch.from_numpy(v).to(self.device) for k, v in batch.items()}
            logits = self.model(**inputs).logits
            return logits.float().cpu().numpy()

    def close(self) -> None:
        del self.model
        if self.device.startswith("cuda"):
            self._torch.cuda.empty_cache()


@register_runtime(
    "pytorch", display_name="PyTorch", files=("*.safetensors", "pytorch_model*.bin"), devices=("cpu", "cuda"),
    export_requires=("torch", "safetensors"),
)
def load_torch_predictor(model_dir: Path, device: str, max_length: int | None, threads: int | None) -> TorchPredictor:
    if threads:
        import torch

        torch.set_num_threads(threads)  # process-wide: torch has no per-model thread pool
    return TorchPredictor(model_dir, device, max_length)
