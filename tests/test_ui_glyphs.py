"""The UI's status marks are symbols every font carries, never colour emoji (drawn as empty boxes where no emoji
font is installed, as in Debian's Chromium without fonts-noto-color-emoji)."""

from __future__ import annotations

import io
import tokenize
import unicodedata
from pathlib import Path

from tests.conftest import REPO

UI_SOURCES = sorted((REPO / "workbench").rglob("*.py")) + [REPO / "jobs" / "export" / "space_app.py"]


def colour_emoji(text: str) -> list[str]:
    """Characters drawn only from an emoji font: the pictographs above the Basic Multilingual Plane, the emoji-only
    symbols below it (Unicode's Emoji_Presentation ones that DejaVu lacks) and the variation selector that asks
    for an emoji presentation."""
    emoji_only = {"\u2705", "\u274c", "\u274e", "\u23f3", "\u231b", "\u26d4", "\u2b50", "\u23f0", "\u2753", "\u2757",
                  "\ufe0f"}
    return [c for c in text if ord(c) > 0xFFFF or c in emoji_only]


def string_literals(path: Path) -> list[tuple[int, str]]:
    tokens = tokenize.generate_tokens(io.StringIO(path.read_text(encoding="utf-8")).readline)
    return [(t.start[0], t.string) for t in tokens if t.type in (tokenize.STRING, getattr(tokenize, "FSTRING_MIDDLE", -1))]


def test_the_check_finds_colour_emoji():
    assert colour_emoji("✅ done 🔄 ✂️") == ["✅", "🔄", "\ufe0f"]
    assert colour_emoji("✓ ✗ ○ ↻ ⊘ ✂ ⚠ ℹ ★ ◆ ◐") == []


def test_no_ui_string_is_a_colour_emoji():
    found = [f"{path.relative_to(REPO)}:{line}: {''.join(colour_emoji(text))} "
             f"({', '.join(unicodedata.name(c, hex(ord(c))) for c in colour_emoji(text))})"
             for path in UI_SOURCES for line, text in string_literals(path) if colour_emoji(text)]
    assert not found, "\n".join(found)


def test_the_status_marks_are_the_ones_the_tables_use():
    from workbench import search_words, ui
    from workbench.tabs import wizard

    assert ui.ok("saved").startswith("✓ ") and ui.fail("no such job").startswith("✗ ")
    assert set(search_words.STATE_ICONS.values()) | set(wizard.STATUS_ICONS.values()) == {"✓", "✗", "○", "↻", "⊘", "✂"}
