"""The job-kind registry: name -> (typed params, run function, what the kind needs).

A new kind is one module in `jobs/kinds/` with `@register(...)`; the runner, the CLI and the UI find it here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, Mapping

from jobs.plugins import Registry
from storage.errors import InvalidInput

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from jobs.runner.context import JobContext, JobResult
    from storage.entities import Job, Variant


@dataclass(frozen=True)
class JobKind:
    name: str
    params_cls: type
    run: Callable[[Any, JobContext], JobResult]  # run(params as params_cls, ctx)
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
    # tracking(job, result) -> {"metrics": [(key, value, step)], "artifacts": {file name: JSON data}}: what a
    # finished job of this kind adds to its MLflow run beyond what every run records (see jobs.tracking.runs)
    tracking: Callable[[Job, dict[str, Any]], dict[str, Any]] | None = None
    # advice(params as the user gave them, possibly partial; hardware as jobs.runtimes.devices.detect() reports
    # it) -> notes on known slow paths, shown before launch (see jobs.decisions.advice)
    advice: Callable[[dict[str, Any], dict[str, Any]], list[str]] | None = None
    # its advice cites the speedups measured on this machine (kinds that make or measure faster variants)
    cites_measured_speedups: bool = False
    # params that make it small and fast for a quick trial (a wizard's first look, a test)
    quick_params: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    # its share of a pipeline's time, relative to an ordinary step (1.0), so a progress bar moves evenly
    progress_weight: float = 1.0
    # check(params) -> raises InvalidInput when the params name something that cannot be used now (a deployment
    # that is gone, or not on loopback), so the job is refused before anything is queued
    check: Callable[[Any], None] | None = None

    def availability(self) -> tuple[bool, str]:
        return self.available() if self.available else (True, "")


_KINDS: Registry[JobKind] = Registry("job kind", "kinds", lambda: importlib.import_module("jobs.kinds"))


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
    tracking: Callable[[Job, dict[str, Any]], dict[str, Any]] | None = None,
    advice: Callable[[dict[str, Any], dict[str, Any]], list[str]] | None = None,
    cites_measured_speedups: bool = False,
    quick_params: Mapping[str, Any] | None = None,
    progress_weight: float = 1.0,
    check: Callable[[Any], None] | None = None,
) -> Callable:
    if device not in ("cpu", "cuda", "any"):
        raise ValueError(f"device must be cpu, cuda or any, not {device!r}")

    def decorate(fn: Callable) -> Callable:
        _KINDS.add(name, JobKind(
            name, params_cls, fn, summary, needs_variant, needs_dataset, device, explain, available, output_runtime,
            automatic, tracking=tracking, advice=advice, cites_measured_speedups=cites_measured_speedups,
            quick_params=MappingProxyType(dict(quick_params or {})), progress_weight=progress_weight, check=check,
        ), fn.__module__)
        return fn

    return decorate


@dataclass(frozen=True)
class FollowUp:
    """The job queued after every job that yields a variant (the evaluation that gives it its accuracy)."""

    kind: str  # the kind it queues; a producer's `evaluation` params (see `submit`) are this kind's params
    # queue(session, producer, variant) -> the job queued, or None when the variant needs none; it runs in the
    # producer's final transaction, so the follow-up exists exactly when the variant does
    queue: Callable[[Session, Job, Variant], Job | None]


_follow_up: FollowUp | None = None


def follows_new_variant(kind: str) -> Callable:
    """Declare the decorated `queue(session, producer, variant)` as what follows every new variant.

    The kind that takes this role (the evaluation) registers it, so the runner queues it without naming it.
    """

    def decorate(fn: Callable) -> Callable:
        global _follow_up
        if _follow_up is not None:
            raise ValueError(f"a new variant is already followed by {_follow_up.kind!r} ({_follow_up.queue.__module__}); "
                             f"{fn.__module__} cannot declare {kind!r} too")
        _follow_up = FollowUp(kind, fn)
        return fn

    return decorate


def new_variant_follow_up() -> FollowUp | None:
    """What is queued after every new variant, if any kind declared it."""
    load_kinds()
    return _follow_up


def load_kinds() -> None:
    """Import the built-in kinds and any WORKBENCH_PLUGINS modules (each registers its kinds on import)."""
    _KINDS.load()


def get_kind(name: str) -> JobKind:
    return _KINDS.get(name)


def all_kinds() -> list[JobKind]:
    return _KINDS.all()
