"""One training loop for fine-tuning and distillation.

A plain loop rather than transformers' Trainer because the job needs step-level progress and cancellation in the
DB, per-epoch validation records, early stopping that keeps the best weights in memory (no checkpoint files), and
one place where distillation swaps the loss.
"""

from __future__ import annotations

import copy
import math
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from jobs.ml.metrics import classification_metrics, model_validity
from jobs.runner.context import JobContext


@dataclass(frozen=True)
class TrainSettings:
    epochs: int
    learning_rate: float
    batch_size: int
    max_length: int
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    seed: int = 42
    patience: int = 1  # epochs without a better validation accuracy before stopping
    bf16: bool = False  # autocast matmuls to bfloat16 (fast on CPUs with AMX, and on recent GPUs)


@dataclass
class TrainOutcome:
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0
    best_accuracy: float = 0.0
    stopped_early: bool = False
    seconds: float = 0.0
    best_validity: dict[str, Any] = field(default_factory=dict)  # metrics.model_validity of the best epoch


# loss(student_logits, gold_label_ids, example_indices) -> scalar tensor
LossFn = Callable[[Any, Any, Any], Any]
HiddenLossFn = Callable[[Any, Any], Any]  # (the model's hidden states, the batch's encoding) -> a loss term


def set_seed(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _autocast(enabled: bool, device: str):
    import torch

    return torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16) if enabled else nullcontext()


def predict_labels(model: Any, tokenizer: Any, texts: Sequence[str], settings: TrainSettings, device: str) -> list[int]:
    import torch

    model.eval()
    out: list[int] = []
    with torch.inference_mode(), _autocast(settings.bf16, device):
        for i in range(0, len(texts), settings.batch_size * 2):
            enc = tokenizer(list(texts[i : i + settings.batch_size * 2]), padding=True, truncation=True,
                            max_length=settings.max_length, return_tensors="pt").to(device)
            out.extend(model(**enc).logits.argmax(-1).tolist())
    return out


def train_classifier(
    model: Any,
    tokenizer: Any,
    train: tuple[Sequence[str], Sequence[int]],
    validation: tuple[Sequence[str], Sequence[int]],
    label_names: Sequence[str],
    settings: TrainSettings,
    ctx: JobContext,
    *,
    device: str = "cpu",
    loss_fn: LossFn | None = None,
    hidden_loss: HiddenLossFn | None = None,
    progress_span: tuple[float, float] = (0.1, 0.9),
) -> TrainOutcome:
    """Train `model` in place; on return it holds the weights of the best validation epoch.

    `loss_fn(logits, gold, idx)` replaces cross-entropy; `hidden_loss(hidden_states, encoding)`, when given, is
    added to it each step (the model then returns its hidden states: intermediate-layer distillation)."""
    import torch
    from transformers import get_linear_schedule_with_warmup

    set_seed(settings.seed)
    texts, labels = list(train[0]), torch.tensor(list(train[1]), dtype=torch.long)
    trainable = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in trainable if p.ndim >= 2]
    no_decay = [p for p in trainable if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=settings.learning_rate,
    )
    steps_per_epoch = math.ceil(len(texts) / settings.batch_size)
    total_steps = steps_per_epoch * settings.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(total_steps * settings.warmup_ratio), total_steps)
    loss_fn = loss_fn or (lambda logits, gold, _idx: torch.nn.functional.cross_entropy(logits.float(), gold))
    generator = torch.Generator().manual_seed(settings.seed)

    outcome = TrainOutcome()
    best_state: dict[str, Any] | None = None
    started = time.monotonic()
    step = 0
    start, end = progress_span
    for epoch in range(1, settings.epochs + 1):
        model.train()
        order = torch.randperm(len(texts), generator=generator)
        epoch_loss, epoch_started = 0.0, time.monotonic()
        for b in range(steps_per_epoch):
            idx = order[b * settings.batch_size : (b + 1) * settings.batch_size]
            enc = tokenizer([texts[i] for i in idx.tolist()], padding=True, truncation=True,
                            max_length=settings.max_length, return_tensors="pt").to(device)
            with _autocast(settings.bf16, device):
                outputs = model(**enc, output_hidden_states=hidden_loss is not None)
            loss = loss_fn(outputs.logits.float(), labels[idx].to(device), idx)
            if hidden_loss is not None:
                loss = loss + hidden_loss(outputs.hidden_states, enc)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            epoch_loss += loss.item()
            step += 1
            if step % 10 == 0 or b == steps_per_epoch - 1:
                ctx.check_cancelled()
                ctx.progress(start + (end - start) * step / total_steps,
                             f"epoch {epoch}/{settings.epochs}, step {b + 1}/{steps_per_epoch}, loss {loss.item():.4f}")
        predicted = predict_labels(model, tokenizer, validation[0], settings, device)
        scores = classification_metrics(list(validation[1]), predicted, label_names)
        record = {
            "epoch": epoch,
            "train_loss": round(epoch_loss / steps_per_epoch, 5),
            "val_accuracy": round(scores["accuracy"], 5),
            "val_macro_f1": round(scores["macro_f1"], 5),
            "seconds": round(time.monotonic() - epoch_started, 1),
        }
        outcome.history.append(record)
        ctx.record({"history": outcome.history})
        ctx.log(f"epoch {epoch}: loss {record['train_loss']}, validation accuracy {record['val_accuracy']:.4f}, "
                f"macro-F1 {record['val_macro_f1']:.4f} ({record['seconds']} s)")
        if best_state is None or scores["accuracy"] > outcome.best_accuracy:
            outcome.best_epoch, outcome.best_accuracy = epoch, scores["accuracy"]
            outcome.best_validity = model_validity(scores["confusion"]) if validation[0] else {}
            best_state = copy.deepcopy(model.state_dict())
        elif epoch - outcome.best_epoch >= settings.patience and epoch < settings.epochs \
                and not outcome.best_validity.get("degenerate"):  # a model that only learned the prior goes on
            outcome.stopped_early = True
            ctx.log(f"early stop: no better validation accuracy for {settings.patience} epoch(s); keeping epoch {outcome.best_epoch}")
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    outcome.seconds = round(time.monotonic() - started, 1)
    return outcome
