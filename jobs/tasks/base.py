"""What a task is: the one interface every task module fills in (see `jobs.tasks` for how to add one).

A config here is either a transformers `PretrainedConfig` or the dict read from a model's config.json: intake
sees only the JSON (it loads no transformers), the runtimes and kinds have the loaded config.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

Config = Any  # a transformers PretrainedConfig, or the dict read from config.json


def config_value(config: Config, key: str, default: Any = None) -> Any:
    """One field of a config, whether it is a loaded `PretrainedConfig` or the raw config.json dict."""
    if isinstance(config, dict):
        return config.get(key, default)
    return getattr(config, key, default)


def architectures(config: Config) -> list[str]:
    """The model classes the config names (`BertForSequenceClassification`, ...); empty when it names none."""
    return [str(a) for a in config_value(config, "architectures") or []]


def read_config(model_dir: str | Path) -> dict[str, Any] | None:
    """A model directory's config.json as a dict, without loading transformers; None if absent or unreadable.

    Every runtime's layout keeps the Hugging Face config (ONNX and TensorRT variants copy their parent's).
    """
    try:
        config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


@dataclass(frozen=True)
class Task:
    """Everything the workbench does differently for one task, in one record.

    The callables take a config (see `Config`); `metrics` takes gold and predicted outputs as the task's
    predictor returns them.
    """

    name: str = field(metadata={"help": "the id stored on each model (models.task) and shown in the CLI"})
    display_name: str = field(metadata={"help": "the name shown to people"})
    auto_model_class: str = field(metadata={
        "help": "the transformers Auto class that loads a model of this task (never with trust_remote_code)"})
    prediction: str = field(metadata={"help": "what a predictor of this task returns, its shape and fields"})
    quality_metric: str = field(metadata={
        "help": "the key of `metrics(...)` that ranks variants by quality (the sweet spot's quality axis)"})
    benchmark_measures: str = field(metadata={"help": "what one benchmark cell (one measurement row) times"})
    has_head: Callable[[Config], bool] = field(metadata={
        "help": "whether the config names this task's head: a model that can predict as it is"})
    can_become: Callable[[Config], bool] = field(metadata={
        "help": "whether the model can be taken for this task at intake: it has the head, or is a base model "
                "that fine-tuning gives one"})
    labels: Callable[[Config], list[str]] = field(metadata={
        "help": "the output names the config declares (id order); empty when the task has none"})
    metrics: Callable[[Sequence[Any], Sequence[Any], Sequence[str]], dict[str, Any]] = field(metadata={
        "help": "metrics(gold, predicted, labels) -> scores, `quality_metric` among them"})

    def model_class(self) -> Any:
        """The transformers Auto class named by `auto_model_class` (imports transformers, so call it late)."""
        import transformers

        return getattr(transformers, self.auto_model_class)

    def head_labels(self, model_dir: str | Path) -> list[str] | None:
        """The labels of the model in `model_dir`, read from its config.json; None without this task's head."""
        config = read_config(model_dir)
        if config is None or not self.has_head(config):
            return None
        return self.labels(config)
