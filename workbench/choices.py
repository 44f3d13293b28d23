"""Dropdown choices, (label, value) pairs with the id as the value, in one label format for every tab: '#3 name'.

Browser tests pick an option by its '#<id> ' prefix, so every picker starts its labels that way.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

Choice = tuple[str, str]
NONE: Choice = ("(none)", "")  # the first option of a picker that may be left empty


def ref_choices(items: Iterable[Any], describe: Callable[[Any], str]) -> list[Choice]:
    """'#<id> <what describe says>' -> id, for anything with an `id`."""
    return [(f"#{item.id} {describe(item)}", str(item.id)) for item in items]


def named_choices(items: Iterable[Any]) -> list[Choice]:
    """Models and datasets: '#3 name' -> '3'."""
    return ref_choices(items, lambda item: item.name)


def variant_choices(variants: Iterable[Any]) -> list[Choice]:
    """Variants (entities or VariantSummary rows): '#3 name (runtime precision)' -> '3'."""
    return ref_choices(variants, lambda v: f"{v.name} ({v.runtime} {v.precision})")


def job_choices(jobs: Iterable[Any]) -> list[Choice]:
    """Jobs: '#3 kind · status' -> '3'."""
    return ref_choices(jobs, lambda j: f"{j.kind} · {j.status.value}")


def experiment_choices(experiments: Iterable[Any]) -> list[Choice]:
    """Traffic experiments: '#3 name (A #1 / B #2, B gets 50 %)' -> '3'."""
    return ref_choices(experiments, lambda e: f"{e.name} (A #{e.variant_a_id} / B #{e.variant_b_id}, "
                                              f"B gets {e.split_b_percent:g} %)")
