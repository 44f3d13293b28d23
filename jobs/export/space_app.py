"""A text classifier exported by the Transformer Deployment Workbench (`workbench export-space`).

`python app.py` serves a Gradio page and API (`/predict`: text in, label probabilities out) on
http://127.0.0.1:7860, or on $PORT / $GRADIO_SERVER_PORT. It runs offline: the model, its tokenizer and its
config are in ./model, nothing is downloaded and no remote code runs. On Hugging Face Spaces it runs as is.

This file is the workbench's template; `export-space` copies it and fills in the constants below. It does what
the workbench's own loader does with the variant's `workbench.json`: the maximum length, the weights' dtype,
dynamic int8 quantization at load time, pruned attention heads, and an OpenVINO variant's inference precision.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np

# ---- filled in by `workbench export-space` ----
TITLE = "Text classifier"
DESCRIPTION = "A text classifier exported by the Transformer Deployment Workbench."
# ---- end ----

MODEL_DIR = Path(__file__).resolve().parent / "model"
META_FILE = "workbench.json"
ONNX_FILE = "model.onnx"
OPENVINO_FILE = "openvino_model.xml"
DEFAULT_MAX_LENGTH = 128
ENCODER_PATHS = ("bert", "roberta", "electra", "xlm_roberta", "camembert")
PADDING_OFFSET_MODEL_TYPES = {"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "longformer", "mpnet",
                              "data2vec-text", "roberta-prelayernorm", "ibert", "xmod", "luke", "markuplm", "esm"}


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


# ---- pruned attention heads (a structure the config cannot express) ----------------------------------------


def _slice_linear(linear: Any, index: Any, dim: int) -> Any:
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


def keep_heads(model: Any, kept_heads: dict[str, list[int]]) -> None:
    """Shrink each listed layer's self-attention to the kept heads, so the smaller weights load strictly."""
    import torch

    encoder = next((getattr(model, a).encoder for a in ENCODER_PATHS if hasattr(getattr(model, a, None), "encoder")), None)
    if encoder is None:
        raise ValueError(f"pruned heads are supported on BERT-family encoders, not {type(model).__name__}")
    for index, heads in kept_heads.items():
        layer = encoder.layer[int(index)]
        attn = layer.attention.self
        size = attn.attention_head_size
        keep = torch.tensor([h * size + i for h in sorted(heads) for i in range(size)], dtype=torch.long)
        attn.query = _slice_linear(attn.query, keep, 0)
        attn.key = _slice_linear(attn.key, keep, 0)
        attn.value = _slice_linear(attn.value, keep, 0)
        layer.attention.output.dense = _slice_linear(layer.attention.output.dense, keep, 1)
        attn.num_attention_heads = len(heads)
        attn.all_head_size = len(heads) * size


def load_torch_model(model_dir: Path, config: Any, meta: dict[str, Any]) -> Any:
    import torch
    from transformers import AutoModelForSequenceClassification

    dtype = getattr(torch, meta.get("dtype", "float32"))
    if meta.get("kept_heads"):
        from safetensors.torch import load_file

        model = AutoModelForSequenceClassification.from_config(config)
        keep_heads(model, meta["kept_heads"])
        missing, unexpected = model.load_state_dict(load_file(str(model_dir / "model.safetensors")), strict=False)
        missing = [k for k in missing if not k.endswith("position_ids")]
        if missing or unexpected:
            raise ValueError(f"weights do not match the pruned structure: missing {missing[:3]}, unexpected {unexpected[:3]}")
        model = model.to(dtype)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(
            model_dir, local_files_only=True, trust_remote_code=False, dtype=dtype,
            use_safetensors=any(model_dir.glob("*.safetensors")) or None,
        )
    model.eval()
    if meta.get("quantization") == "torch-dynamic-int8":
        # the files hold fp32 weights; Linear layers are packed to int8 when the model loads
        model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    return model


def load_openvino(path: Path, precision: str) -> Any:
    """An infer request of the OpenVINO IR on the CPU, computing in `precision` (f32 or bf16) as the workbench did;
    bf16 only where the CPU runs it natively (OpenVINO's own default there is bf16, so f32 is always asked for)."""
    sys.modules.setdefault("openvino_telemetry", None)  # offline: OpenVINO's usage telemetry stays off
    import openvino as ov

    core = ov.Core()
    if precision == "bf16" and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        raise RuntimeError("this variant runs in bf16, which this CPU has no native support for (AMX or AVX-512 "
                           "BF16); export the workbench's fp32 OpenVINO variant for this machine")
    compiled = core.compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": precision})
    return compiled.create_infer_request()


