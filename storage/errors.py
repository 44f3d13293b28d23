"""Errors whose message is meant for the user, as one clear line (CLI stderr, UI banner)."""

from __future__ import annotations

from collections.abc import Iterable


class WorkbenchError(Exception):
    """Base of every error the workbench reports to a user without a traceback.

    The message speaks of the request's fields ("choose a model or a variant"), not of one surface's controls.
    `inputs` names those fields and `what` the kind of thing not found, so a surface can add its own hint: the
    CLI names its flags (`--model or --variant`) and its listing command (`workbench models list`).
    """

    def __init__(self, message: str = "", *, inputs: Iterable[str] = (), what: str | None = None):
        super().__init__(message)
        self.inputs = tuple(inputs)
        self.what = what


class NotFound(WorkbenchError):
    pass


class InvalidInput(WorkbenchError):
    pass


class Conflict(WorkbenchError):
    pass
