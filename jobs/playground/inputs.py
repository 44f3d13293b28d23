"""Input checks the playground and the model server share: a text is a non-empty string within
WORKBENCH_MAX_TEXT_CHARS, a batch holds at most WORKBENCH_MAX_BATCH_LINES of them. Each refusal is one line.

Kept apart from `predict` (pandas, the predictor cache, the database) so the model server, and a deployment bundle
that carries a copy of it, need nothing more than settings and errors.
"""

from __future__ import annotations

from typing import Sequence

from storage import settings
from storage.errors import InvalidInput


def check_text(text: str | None) -> str:
    if text is not None and not isinstance(text, str):
        raise InvalidInput(f"a text must be a string, not {type(text).__name__}")
    text = (text or "").strip()
    if not text:
        raise InvalidInput("the text is empty: type a sentence or pick an example")
    limit = settings.get("WORKBENCH_MAX_TEXT_CHARS")
    if len(text) > limit:
        raise InvalidInput(f"the text is {len(text):,} characters; the limit is {limit:,} (WORKBENCH_MAX_TEXT_CHARS)")
    return text


def check_batch(texts: Sequence[str]) -> list[str]:
    limit = settings.get("WORKBENCH_MAX_BATCH_LINES")
    if len(texts) > limit:
        raise InvalidInput(f"{len(texts):,} texts; the limit is {limit:,} per batch (WORKBENCH_MAX_BATCH_LINES)")
    if not texts:
        raise InvalidInput("no texts: paste one per line or upload a CSV with a text column")
    checked = []
    for i, text in enumerate(texts, 1):
        try:
            checked.append(check_text(text))
        except InvalidInput as exc:
            raise InvalidInput(f"text {i}: {exc}") from None
    return checked
