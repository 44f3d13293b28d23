"""`distill`: train a smaller student on the train split against any variant's soft labels (teacher = input variant).

The teacher is called through its Predictor, so an ONNX or TensorRT variant can teach. The student starts from
the nearest fp32 PyTorch ancestor with every other layer kept, or from a small built-in configuration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

from jobs.ml.artifacts import inherited_meta, save_pytorch_variant
from jobs.ml.data import split_examples
from jobs.ml.training import TrainSettings, set_seed, train_classifier
from jobs.runner.context import JobContext, JobResult
from jobs.runner.registry import register, takes
from jobs.runtimes import load_predictor
from jobs.runtimes.torch_runtime import is_plain_fp32
from jobs.tasks import text_classification
from storage import catalog, shared_artifacts
from storage.entities import Variant
from storage.errors import InvalidInput

SMALL_CONFIG = {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 1024}


@dataclass(frozen=True)
class DistillParams:
    student: Literal["half-layers", "third-layers", "small-4x256"] = field(default="half-layers", metadata={
        "help": "half-layers: the teacher's PyTorch weights with every other layer dropped; third-layers: every "
                "third layer kept; small-4x256: a fresh 4-layer, 256-wide BERT using the teacher's tokenizer"})
    temperature: float = field(default=2.0, metadata={"help": "softens teacher and student distributions in the KL term"})
    alpha: float = field(default=0.7, metadata={"help": "weight of the distillation term; 1 - alpha goes to the gold labels"})
    epochs: int = field(default=3, metadata={"help": "passes over the training data"})
    learning_rate: float = field(default=1e-4, metadata={"help": "peak learning rate"})
    batch_size: int = field(default=32, metadata={"help": "examples per step"})
    max_train_examples: int = field(default=0, metadata={"help": "train on a fixed random sample; 0 = the whole train split"})
    max_val_examples: int = field(default=0, metadata={"help": "validate each epoch on a fixed random sample; 0 = the whole validation split"})
    patience: int = field(default=1, metadata={"help": "early stopping: epochs without a better validation accuracy"})
    seed: int = field(default=42, metadata={"help": "seed for shuffling and initialisation"})
    mixed_precision: Literal["auto", "bf16", "off"] = field(default="auto", metadata={
        "help": "bf16 autocast while training; auto = on where bf16 is fast"})
    hidden_weight: float = field(default=0.0, metadata={
        "help": "intermediate-layer distillation: weight of the mean squared error between each student layer's "
                "output and the teacher's at the same depth (every 2nd or 3rd layer); half-layers and third-layers "
                "students only; 0 = off"})

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        if self.hidden_weight < 0:
            raise ValueError(f"hidden_weight must be 0 (off) or positive, got {self.hidden_weight}")
        if self.hidden_weight and self.student == "small-4x256":
            raise ValueError("hidden_weight needs a student as wide as its teacher (half-layers or third-layers); "
                             "small-4x256 is 256 wide")
        if not 0 <= self.alpha <= 1:
            raise ValueError(f"alpha must be between 0 and 1, got {self.alpha}")
        for name in ("epochs", "batch_size", "patience"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_train_examples < 0 or self.max_val_examples < 0:
            raise ValueError("max_train_examples and max_val_examples must be 0 (all) or positive")
        if not 0 < self.learning_rate < 1:
            raise ValueError(f"learning_rate={self.learning_rate} must be in (0, 1)")


def pytorch_ancestor(variant: Variant) -> Variant:
    """The nearest fp32 PyTorch variant on the lineage (the variant itself first)."""
    current: Variant | None = variant
    while current is not None:
        if is_plain_fp32(current):
            return current
        current = catalog.get_variant(current.parent_id) if current.parent_id else None
    raise InvalidInput(f"variant {variant.id} has no fp32 PyTorch ancestor to build a half-layers student from")


def build_student(params: DistillParams, teacher: Variant, labels: list[str], ctx: JobContext) -> tuple[Any, Any, dict]:
    from transformers import AutoConfig, AutoTokenizer

    from jobs.runtimes.structure import encoder_module
    from jobs.runtimes.torch_runtime import load_torch_model

    base = pytorch_ancestor(teacher)
    shared_artifacts.ensure_variant(base)  # an ancestor: on this node (fetched from a URL root), or why not
    base_dir = Path(base.artifact_dir)
    tokenizer = AutoTokenizer.from_pretrained(base_dir, trust_remote_code=False, local_files_only=True)
    meta = inherited_meta(base_dir)
    label_maps = text_classification.head_config(labels)
    if params.student in ("half-layers", "third-layers"):
        import torch

        model = load_torch_model(base_dir, apply_quantization=False)
        encoder = encoder_module(model)
        layers = list(encoder.layer)
        keep = list(range(0, len(layers), 2 if params.student == "half-layers" else 3))
        encoder.layer = torch.nn.ModuleList(layers[i] for i in keep)
        for i, layer in enumerate(encoder.layer):
            if hasattr(layer.attention.self, "layer_idx"):
                layer.attention.self.layer_idx = i
        model.config.num_hidden_layers = len(keep)
        if meta.get("kept_heads"):
            meta["kept_heads"] = {str(new): meta["kept_heads"][str(old)] for new, old in enumerate(keep)}
        if text_classification.labels(model.config) != labels:
            model.classifier = torch.nn.Linear(model.classifier.in_features, len(labels))
            model.config.update(label_maps)
            model.num_labels = len(labels)
        ctx.log(f"student: layers {keep} of {len(layers)} from variant {base.id}")
    else:
        config = AutoConfig.from_pretrained(base_dir, trust_remote_code=False, local_files_only=True)
        config.update({**SMALL_CONFIG, **label_maps, "architectures": None})
        meta.pop("kept_heads", None)
        model = text_classification.TASK.model_class().from_config(config)
        ctx.log(f"student: fresh {SMALL_CONFIG} using the tokenizer of variant {base.id}")
    return model, tokenizer, meta


def hidden_state_loss(teacher: Variant, params: DistillParams, ctx: JobContext) -> Callable[[Any, Any], Any]:
    """The intermediate-layer term: the mean squared error between student layer j's output and teacher layer
    k*j's (k = 2 for half-layers, 3 for third-layers: the depth the student's layer j stands for, as DistilBERT and
    TinyBERT map layers), padding masked out, times `hidden_weight`. The teacher here is the nearest fp32 PyTorch
    ancestor, run beside the student on each batch: hidden states are not what a Predictor returns."""
    import torch

    from jobs.runtimes.torch_runtime import load_torch_model

    base = pytorch_ancestor(teacher)
    shared_artifacts.ensure_variant(base)
    model = load_torch_model(Path(base.artifact_dir), apply_quantization=False).eval()
    for weight in model.parameters():
        weight.requires_grad_(False)
    step = 2 if params.student == "half-layers" else 3
    ctx.log(f"intermediate-layer distillation: student layer j against layer {step}*j of variant {base.id}, "
            f"weight {params.hidden_weight:g}")

    def loss(student_states: Any, enc: Any) -> Any:
        with torch.no_grad():
            teacher_states = model(**enc, output_hidden_states=True).hidden_states
        mask = enc["attention_mask"].unsqueeze(-1).float()
        terms = []
        for j in range(1, len(student_states)):
            target = teacher_states[min(step * j, len(teacher_states) - 1)].float()
            squared = (student_states[j].float() - target) ** 2 * mask
            terms.append(squared.sum() / (mask.sum() * squared.shape[-1]))
        return params.hidden_weight * torch.stack(terms).mean()

    return loss


@register("distill", DistillParams, summary="Distil any variant into a smaller student", needs_dataset=True,
          output_runtime=takes("distill", ("pytorch", "onnxruntime", "openvino", "tensorrt"), "pytorch"),
          quick_params={"epochs": 2, "max_train_examples": 1024, "max_val_examples": 128},  # as finetune's
          progress_weight=4.0)  # training dominates a pipeline's time
def run(params: DistillParams, ctx: JobContext) -> JobResult:
    import torch

    from jobs.runtimes.devices import fast_bf16

    teacher, dataset = ctx.require_variant(), ctx.require_dataset()
    train = split_examples(dataset, "train", params.max_train_examples)
    validation = split_examples(dataset, "validation", params.max_val_examples)
    ctx.progress(0.02, f"teacher: variant {teacher.id} ({teacher.runtime} {teacher.precision})")
    predictor = load_predictor(teacher)
    labels = predictor.labels
    if sorted(labels) != sorted(dataset.labels):
        raise InvalidInput(f"the teacher's labels ({', '.join(labels)}) are not the dataset's ({', '.join(dataset.labels)})")
    max_length = predictor.max_length
    def before_batch(done: int, total: int) -> None:
        ctx.check_cancelled()
        ctx.progress(0.02 + 0.18 * done / total, f"teacher soft labels {done}/{total}")

    teacher_logits = torch.from_numpy(predictor.predict_logits(train.texts, 64, before_batch))
    predictor.close()
    set_seed(params.seed)
    model, tokenizer, meta = build_student(params, teacher, labels, ctx)
    t = params.temperature

    def loss_fn(student_logits: Any, gold: Any, idx: Any) -> Any:
        soft = torch.nn.functional.kl_div(
            torch.log_softmax(student_logits / t, -1), torch.softmax(teacher_logits[idx] / t, -1), reduction="batchmean"
        ) * (t * t)
        hard = torch.nn.functional.cross_entropy(student_logits, gold)
        return params.alpha * soft + (1 - params.alpha) * hard

    settings = TrainSettings(
        epochs=params.epochs, learning_rate=params.learning_rate, batch_size=params.batch_size, max_length=max_length,
        seed=params.seed, patience=params.patience,
        bf16=params.mixed_precision == "bf16" or (params.mixed_precision == "auto" and fast_bf16("cpu")),
    )
    outcome = train_classifier(model, tokenizer, (train.texts, train.label_ids(labels)),
                               (validation.texts, validation.label_ids(labels)), labels, settings, ctx,
                               loss_fn=loss_fn, progress_span=(0.2, 0.9),
                               hidden_loss=hidden_state_loss(teacher, params, ctx) if params.hidden_weight else None)
    ctx.progress(0.92, "saving")
    meta["max_length"] = max_length
    out = save_pytorch_variant(model, tokenizer, ctx.work_dir / "student", meta)
    training = {"mode": f"distill-{params.student}", "history": outcome.history, "best_epoch": outcome.best_epoch,
                "best_val_accuracy": outcome.best_accuracy, "stopped_early": outcome.stopped_early,
                "train_examples": len(train), "seconds": outcome.seconds, "teacher_variant": teacher.id,
                "temperature": t, "alpha": params.alpha, "hidden_weight": params.hidden_weight,
                "parameters": sum(p.numel() for p in model.parameters())}
    return ctx.output_variant(out, runtime="pytorch", precision="fp32", step=f"distill-{params.student}",
                              info={"training": training, "labels": labels, "max_length": max_length},
                              dataset_id=dataset.id, result={"training": training})
