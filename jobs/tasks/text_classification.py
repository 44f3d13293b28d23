"""Text classification: a text in, one label of a fixed set out.

A model of this task has a sequence-classification head (`...ForSequenceClassification` in its config); its
labels are the config's `id2label`. A base checkpoint (a bare encoder, a masked-LM or causal-LM checkpoint) is
taken too: fine-tuning gives it a head. What is refused is a model for images, audio or video.
"""

from __future__ import annotations

from typing import Any, Sequence

from jobs.tasks.base import Config, Task, architectures, config_value

HEAD_SUFFIX = "ForSequenceClassification"

# Heads of models that read pixels or sound, not tokens: no text classifier can be made from them. Compared
# against the end of each architecture name the config lists.
NON_TEXT_HEADS = (
    "ForImageClassification", "ForImageClassificationWithTeacher", "ForMaskedImageModeling",
    "ForZeroShotImageClassification", "ForObjectDetection", "ForZeroShotObjectDetection", "ForSemanticSegmentation",
    "ForInstanceSegmentation", "ForUniversalSegmentation", "ForDepthEstimation", "ForKeypointDetection",
    "ForImageToImage", "ForVideoClassification", "ForAudioClassification", "ForAudioFrameClassification",
    "ForCTC", "ForSpeechSeq2Seq", "ForXVector",
)


def has_head(config: Config) -> bool:
    """Whether the config names a sequence-classification head: a classifier to predict with, not a bare encoder."""
    return any(a.endswith(HEAD_SUFFIX) for a in architectures(config))


def can_become(config: Config) -> bool:
    """A classifier already, or a base model a classification head can be trained on (anything but a model
    whose every named architecture reads images, audio or video)."""
    names = architectures(config)
    return has_head(config) or not names or not all(a.endswith(NON_TEXT_HEADS) for a in names)


def _label_id(key: Any) -> int:
    # config.json keys are strings ("0", "1"); a loaded config's are ints
    return int(key) if str(key).lstrip("-").isdigit() else 0


def labels(config: Config) -> list[str]:
    """The classifier's label names in id order (the columns of its logits); empty when the config has none."""
    id2label = config_value(config, "id2label") or {}
    return [str(id2label[k]) for k in sorted(id2label, key=_label_id)]


def head_config(label_names: Sequence[str]) -> dict[str, Any]:
    """The config fields a new classification head for these labels needs (`from_pretrained` / `from_config`)."""
    names = list(label_names)
    return {"num_labels": len(names), "id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)}}


def metrics(gold: Sequence[int], predicted: Sequence[int], label_names: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro-F1 and the confusion matrix of label ids (see jobs.ml.metrics)."""
    from jobs.ml.metrics import classification_metrics

    return classification_metrics(gold, predicted, label_names)


TASK = Task(
    name="text-classification",
    display_name="Text classification",
    auto_model_class="AutoModelForSequenceClassification",
    prediction="logits, float32 [batch, num_labels], one column per label in id order (probabilities after softmax)",
    quality_metric="accuracy",
    benchmark_measures="latency of one forward pass per batch size x sequence length (inputs padded to the length)",
    has_head=has_head,
    can_become=can_become,
    labels=labels,
    metrics=metrics,
)
