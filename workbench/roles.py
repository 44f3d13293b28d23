"""Who may change things: editors do everything; viewers (stakeholders on a shared link) only look and try.

Accounts come from settings: `WORKBENCH_AUTH` lists editors and `WORKBENCH_VIEWERS` read-only viewers, each as
comma-separated `user:password` pairs. With neither set the workbench is a local, single-user tool and everyone
is an editor. Refusal happens on the server, in the event handler itself, so a viewer who calls an event
directly (not through a visible button) is refused just the same.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

import gradio as gr

from storage import settings
from storage.errors import InvalidInput

EDITOR, VIEWER = "editor", "viewer"
READ_ONLY = "read-only: a viewer can use Compare, reports and the playground; ask an editor to {action}"


def _pairs(env: str) -> list[tuple[str, str]]:
    out = []
    for item in filter(None, (x.strip() for x in settings.get(env).split(","))):
        user, sep, password = item.partition(":")
        if not sep or not user or not password:
            raise InvalidInput(f"{env}: {item!r} is not user:password")
        out.append((user, password))
    return out


def accounts() -> dict[str, tuple[str, str]]:
    """username -> (password, role). A name listed as both is a viewer (the safer reading)."""
    table = {user: (password, EDITOR) for user, password in _pairs("WORKBENCH_AUTH")}
    table.update({user: (password, VIEWER) for user, password in _pairs("WORKBENCH_VIEWERS")})
    return table


def auth_configured() -> bool:
    return bool(accounts())


def check_login(username: str, password: str) -> bool:
    """For `launch(auth=...)`."""
    account = accounts().get(username)
    return account is not None and account[0] == password


def role_of(username: str | None) -> str:
    table = accounts()
    if not table:
        return EDITOR  # local use, no accounts: the one user owns everything
    if username is None or username not in table:
        return VIEWER  # configured but unknown: never more than read-only
    return table[username][1]


def is_editor(request: gr.Request | None) -> bool:
    return role_of(getattr(request, "username", None)) == EDITOR


def editor_only(action: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a write handler: a viewer gets a `gr.Error` ("read-only: … ask an editor to <action>").

    The wrapper adds a `gr.Request` parameter that Gradio fills in, so the handler keeps its own signature.
    """

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(fn)
        params = list(signature.parameters.values())
        # Last and positional, with a default: Gradio inserts the Request at its index in the arguments.
        extra = inspect.Parameter("_role_request", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None, annotation=gr.Request)

        @functools.wraps(fn)
        def guarded(*args, **kwargs):
            if "_role_request" in kwargs:
                request = kwargs.pop("_role_request")
            elif len(args) > len(params):
                request, args = args[-1], args[:-1]
            else:
                request = None
            if not is_editor(request):
                raise gr.Error(READ_ONLY.format(action=action), print_exception=False)
            return fn(*args, **kwargs)

        guarded.__signature__ = signature.replace(parameters=[*params, extra])  # type: ignore[attr-defined]
        # Gradio finds the Request parameter through the type hints, so they must name it too.
        guarded.__annotations__ = {**getattr(fn, "__annotations__", {}), "_role_request": gr.Request}
        guarded.editor_only = action  # type: ignore[attr-defined]  # lets tests find every write handler
        return guarded

    return wrap
