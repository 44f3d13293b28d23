"""The job-kind registry: name -> (typed params, run function, what the kind needs).

A new kind is one module in `jobs/kinds/` with `@register(...)`; the runner, the CLI and the UI find it here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

from storage import settings
from storage.errors import InvalidInput


@dataclass(frozen=True)
class JobKind:
    name: str
    params_cls: type
    run: Callable[[Any, Any], dict[str, Any] | None]
    summary: str
    needs_variant: bool = True
    needs_dataset: bool = False
    device: str = "cpu"  # cpu | cuda | any: which workers may claim it
    # explain(params, dataset) -> {param: "value (why)"} for params left on auto, shown before launch
    explain: Callable[[Any, Any], dict[str, str]] | None = None
    # available() -> (ok, reason): whether this installation can run the kind at all (TensorRT needs a GPU)
    available: Callable[[], tuple[bool, str]] | None = None
    # output_runtime(params, input_runtime) -> runtime of the variant it yields; raises InvalidInput when the
    # input cannot be used, so a job or a whole pipeline is refused before anything is queued
    output_runtime: Callable[[Any, str], str] | None = None
    # queued by the workbench itself (an evaluation after each new variant, an inspection after intake), so not
    # offered as a step to launch by hand
    automatic: bool = False

    def availability(self) -> tuple[bool, str]:
        return self.available() if self.available else (True, "")


_KINDS: dict[str, JobKind] = {}


def takes(kind: str, accepts: tuple[str, ...], produces: str | None = None) -> Callable[[Any, str], str]:
    """An `output_runtime` rule declared as data: which input runtimes a kind takes and what it yields."""

    def rule(_params: Any, runtime: str) -> str:
        if runtime not in accepts:
            raise InvalidInput(f"{kind} takes a {' or '.join(accepts)} variant, not {runtime}")
        return produces or runtime

    return rule


def register(
    name: str,
    params_cls: type,
    *,
    summary: str,
    needs_variant: bool = True,
    needs_dataset: bool = False,
    device: str = "cpu",
    explain: Callable[[Any, Any], dict[str, str]] | None = None,
    available: Callable[[], tuple[bool, str]] | None = None,
    output_runtime: Callable[[Any, str], str] | None = None,
    automatic: bool = False,
) -> Callable:
    if device not in ("cpu", "cuda", "any"):
        raise ValueError(f"device must be cpu, cuda or any, not {device!r}")

    def decorate(fn: Callable) -> Callable:
        if name in _KINDS:
            raise ValueError(f"job kind {name!r} is registered twice ({_KINDS[name].run.__module__} and {fn.__module__})")
        _KINDS[name] = JobKind(
            name, params_cls, fn, summary, needs_variant, needs_dataset, device, explain, available, output_runtime,
            automatic,
        )
        return fn

    return decorate


_loaded = False


def load_kinds() -> None:
    """Import the built-in kinds and any WORKBENCH_PLUGINS modules (each registers its kinds on import)."""
    global _loaded
    if _loaded:
        return
    importlib.import_module("jobs.kinds")
    for module in filter(None, (m.strip() for m in settings.get("WORKBENCH_PLUGINS").split(","))):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise InvalidInput(f"WORKBENCH_PLUGINS: cannot import {module!r}: {exc}") from None
    _loaded = True


def get_kind(name: str) -> JobKind:
    load_kinds()
    kind = _KINDS.get(name)
    if kind is None:
        raise InvalidInput(f"unknown job kind {name!r}; known kinds: {', '.join(sorted(_KINDS))}")
    return kind


def all_kinds() -> list[JobKind]:
    load_kinds()
    return [_KINDS[k] for k in sorted(_KINDS)]