# ---- the classifier ----------------------------------------------------------------------------------------


class Classifier:
    """The variant loaded once; `predict(text)` gives every label's probability."""

    def __init__(self, model_dir: Path = MODEL_DIR):
        from transformers import AutoConfig, AutoTokenizer

        model_dir = Path(model_dir)
        meta_path = model_dir / META_FILE
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        config = AutoConfig.from_pretrained(model_dir, local_files_only=True, trust_remote_code=False)
        self.labels = [str(config.id2label[i]) for i in sorted(config.id2label)]
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True, trust_remote_code=False)
        self.max_length = int(meta.get("max_length") or DEFAULT_MAX_LENGTH)
        # never beyond the model's positions (RoBERTa-type models keep padding_idx + 1 of them unused)
        positions = getattr(config, "max_position_embeddings", None)
        if isinstance(positions, int) and positions > 0:
            if config.model_type in PADDING_OFFSET_MODEL_TYPES:
                pad = getattr(config, "pad_token_id", None)
                positions -= (pad if isinstance(pad, int) else 1) + 1
            self.max_length = min(self.max_length, max(positions, 2))
        tokenizer_max = getattr(self.tokenizer, "model_max_length", None)
        if isinstance(tokenizer_max, int) and 0 < tokenizer_max < 1_000_000:
            self.max_length = min(self.max_length, tokenizer_max)
        self._lock = threading.Lock()  # one call at a time: fast tokenizers are not thread-safe
        if (model_dir / ONNX_FILE).exists():
            import onnxruntime as ort

            self._session = ort.InferenceSession(str(model_dir / ONNX_FILE), providers=["CPUExecutionProvider"])
            self.input_names = [i.name for i in self._session.get_inputs()]
            self._output = self._session.get_outputs()[0].name
            self.runtime = "onnxruntime"
        elif (model_dir / OPENVINO_FILE).exists():
            self._request = load_openvino(model_dir / OPENVINO_FILE, meta.get("inference_precision", "f32"))
            self.input_names = [port.get_any_name() for port in self._request.model_inputs]
            self.runtime = "openvino"
        else:
            import torch

            self._torch = torch
            self._model = load_torch_model(model_dir, config, meta)
            self.input_names = ["input_ids", "attention_mask"] + (["token_type_ids"] if config.type_vocab_size else [])
            self.runtime = "pytorch"

    def _forward(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        if self.runtime == "onnxruntime":
            return self._session.run([self._output], batch)[0]
        if self.runtime == "openvino":
            self._request.infer(batch)
            return self._request.get_output_tensor(0).data.copy()
        torch = self._torch
        with torch.inference_mode():
            logits = self._model(**{k: torch.from_numpy(v) for k, v in batch.items()}).logits
            return logits.float().cpu().numpy()

    def predict(self, text: str) -> dict[str, float]:
        with self._lock:
            encoded = self.tokenizer([text], padding=True, truncation=True, max_length=self.max_length,
                                     return_tensors="np")
            batch = {name: encoded[name].astype(np.int64) for name in self.input_names if name in encoded}
            logits = np.asarray(self._forward(batch), dtype=np.float32)
        return {label: float(p) for label, p in zip(self.labels, softmax(logits)[0], strict=True)}


def build_demo(classifier: Classifier) -> Any:
    import gradio as gr

    def predict(text: str) -> dict[str, float]:
        """Every label's probability for one text."""
        if not (text or "").strip():
            raise gr.Error("type a text first")
        return classifier.predict(text)

    return gr.Interface(
        fn=predict,
        inputs=gr.Textbox(label="Text", lines=3, placeholder="Type a sentence, then Submit"),
        outputs=gr.Label(label="Label probabilities", num_top_classes=len(classifier.labels)),
        title=TITLE,
        description=DESCRIPTION,
        api_name="predict",
        flagging_mode="never",
    )


def main() -> None:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # offline: no usage reports
    port = os.environ.get("PORT") or os.environ.get("GRADIO_SERVER_PORT")
    build_demo(Classifier()).launch(server_name=os.environ.get("GRADIO_SERVER_NAME") or None,
                                    server_port=int(port) if port else None)


if __name__ == "__main__":
    main()
