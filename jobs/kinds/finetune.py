"""`finetune`: train a classification head (and the encoder: full, frozen, or LoRA) on a dataset's train split."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from jobs.ml.artifacts import inherited_meta, save_pytorch_variant
from jobs.ml.data import split_examples
from jobs.ml.metrics import degenerate_advice
from jobs.ml.training import TrainSettings, train_classifier
from jobs.runner.context import JobContext, JobResult
from jobs.runner.registry import register, takes
from jobs.tasks import text_classification
from storage.entities import Dataset, Variant
from storage.errors import InvalidInput

DEFAULT_LR = {"full": 5e-5, "head-only": 2e-3, "lora": 5e-4}


@dataclass(frozen=True)
class FinetuneParams:
    mode: Literal["full", "head-only", "lora"] = field(default="full", metadata={
        "help": "full: train every weight; head-only: freeze the encoder, train the classifier; lora: low-rank adapters (peft), merged on save"})
    epochs: int = field(default=0, metadata={"help": "passes over the training data; 0 = auto by dataset size (5 / 3 / 2 under 2k / 10k / above)"})
    learning_rate: float = field(default=0.0, metadata={"help": "peak learning rate; 0 = auto (full 5e-5, head-only 2e-3, LoRA 5e-4)"})
    batch_size: int = field(default=0, metadata={"help": "examples per step; 0 = auto (16 under 2k examples, else 32)"})
    max_length: int = field(default=0, metadata={"help": "tokens per text; 0 = auto (95th percentile of the training texts, 32-256)"})
    max_train_examples: int = field(default=0, metadata={"help": "train on a fixed random sample of this many examples; 0 = the whole train split"})
    max_val_examples: int = field(default=0, metadata={"help": "validate each epoch on a fixed random sample; 0 = the whole validation split"})
    warmup_ratio: float = field(default=0.1, metadata={"help": "fraction of steps with a linear learning-rate warm-up"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (not applied to biases and LayerNorm)"})
    patience: int = field(default=1, metadata={"help": "early stopping: epochs without a better validation accuracy before stopping"})
    seed: int = field(default=42, metadata={"help": "seed for shuffling and head initialisation"})
    mixed_precision: Literal["auto", "bf16", "off"] = field(default="auto", metadata={
        "help": "bf16 autocast while training; auto = on where bf16 is fast (AMX CPUs, recent GPUs)"})
    lora_rank: int = field(default=8, metadata={"help": "LoRA: rank of the adapters"})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA: scaling alpha"})
    lora_dropout: float = field(default=0.1, metadata={"help": "LoRA: dropout on the adapter input"})
    lora_target_modules: tuple[str, ...] = field(default=("query", "value"), metadata={
        "help": "LoRA: names of the Linear modules to adapt (comma-separated)"})
    keep_adapter: bool = field(default=False, metadata={"help": "LoRA: also keep the unmerged adapter in adapter/"})

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "max_length", "max_train_examples", "max_val_examples", "lora_rank", "lora_alpha",
                     "patience"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be 0 (auto) or positive, got {getattr(self, name)}")
        if self.epochs > 100:
            raise ValueError(f"epochs={self.epochs} is more than 100; use fewer epochs")
        if not 0 <= self.learning_rate < 1:
            raise ValueError(f"learning_rate={self.learning_rate} must be in [0, 1); 0 means auto")
        if self.max_length > 512:
            raise ValueError(f"max_length={self.max_length} exceeds 512, the position limit of BERT-family models")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio={self.warmup_ratio} must be in [0, 1)")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"lora_dropout={self.lora_dropout} must be in [0, 1)")
        if self.mode == "lora" and (self.lora_rank < 1 or not self.lora_target_modules):
            raise ValueError("LoRA needs lora_rank >= 1 and at least one target module (e.g. query,value)")


def auto_choices(params: FinetuneParams, train_examples: int) -> dict[str, tuple[Any, str]]:
    """The value and the reason for every parameter left at 0 (auto), from the training-set size."""
    n = min(train_examples, params.max_train_examples or train_examples)
    size = f"{n:,} training examples"
    chosen: dict[str, tuple[Any, str]] = {}
    if not params.epochs:
        chosen["epochs"] = (5 if n < 2000 else 3 if n < 10000 else 2, size)
    if not params.batch_size:
        chosen["batch_size"] = (16 if n < 2000 else 32, size)
    if not params.learning_rate:
        chosen["learning_rate"] = (DEFAULT_LR[params.mode], f"mode {params.mode}")
    if not params.max_length:
        chosen["max_length"] = ("measured", "95th percentile of training-text token counts, when the job starts")
    return chosen


def explain_defaults(params: FinetuneParams, dataset: Dataset | None) -> dict[str, str]:
    if dataset is None:
        return {}
    chosen = auto_choices(params, dataset.split_sizes.get("train", 0))
    return {name: f"{value} ({why})" for name, (value, why) in chosen.items()}


def measured_max_length(tokenizer: Any, texts: list[str]) -> int:
    import numpy as np

    lengths = [len(ids) for ids in tokenizer(texts[:1000], truncation=False)["input_ids"]]
    p95 = int(np.percentile(lengths, 95)) if lengths else 128
    return int(min(256, max(32, -(-p95 // 16) * 16)))


def load_base(variant: Variant, labels: list[str], ctx: JobContext) -> Any:
    """The model to train: a classifier parent with the same labels keeps its head; anything else gets a new head."""
    from transformers import AutoConfig

    from jobs.runtimes.base import read_variant_meta
    from jobs.runtimes.torch_runtime import is_classifier, is_plain_fp32, load_torch_model, model_labels

    if not is_plain_fp32(variant):
        raise InvalidInput("fine-tune an fp32 PyTorch variant; this one is quantized or reduced-precision")
    variant_dir = Path(variant.artifact_dir)
    meta = read_variant_meta(variant_dir)
    config = AutoConfig.from_pretrained(variant_dir, trust_remote_code=False, local_files_only=True)
    if is_classifier(config) and model_labels(config) == labels:
        ctx.log("continuing from the parent's classification head (same labels)")
        return load_torch_model(variant_dir, apply_quantization=False)
    if meta.get("kept_heads"):
        raise InvalidInput("this pruned variant's labels differ from the dataset's; fine-tune before pruning")
    ctx.log(f"new classification head for {len(labels)} labels: {', '.join(labels)}")
    return text_classification.TASK.model_class().from_pretrained(
        variant_dir, trust_remote_code=False, local_files_only=True, use_safetensors=True,
        **text_classification.head_config(labels),
        ignore_mismatched_sizes=True,
    )


def prepare_mode(model: Any, params: FinetuneParams, ctx: JobContext) -> Any:
    if params.mode == "head-only":
        for p in model.base_model.parameters():
            p.requires_grad = False
    elif params.mode == "lora":
        from peft import LoraConfig, TaskType, get_peft_model

        config = LoraConfig(task_type=TaskType.SEQ_CLS, r=params.lora_rank, lora_alpha=params.lora_alpha,
                            lora_dropout=params.lora_dropout, target_modules=list(params.lora_target_modules))
        try:
            model = get_peft_model(model, config)
        except ValueError as exc:
            raise InvalidInput(f"LoRA: {exc}") from None
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    ctx.log(f"mode {params.mode}: {trainable:,} of {total:,} parameters trainable ({trainable / total:.1%})")
    return model


# A quick trial's fine-tune, sized on the built-in MiniLM + tweet sentiment so it does not end with a model that
# learned only the label prior: 256 examples x 1 epoch gave 55-62 % (macro-F1 0.40-0.46; 34 % on an AVX2 EPYC, all
# "negative"), 1,024 x 2 gave 64 % (58.8-69.5 %, macro-F1 0.58) vs 42 % for the majority class, in 2.5 min of
# training on a busy 2-core Xeon (benchmarks/wizard_trial.py).
QUICK_PARAMS = {"epochs": 2, "max_train_examples": 1024, "max_val_examples": 128, "max_length": 32}


@register("finetune", FinetuneParams, summary="Fine-tune a classifier: full, head-only or LoRA", needs_dataset=True,
          explain=explain_defaults, output_runtime=takes("finetune", ("pytorch",)), quick_params=QUICK_PARAMS,
          progress_weight=4.0)  # training dominates a pipeline's time
def run(params: FinetuneParams, ctx: JobContext) -> JobResult:
    from transformers import AutoConfig, AutoTokenizer

    from jobs.runtimes.base import position_limit
    from jobs.runtimes.devices import fast_bf16

    variant, dataset = ctx.require_variant(), ctx.require_dataset()
    if variant.runtime != "pytorch":
        raise InvalidInput(f"fine-tuning needs a PyTorch variant; variant {variant.id} is {variant.runtime}")
    source = Path(variant.artifact_dir)
    ctx.progress(0.02, "reading the dataset")
    labels = list(dataset.labels)
    train = split_examples(dataset, "train", params.max_train_examples)
    validation = split_examples(dataset, "validation", params.max_val_examples)
    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False, local_files_only=True)
    chosen = auto_choices(params, len(train))
    positions = position_limit(AutoConfig.from_pretrained(source, trust_remote_code=False, local_files_only=True), tokenizer)
    if params.max_length and positions and params.max_length > positions:
        raise InvalidInput(f"max_length={params.max_length} is longer than this model takes ({positions} positions); "
                           f"use max_length <= {positions}", inputs=("max_length",))
    max_length = params.max_length or measured_max_length(tokenizer, train.texts)
    if not params.max_length:
        if positions and max_length > positions:
            max_length = positions
            chosen["max_length"] = (max_length, "the model's maximum positions (shorter than the training texts' "
                                                "95th percentile token count)")
        else:
            chosen["max_length"] = (max_length, "95th percentile of the training texts' token counts")
    settings = TrainSettings(
        epochs=params.epochs or chosen["epochs"][0],
        learning_rate=params.learning_rate or chosen["learning_rate"][0],
        batch_size=params.batch_size or chosen["batch_size"][0],
        max_length=max_length,
        warmup_ratio=params.warmup_ratio,
        weight_decay=params.weight_decay,
        seed=params.seed,
        patience=params.patience,
        bf16=params.mixed_precision == "bf16" or (params.mixed_precision == "auto" and fast_bf16("cpu")),
    )
    ctx.log(f"settings: {settings}")
    ctx.progress(0.05, "loading the model")
    from jobs.ml.training import set_seed

    set_seed(params.seed)
    model = prepare_mode(load_base(variant, labels, ctx), params, ctx)
    outcome = train_classifier(model, tokenizer, (train.texts, train.label_ids(labels)),
                               (validation.texts, validation.label_ids(labels)), labels, settings, ctx)
    ctx.progress(0.92, "saving")
    out = ctx.work_dir / "variant"
    if params.mode == "lora":
        if params.keep_adapter:
            model.save_pretrained(ctx.work_dir / "adapter")
        model = model.merge_and_unload()  # a plain model again: every runtime and exporter can use it
    save_pytorch_variant(model, tokenizer, out, inherited_meta(source, max_length=max_length))
    if params.mode == "lora" and params.keep_adapter:
        import shutil

        shutil.move(str(ctx.work_dir / "adapter"), out / "adapter")
    training = {
        "mode": params.mode,
        "history": outcome.history,
        "best_epoch": outcome.best_epoch,
        "best_val_accuracy": outcome.best_accuracy,
        "stopped_early": outcome.stopped_early,
        "train_examples": len(train),
        "seconds": outcome.seconds,
        "settings": {k: getattr(settings, k) for k in settings.__dataclass_fields__},
        "auto": {name: f"{value} ({why})" for name, (value, why) in chosen.items()},
    }
    ctx.log(f"best validation accuracy {outcome.best_accuracy:.4f} at epoch {outcome.best_epoch}")
    message = "done"
    if outcome.best_validity.get("degenerate"):
        training["degenerate_reason"] = outcome.best_validity["degenerate_reason"]
        message = (f"done, but the model is degenerate on the validation split: "
                   f"{outcome.best_validity['degenerate_reason']}; "
                   + degenerate_advice(len(train), settings.epochs, settings.learning_rate))
        ctx.log(message)
    result = ctx.output_variant(out, runtime="pytorch", precision="fp32", step=f"finetune-{params.mode}",
                                info={"training": training, "labels": labels, "max_length": max_length},
                                dataset_id=dataset.id, result={"training": training})
    result.message = message
    return result
