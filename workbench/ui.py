"""Small UI helpers shared by the tabs: turning core errors into messages and entities into table rows."""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any, Callable

from storage.errors import WorkbenchError

# Status marks from the symbols every UI font carries (DejaVu Sans, which Debian's Chromium falls back on, has
# them all), never colour emoji: without an emoji font installed, ✅ ❌ ⏳ 🔄 ⛔ are drawn as empty boxes, and a
# status column of boxes says nothing. tests/test_ui_glyphs.py keeps colour emoji out of the UI's sources.
OK, FAILED, WARNING, INFO = "✓", "✗", "⚠", "ℹ"
QUEUED, RUNNING, CANCELLED, PRUNED = "○", "↻", "⊘", "✂"


def ok(message: str) -> str:
    return f"{OK} {message}"


def fail(message: str) -> str:
    return f"{FAILED} {message}"


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
