"""Tasks: what differs between a text classifier and (next) a text generator, behind one `Task` record.

A task says how to recognise its models from their config, how to load them (the transformers Auto class),
what their labels are, what a predictor returns, which metric ranks variants by quality and what a benchmark
measures. Each model records its task (`Model.task`), set at intake from its config.

How to add a task (text generation, say):
  1. Write one module here, `jobs/tasks/text_generation.py`, with the functions a `Task` needs (see
     `jobs.tasks.base.Task` for each field) and `TASK = Task(name="text-generation", ...)`; its `has_head`
     claims the configs that name its head (`...ForCausalLM`).
  2. Register it below with `register_task(text_generation.TASK)`.
  Intake then records the new task for the models it claims; the runtimes, kinds and charts ask
  `get_task(model.task)` rather than assuming a classifier.
"""

from __future__ import annotations

from jobs.tasks import text_classification
from jobs.tasks.base import Config, Task, architectures
from storage.errors import InvalidInput

DEFAULT_TASK = text_classification.TASK.name  # what a model with no config (a single .onnx file) is taken for

_TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    """Add a task to the registry (once per name)."""
    if task.name in _TASKS and _TASKS[task.name] is not task:
        raise ValueError(f"task {task.name!r} is registered twice")
    _TASKS[task.name] = task
    return task


def known_tasks() -> list[str]:
    return list(_TASKS)


def get_task(name: str) -> Task:
    try:
        return _TASKS[name]
    except KeyError:
        raise InvalidInput(f"unknown task {name!r}; the workbench knows {', '.join(known_tasks())}") from None


def task_of_config(config: Config, shown: str = "this model") -> Task:
    """The task of a model, recognised from its config (a loaded config or the config.json dict).

    A task whose head the config names wins; else the first task that can take the model (a base checkpoint
    fine-tuning gives a head). Refused (InvalidInput naming the known tasks) when no task can take it.
    """
    for task in _TASKS.values():
        if task.has_head(config):
            return task
    for task in _TASKS.values():
        if task.can_become(config):
            return task
    names = architectures(config)
    described = f"a {', '.join(names)}" if names else "a model of no known task"
    raise InvalidInput(f"{shown} is {described}, not a model the workbench can use: it handles "
                       f"{', '.join(t.display_name.lower() for t in _TASKS.values())} "
                       f"(known tasks: {', '.join(known_tasks())})")


register_task(text_classification.TASK)

__all__ = ["DEFAULT_TASK", "Task", "get_task", "known_tasks", "register_task", "task_of_config"]
