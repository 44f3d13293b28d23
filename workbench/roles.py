"""Who may change things: editors do everything; viewers (stakeholders on a shared link) only look and try.

Accounts come from settings: `WORKBENCH_AUTH` lists editors and `WORKBENCH_VIEWERS` read-only viewers, each as
comma-separated `user:password` pairs. With neither set the workbench is a local, single-user tool and everyone
is an editor. Refusal happens on the server, in the event handler itself, so a viewer who calls an event
directly (not through a visible button) is refused just the same.
"""

from __future__ import annotations

import functools
import hmac
import inspect
import typing
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
    """For `launch(auth=...)`. Constant-time comparison, so response timing does not leak the password."""
    account = accounts().get(username)
    return account is not None and hmac.compare_digest(account[0].encode(), (password or "").encode())


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

    The wrapper adds a `gr.Request` parameter that Gradio fills in, so the handler keeps its own signature. It
    goes after the handler's positional parameters (before `*args`, for a handler of a rendered form whose
    number of inputs varies): Gradio inserts the Request at that index in the arguments. Called directly
    (tests, other code) without a request, the handler acts for an anonymous user: refused once accounts exist.
    Direct callers may pass `_role_request=` as a keyword (the only way, for a handler with `*args`).
    """

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(fn)
        params = list(signature.parameters.values())
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        index = len(positional)  # where Gradio puts the Request
        varargs = any(p.kind is p.VAR_POSITIONAL for p in params)
        extra = inspect.Parameter("_role_request", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None,
                                  annotation=gr.Request)

        @functools.wraps(fn)
        def guarded(*args, **kwargs):
            if "_role_request" in kwargs:
                request = kwargs.pop("_role_request")
            elif len(args) > index and (not varargs or args[index] is None or isinstance(args[index], gr.Request)):
                # Gradio always puts the Request (or None) there; with *args, anything else there is an argument
                request, args = args[index], (*args[:index], *args[index + 1:])
            else:
                request = None
            if not isinstance(request, gr.Request):
                request = None  # no request: an anonymous caller
            if not is_editor(request):
                raise gr.Error(READ_ONLY.format(action=action), print_exception=False)
            return fn(*args, **kwargs)

        rest = params[index:]
        guarded.__signature__ = signature.replace(parameters=[*positional, extra, *rest])  # type: ignore[attr-defined]
        # Gradio finds the Request parameter through the type hints, so they must name it, and must resolve:
        # one unresolvable string annotation would hide the Request and refuse editors too.
        try:
            hints = typing.get_type_hints(fn)
        except (NameError, TypeError):
            hints = {}
        guarded.__annotations__ = {**hints, "_role_request": gr.Request}
        guarded.editor_only = action  # type: ignore[attr-defined]  # lets tests find every write handler
        return guarded

    return wrap


# ---- finding what is guarded, and what a viewer sees ---------------------------------------------------------


def write_handlers(blocks: gr.Blocks) -> dict[int, str]:
    """fn index -> action of every event handler guarded with `editor_only` (the write paths of the app).

    Handlers drawn by a `gr.render` exist only per session, once the render ran; they are not listed here.
    """
    return {index: block_fn.fn.editor_only for index, block_fn in blocks.fns.items()
            if getattr(block_fn.fn, "editor_only", None)}


def editor_control(*components: Any) -> Any:
    """Mark components (buttons, uploads, the section around them) that viewers do not see.

    Hiding is only for a tidy page: the handlers behind them are guarded with `editor_only` as well.
    Returns the one component given, or the tuple.
    """
    for component in components:
        component.workbench_editor_only = True
    return components[0] if len(components) == 1 else components


def editor_controls(blocks: gr.Blocks) -> list[Any]:
    return [block for block in blocks.blocks.values() if getattr(block, "workbench_editor_only", False)]


def banner_text(username: str | None) -> str:
    role = role_of(username)
    who = username or "anonymous"
    if role == VIEWER:
        return (f"Signed in as **{who}** (viewer: read-only). You can use Variants, Compare, its reports and the "
                "playground (Predictor, A/B); adding, launching and cancelling are for editors.")
    return f"Signed in as **{who}** (editor)."


def show_for_role(blocks: gr.Blocks, banner: Any, tabs: Any, editor_tabs: list[Any], landing: str) -> None:
    """A banner with the user and role, and editor tabs and controls only for editors.

    With accounts configured, editor tabs and controls start hidden and the page-load event shows them to an
    editor; a viewer (or a failed load) keeps the read-only page, opened on the `landing` tab. Without
    accounts nothing changes. Call at the end of the app's `gr.Blocks`, once every control is marked.
    """
    # only what is visible to begin with is hidden, and shown again: a control that starts hidden for its own
    # reasons (a download that appears later) keeps its own logic
    hidden = [b for b in [*editor_tabs, *editor_controls(blocks)] if b.visible is True]
    if not auth_configured():
        return
    for block in hidden:
        block.visible = False

    def view(request: gr.Request):
        username = getattr(request, "username", None)
        banner_update = gr.update(value=banner_text(username), visible=True)
        if role_of(username) == EDITOR:
            return (banner_update, gr.skip(), *(gr.update(visible=True) for _ in hidden))
        return (banner_update, gr.Tabs(selected=landing), *(gr.skip() for _ in hidden))

    blocks.load(view, None, [banner, tabs, *hidden], api_visibility="private", show_progress="hidden")
