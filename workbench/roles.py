"""Who may change things: editors do everything; viewers (stakeholders on a shared link) only look and try.

Accounts come from settings: `WORKBENCH_AUTH` lists editors and `WORKBENCH_VIEWERS` read-only viewers, each as
comma-separated `user:password` pairs. With neither set the workbench is a local, single-user tool and everyone
is an editor. Refusal happens on the server, so a viewer who calls an event directly (by its function index or
API name, not through a visible button) is refused just the same, in two places:

- `GuardedBlocks` checks every event before it runs: only handlers on the `VIEWER_READABLE` allow-list run for a
  viewer; everything else (the hidden tabs, job logs, server paths, traffic experiments) is editor-only by default.
- `editor_only` guards each write handler itself, with the action in its message, whoever calls it.
"""

from __future__ import annotations

import functools
import hmac
import inspect
import re
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


# ---- every event handler: viewer-readable or editor-only -----------------------------------------------------

# What a viewer may run: functions named by the module that defines them and their name. Everything else is
# editor-only: a new handler stays closed to viewers until it is listed here (and in tests/test_sharing.py).
# A lambda is never viewer-readable (its name says nothing); give a viewer's handler a name.
VIEWER_READABLE: dict[str, frozenset[str]] = {
    "workbench.http_endpoints": frozenset({"predict", "predict_batch", "ab_compare", "ab_test_set"}),
    "workbench.roles": frozenset({"view"}),  # the banner and tabs for the role
    "workbench.tabs.variants": frozenset({"refresh", "tick", "variant_view", "variants_html"}),  # no paths for viewers
    "workbench.tabs.compare": frozenset({"refresh", "render", "write_report"}),
    "workbench.tabs.predictor": frozenset({"refresh", "predict", "examples", "pick_example", "predict_many",
                                           "fix_values"}),
    # side by side and on a split; of the traffic split only the results (starting, sending, feedback: editors)
    "workbench.tabs.ab": frozenset({"refresh", "compare", "run_on_split", "disagreement_frame", "fix_values",
                                    "show_experiment"}),
    # the deployments and their live metrics; deploying, stopping and the servers' logs (paths): editors
    "workbench.tabs.deploy": frozenset({"refresh", "tick"}),
    "workbench.tabs.deploy_drift": frozenset({"show_drift", "dataset_choices"}),  # figures only, no paths
    # a deployment's load tests as figures and charts; running one and following its job: editors
    "workbench.tabs.deploy_loadtest": frozenset({"load_test_view"}),
    # a canary's arms (figures) and rollout events; deploying, the share, promote and rollback: editors
    "workbench.tabs.deploy_canary": frozenset({"canary_view", "canary_choices"}),
    "workbench.tabs.compare_loadtest": frozenset({"load_tests_view"}),
    "workbench.tabs.compare_machines": frozenset({"machines_view"}),  # figures and a chart, no paths
    "workbench.tabs.compare_searches": frozenset({"searches_view"}),  # a search's figures, chart and recipes
}
TAB_TITLES = {"ab": "A/B"}  # module name -> tab title, where .title() is wrong


def handler_function(block_fn: Any) -> Callable[..., Any] | None:
    """The function an event runs (a `gr.render`'s own function for a render); None for a browser-only event."""
    renderable = getattr(block_fn, "renderable", None)
    return renderable.fn if renderable is not None else block_fn.fn


def handler_key(block_fn: Any) -> str | None:
    """`module:name` of the function an event runs, as `VIEWER_READABLE` names it; None for a browser-only event."""
    fn = handler_function(block_fn)
    if fn is None:
        return None
    return f"{getattr(fn, '__module__', None)}:{getattr(fn, '__name__', type(fn).__name__)}"


def viewer_readable(block_fn: Any) -> bool:
    fn = handler_function(block_fn)
    if fn is None or getattr(fn, "editor_only", None):
        return False
    module, _, name = (handler_key(block_fn) or "").partition(":")
    return name != "<lambda>" and name in VIEWER_READABLE.get(module, frozenset())


def handler_roles(blocks: gr.Blocks) -> dict[int, str]:
    """fn index -> VIEWER (a viewer may run it) or EDITOR, for every event that runs something on the server."""
    return {index: VIEWER if viewer_readable(block_fn) else EDITOR
            for index, block_fn in blocks.fns.items() if handler_function(block_fn) is not None}


def _refused_action(block_fn: Any) -> str:
    fn = handler_function(block_fn)
    action = getattr(fn, "editor_only", None)
    if action:
        return action
    module = getattr(fn, "__module__", "") or ""
    if module.startswith("workbench.tabs."):
        name = module.rsplit(".", 1)[-1]
        return f"use the {TAB_TITLES.get(name, name.title())} tab"
    return "do this"


def refusal(block_fn: Any, request: gr.Request | None) -> gr.Error | None:
    """The error a caller gets for running this event, or None when they may.

    A write handler's refusal is shown (its controls are hidden from viewers, so only a script meets it). The rest
    are events a viewer's own page fires by itself (the hidden tabs' page-load refreshes and timers): refused just
    the same, but not shown, so the read-only page stays quiet.
    """
    if viewer_readable(block_fn) or is_editor(request):
        return None
    fn = handler_function(block_fn)
    return gr.Error(READ_ONLY.format(action=_refused_action(block_fn)), print_exception=False,
                    visible=bool(getattr(fn, "editor_only", None)))


class GuardedBlocks(gr.Blocks):
    """`gr.Blocks` that checks the caller's role before every event runs, however it was called (the page, the
    queue by function index, `/run`, `/call`, gradio_client): see `refusal`."""

    async def process_api(self, block_fn, inputs, state=None, request=None, *args, **kwargs):  # type: ignore[override]
        fn = self.fns[block_fn] if isinstance(block_fn, int) else block_fn
        error = refusal(fn, request[0] if isinstance(request, list) and request else request)
        if error is not None:
            raise error
        return await super().process_api(block_fn, inputs, state, request, *args, **kwargs)


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


PATH_HIDDEN = "(a path on the server: shown to editors)"
_ABSOLUTE = re.compile(r"^(/|~|[A-Za-z]:[\\/]|file:)")


def without_paths(value: Any) -> Any:
    """`value` (JSON-like) with every string that is a filesystem path replaced, for what viewers are shown."""
    if isinstance(value, str):
        return PATH_HIDDEN if _ABSOLUTE.match(value) or str(settings.home()) in value else value
    if isinstance(value, dict):
        return {k: without_paths(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [without_paths(v) for v in value]
    return value


def banner_text(username: str | None) -> str:
    role = role_of(username)
    who = username or "anonymous"
    if role == VIEWER:
        return (f"Signed in as **{who}** (viewer: read-only). You can use Variants, Compare, its reports and the "
                "playground (Predictor, A/B), and watch deployments; adding, launching, cancelling, deploying and "
                "traffic experiments are for editors.")
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
