"""Typed job parameters: frozen dataclasses whose fields carry `help` metadata.

`parse_params` turns user input (a JSON dict from the CLI or the UI) into the dataclass, rejecting unknown keys
with the list of known ones and converting types, so `__post_init__` checks see real values. `describe` lists
the fields for building forms and `--help` text.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from typing import Any, Literal

from storage.errors import InvalidInput

# Keys every job takes, whatever its kind, that the runner reads and the kind never sees (so no kind's params
# dataclass declares them): `hardware_class`, the custom Ray resource a node must advertise for the job to run
# there (see jobs/runner/executors/ray.py); `ran_on`, where the job last ran (a record, written by the executor).
HARDWARE_CLASS = "hardware_class"
RAN_ON = "ran_on"
RUNNER_PARAMS = (HARDWARE_CLASS, RAN_ON)
# a Ray custom resource name, and not one of the resources Ray itself counts
HARDWARE_CLASS_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,62}")
RAY_BUILTIN_RESOURCES = {"CPU", "GPU", "memory", "object_store_memory", "accelerator_type"}


def _convert(name: str, value: Any, annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(name, value, inner[0]) if len(inner) == 1 else value
    if origin is Literal:
        if value not in args:
            raise InvalidInput(f"{name}={value!r} is not allowed; use one of {', '.join(map(str, args))}")
        return value
    if origin in (tuple, list):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]  # `--param batch_sizes=16`: the CLI reads a lone number as JSON, a one-item list is meant
        if not isinstance(value, (list, tuple)):
            raise InvalidInput(f"{name} must be a list, got {value!r}")
        item_type = args[0] if args else Any
        items = [_convert(name, v, item_type) for v in value]
        return tuple(items) if origin is tuple else items
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
            return value.lower() in ("true", "yes", "1")
        raise InvalidInput(f"{name} must be true or false, got {value!r}")
    if annotation in (int, float):
        if isinstance(value, bool):
            raise InvalidInput(f"{name} must be a number, got {value!r}")
        try:
            converted = annotation(value)
        except (TypeError, ValueError):
            raise InvalidInput(f"{name} must be {'an integer' if annotation is int else 'a number'}, got {value!r}") from None
        if annotation is int and isinstance(value, float) and not value.is_integer():
            raise InvalidInput(f"{name} must be an integer, got {value!r}")
        return converted
    if annotation is str:
        if not isinstance(value, str):
            raise InvalidInput(f"{name} must be text, got {value!r}")
        return value
    return value


def runner_params(raw: dict[str, Any] | None) -> dict[str, Any]:
    """The runner's own keys in a job's params, checked: what a submit keeps beside the kind's params (`ran_on`
    is a record of a past run, so it is not carried into a new job)."""
    value = (raw or {}).get(HARDWARE_CLASS)
    if value is None or value == "":
        return {}
    if not isinstance(value, str) or not HARDWARE_CLASS_PATTERN.fullmatch(value) or value in RAY_BUILTIN_RESOURCES:
        raise InvalidInput(f"{HARDWARE_CLASS}={value!r} is not a hardware class: use the name of a custom resource "
                           "the node advertises (letters, digits, _ . -; e.g. avx512 or gpu_a100)")
    return {HARDWARE_CLASS: value}


def parse_params(cls: type, raw: dict[str, Any] | None) -> Any:
    """`raw` as the kind's params dataclass; the runner's own keys (RUNNER_PARAMS) are left out, not refused."""
    raw = {k: v for k, v in (raw or {}).items() if k not in RUNNER_PARAMS}
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise InvalidInput(
            f"unknown parameter(s) {', '.join(unknown)}; {cls.__name__} takes {', '.join(known) or 'none'}"
        )
    values = {name: _convert(name, value, hints[name]) for name, value in raw.items()}
    try:
        return cls(**values)
    except ValueError as exc:  # __post_init__ checks say how to fix the value
        raise InvalidInput(str(exc)) from None


def to_jsonable(params: Any) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(params).items()}


@dataclasses.dataclass(frozen=True)
class FieldInfo:
    name: str
    type: str
    default: Any
    help: str
    choices: tuple | None


def describe(cls: type) -> list[FieldInfo]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        annotation = hints[f.name]
        choices = typing.get_args(annotation) if typing.get_origin(annotation) is Literal else None
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None  # type: ignore[misc]
        )
        type_name = "choice" if choices else getattr(annotation, "__name__", str(annotation))
        out.append(FieldInfo(f.name, type_name, default, f.metadata.get("help", ""), choices))
    return out
