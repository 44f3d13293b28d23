"""Small UI helpers shared by the tabs: turning core errors into messages and entities into table rows."""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any, Callable

from storage.errors import WorkbenchError


def ok(message: str) -> str:
    return f"✅ {message}"


def fail(message: str) -> str:
    return f"❌ {message}"


def attempt(action: Callable[[], str]) -> str:
    """Run a user action; a WorkbenchError becomes a one-line message instead of a traceback."""
    try:
        return ok(action())
    except WorkbenchError as exc:
        return fail(str(exc))


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def mb(n: int | None) -> str:
    return f"{n / 1e6:.1f} MB" if n else ""


def builtin_picker(builtins: dict, what: str, button_id: str):
    """A dropdown of built-in (offline) models or datasets and its Add button."""
    import gradio as gr

    dropdown = gr.Dropdown(
        choices=[(f"{b.name}: {b.description}", f"builtin:{b.name}") for b in builtins.values()],
        value=f"builtin:{next(iter(builtins))}",
        label=f"Built-in {what} (offline)",
    )
    return dropdown, gr.Button(f"Add built-in {what}", variant="primary", elem_id=button_id)


@dataclass(frozen=True)
class Refresh:
    """What a tab re-reads when the page loads or the tab is opened: a function and the components it fills."""

    fn: Callable[[], tuple]
    outputs: list
