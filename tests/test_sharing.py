"""Sharing with stakeholders: `serve --share` only with accounts, sign-ins throttled, a read-only role enforced on the
server for every handler (called directly, not through the page), the playground open to viewers, and
`export-space`."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import free_port, run_cli, stored_files, wait_for
from tests.support.browser import wait_until_serving

ACCOUNTS = {"WORKBENCH_AUTH": "ed:pw1", "WORKBENCH_VIEWERS": "vi:pw2"}
# the served app: two more viewers whose sign-ins the throttling test locks, and a short first lock
LOCKOUT_S, MAX_FAILURES = 5, 5
SERVED_ENV = {**ACCOUNTS, "WORKBENCH_VIEWERS": "vi:pw2,target:pw3,racer:pw4", "WORKBENCH_LOGIN_LOCKOUT_S": str(LOCKOUT_S),
              "WORKBENCH_LOGIN_MAX_FAILURES": str(MAX_FAILURES)}
NO_ACCOUNTS = {"WORKBENCH_AUTH": "", "WORKBENCH_VIEWERS": ""}
READ_ONLY = "read-only: a viewer can use Compare, reports and the playground"
TEXT = "what a wonderful day"

# Handlers whose name says they change something, and buttons whose label does: each must be guarded.
WRITE_WORDS = r"add|launch|submit|cancel|register|promote|rollback|delete|remove|upload|import|archive|publish|export|deploy"
WRITE_NAME = re.compile(rf"(^|_)({WRITE_WORDS})(_|$)")
WRITE_LABEL = re.compile(rf"\b({WRITE_WORDS})\b", re.IGNORECASE)
VIEWER_BUTTONS = {  # labels that sound like writes but are not; viewers may use them
    "Export report (HTML + CSV + JSON)": "the Compare report is part of what viewers get",
    "Remove last step": "edits the unsaved pipeline draft held in the page; writes nothing",
}
# What this change guarded (at least these; other tabs add theirs). The Optimize form's launch and add-step
# handlers are drawn per session by gr.render, so the served test finds them through the render instead.
GUARDED = {"add_builtin_model", "add_model_from_path", "add_uploaded_model", "add_builtin_dataset",
           "add_uploaded_dataset", "upload_columns", "launch_pipeline", "submit_job", "cancel_job", "export_space_zip",
           "download_variant_zip"}
RENDERED_GUARDED = {"launch_one_job", "add_pipeline_step"}

# EVERY event handler of the app, by `module:function` (workbench.roles.handler_key), and who may run it. A handler
# missing here fails the test: decide, then list it here and, for a viewer's, in workbench.roles.VIEWER_READABLE.
V, E = "viewer", "editor"
HANDLERS = {
    **{f"workbench.http_endpoints:{n}": V for n in ("predict", "predict_batch", "ab_compare", "ab_test_set")},
    **{f"workbench.http_endpoints:{n}": E for n in ("traffic_request", "traffic_feedback")},  # write to experiments
    "workbench.roles:view": V,
    **{f"workbench.tabs.variants:{n}": V for n in ("refresh", "tick", "variant_view", "variants_html")},
    **{f"workbench.tabs.variants:{n}": E for n in ("export_space_zip", "download_variant_zip", "register_selected",
                                                     "promote_selected", "rollback_selected")},
    **{f"workbench.tabs.compare:{n}": V for n in ("refresh", "render", "write_report")},
    **{f"workbench.tabs.predictor:{n}": V for n in ("refresh", "predict", "examples", "pick_example", "predict_many",
                                                      "fix_values")},
    **{f"workbench.tabs.ab:{n}": V for n in ("refresh", "compare", "run_on_split", "disagreement_frame", "fix_values",
                                               "show_experiment")},
    **{f"workbench.tabs.ab:{n}": E for n in ("start", "send", "mark_correct", "mark_wrong", "simulate")},
    **{f"workbench.tabs.deploy:{n}": V for n in ("refresh", "tick")},
    **{f"workbench.tabs.deploy_drift:{n}": V for n in ("show_drift", "dataset_choices")},
    **{f"workbench.tabs.deploy:{n}": E for n in ("deploy_variant", "stop_deployment", "deployment_log", "fix_values")},
    "workbench.tabs.deploy_export:export_deployment_zip": E,  # a bundle holds the model files, like their download
    "workbench.tabs.deploy_loadtest:load_test_view": V,  # figures and a chart
    **{f"workbench.tabs.deploy_canary:{n}": V for n in ("canary_view", "canary_choices")},  # arms, events
    **{f"workbench.tabs.deploy_canary:{n}": E for n in ("deploy_with_canary", "change_percent", "promote_canary",
                                                          "rollback_canary")},
    **{f"workbench.tabs.deploy_loadtest:{n}": E for n in ("start_load_test", "load_test_progress", "dataset_choices")},
    "workbench.tabs.compare_loadtest:load_tests_view": V,
    "workbench.tabs.compare_machines:machines_view": V,
    "workbench.tabs.compare_searches:searches_view": V,
    # the tabs viewers do not get: model details (source paths), job details (logs), the wizard, the forms
    **{f"workbench.tabs.models:{n}": E for n in ("<lambda>", "add_builtin_model", "add_model_from_path",
                                                   "add_uploaded_model", "model_details", "models_frame")},
    **{f"workbench.tabs.datasets:{n}": E for n in ("<lambda>", "add_builtin_dataset", "add_uploaded_dataset",
                                                     "datasets_frame", "show", "upload_columns")},
    **{f"workbench.tabs.jobs:{n}": E for n in ("<lambda>", "cancel_job", "executor_line", "job_detail", "jobs_html",
                                                 "refresh", "submit_job", "workers_line")},
    **{f"workbench.tabs.optimize:{n}": E for n in ("<lambda>", "form", "launch_pipeline", "pick_kind", "pick_start",
                                                     "refresh")},
    **{f"workbench.tabs.wizard:{n}": E for n in (
        "<lambda>", "dataset_text", "follow", "in_address", "launch", "launch_remeasure", "model_text", "open_from_url",
        "preselect", "refresh", "reopen", "start_over", "to_dataset", "to_goal", "to_recipe", "to_review")},
    **{f"workbench.tabs.wizard_search:{n}": E for n in (  # the wizard's Search path: the tab is editors' only
        "back_to_goal", "follow_search", "launch_rerun", "launch_search", "open_search", "pick_approach",
        "search_list", "to_search")},
}


# ---- --share and accounts --------------------------------------------------------------------------------------


def test_share_without_accounts_is_refused_before_anything_starts(tmp_path):
    home = tmp_path / "home"
    proc = run_cli("serve", "--share", "--port", str(free_port()), env={**NO_ACCOUNTS, "WORKBENCH_HOME": str(home)},
                   check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--share" in lines[0] and "WORKBENCH_AUTH" in lines[0] and "WORKBENCH_VIEWERS" in lines[0]
    assert not home.exists()  # no database, no worker, no server


def test_malformed_accounts_are_refused_with_the_reason(tmp_path):
    proc = run_cli("serve", "--port", str(free_port()),
                   env={"WORKBENCH_AUTH": "ed-without-password", "WORKBENCH_HOME": str(tmp_path / "h")}, check=False)
    assert proc.returncode == 2 and "WORKBENCH_AUTH" in proc.stderr and "user:password" in proc.stderr
    assert not (tmp_path / "h").exists()


def test_roles_and_the_guard(monkeypatch):
    import gradio as gr

    from workbench import roles

    calls = []

    @roles.editor_only("do a thing")
    def plain(a, b=2):
        calls.append((a, b))
        return a + b

    @roles.editor_only("launch a form")
    def varargs(a, *raw):
        calls.append((a, raw))
        return len(raw)

    def request(user):
        return gr.Request(username=user)

    # no accounts: a local, single-user tool, so everyone (even without a request) is an editor
    for env in ACCOUNTS:
        monkeypatch.setenv(env, "")
    assert plain(1) == 3 and varargs(1, 2, 3) == 2 and not roles.auth_configured()

    for env, value in ACCOUNTS.items():
        monkeypatch.setenv(env, value)
    assert roles.role_of("ed") == roles.EDITOR and roles.role_of("vi") == roles.VIEWER
    assert roles.role_of("stranger") == roles.VIEWER and roles.role_of(None) == roles.VIEWER
    assert roles.check_login("vi", "pw2") and not roles.check_login("vi", "pw1") and not roles.check_login("x", "pw1")
    # Gradio passes the Request after the positional parameters (before *raw)
    assert plain(1, 5, request("ed")) == 6 and varargs(1, request("ed"), "x", "y") == 2
    assert calls[-1] == (1, ("x", "y"))
    assert varargs(1, "x", _role_request=request("ed")) == 1 and plain(2, _role_request=request("ed")) == 4
    for call in (lambda: plain(1, 5, request("vi")), lambda: varargs(1, request("vi"), "x"), lambda: plain(1)):
        with pytest.raises(gr.Error, match="read-only.*ask an editor to"):
            call()
    # a name listed as both editor and viewer is a viewer
    monkeypatch.setenv("WORKBENCH_VIEWERS", "vi:pw2,ed:pw1")
    assert roles.role_of("ed") == roles.VIEWER
    assert "viewer: read-only" in roles.banner_text("vi")


def test_every_handler_is_classified_viewer_readable_or_editor_only(home, monkeypatch):
    """Every event of the app (with accounts, so the role banner's too) is in HANDLERS, with the role the server
    gives it: a new handler fails here until someone decides who may run it (until then it is editor-only)."""
    from workbench import roles
    from workbench.app import build_app

    for env, value in ACCOUNTS.items():
        monkeypatch.setenv(env, value)
    app = build_app()
    given = {}
    for index, role in roles.handler_roles(app).items():
        given.setdefault(roles.handler_key(app.fns[index]), set()).add(role)
    unlisted = sorted(set(given) - set(HANDLERS))
    assert not unlisted, f"handlers nobody classified (editor-only until listed in tests and roles): {unlisted}"
    assert sorted(set(HANDLERS) - set(given)) == [], "HANDLERS lists handlers the app no longer has"
    assert {key: roles_.pop() for key, roles_ in given.items() if len(roles_) == 1} == HANDLERS
    # a lambda never runs for a viewer, and a write handler never does, whatever the allow-list says
    assert all(not key.endswith(":<lambda>") for key, role in HANDLERS.items() if role == V)
    assert all(HANDLERS[roles.handler_key(app.fns[i])] == E for i in roles.write_handlers(app))


def test_every_handler_that_sounds_like_a_write_is_guarded(home):
    from workbench import roles
    from workbench.app import build_app

    app = build_app()
    guarded = roles.write_handlers(app)
    names = {app.fns[i].name for i in guarded}
    assert names >= GUARDED, f"not guarded: {GUARDED - names}"
    unguarded_names = [f.name for i, f in app.fns.items() if WRITE_NAME.search(f.name) and i not in guarded]
    assert not unguarded_names, f"handlers named like writes without roles.editor_only: {unguarded_names}"
    unguarded_buttons = []
    for i, f in app.fns.items():
        for block_id, _event in f.targets:
            block = app.blocks.get(block_id)
            label = str(getattr(block, "value", "")) if type(block).__name__ in ("Button", "UploadButton") else ""
            if label and WRITE_LABEL.search(label) and label not in VIEWER_BUTTONS and i not in guarded:
                unguarded_buttons.append(f"{label!r} -> {f.name}")
    assert not unguarded_buttons, f"buttons that write without roles.editor_only: {unguarded_buttons}"
    # the playground and the Compare report stay open to viewers; traffic experiments are written by editors
    open_names = {app.fns[i].name for i in app.fns if i not in guarded}
    assert {"predict", "predict_batch", "ab_compare", "ab_test_set", "write_report"} <= open_names
    assert {"start", "send", "simulate", "mark_correct", "mark_wrong"} <= {app.fns[i].name for i in guarded}


# ---- the served app with accounts -----------------------------------------------------------------------------


@dataclass
class Served:
    url: str
    home: Path
    a: int
    b: int
    base: Path


class Session:
    """One browser-like session over HTTP: a login cookie, a session hash, events called by fn_index on the queue."""

    def __init__(self, url: str, user: str | None = None, password: str | None = None):
        import httpx

        self.http = httpx.Client(base_url=url, timeout=120)
        self.session_hash = uuid.uuid4().hex[:12]
        if user:
            self.http.post("/login", data={"username": user, "password": password}).raise_for_status()
        self._config = None

    @property
    def config(self) -> dict:
        if self._config is None:
            response = self.http.get("/config")
            response.raise_for_status()
            self._config = response.json()
        return self._config

    def initial_value(self, component_id: int, extra: dict | None = None):
        components = {c["id"]: c for c in self.config["components"]} | (extra or {})
        return components[component_id].get("props", {}).get("value")

    def upload(self, path: Path) -> dict:
        with open(path, "rb") as f:
            response = self.http.post("/gradio_api/upload", files={"files": (path.name, f)})
        response.raise_for_status()
        return {"path": response.json()[0], "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}

    def load_page(self) -> None:
        """Run the page-load events as a browser would (they fill this session's dropdown choices)."""
        for dep in self.config["dependencies"]:
            if dep["backend_fn"] and any(event == "load" for _, event in dep["targets"]):
                self.call(dep["id"], [self.initial_value(i) for i in dep["inputs"]])

    def call(self, fn_index: int, data: list) -> dict:
        """The final queue message: {"success": bool, "output": {...}}."""
        from tests.support.queue_client import queue_call

        return queue_call(self.http, self.session_hash, fn_index, data)


@pytest.fixture(scope="module")
def served(tmp_path_factory, minilm_dir):
    """The app served with one editor (ed:pw1) and one viewer (vi:pw2), two tiny variants and a dataset."""
    from jobs import api
    from storage import db
    from tests.support.browser import serve_app
    from tests.support.tiny import add_two_tiny_variants

    base = tmp_path_factory.mktemp("sharing")
    home = base / "home"
    patch = pytest.MonkeyPatch()
    patch.setenv("WORKBENCH_HOME", str(home))
    patch.delenv("WORKBENCH_DB_URL", raising=False)
    for env in ACCOUNTS:
        patch.setenv(env, "")  # the test process itself is a local user; the served app has the accounts
    db.dispose_all()
    db.engine()
    try:
        a, b = add_two_tiny_variants(base, minilm_dir)
        with serve_app(home, env=SERVED_ENV) as url:
            yield Served(url, home, a.id, b.id, base)
        assert api.list_models()  # the database outlived the server
    finally:
        db.dispose_all()
        patch.undo()


def build_served_app():
    """The same code as the server's app, built with its accounts: the same events at the same indices."""
    from workbench.app import build_app

    with pytest.MonkeyPatch.context() as patch:
        for env, value in SERVED_ENV.items():
            patch.setenv(env, value)
        return build_app()


def _snapshot(home: Path) -> dict:
    from jobs import api

    return {"models": len(api.list_models()), "variants": len(api.list_variants()), "datasets": len(api.list_datasets()),
            "jobs": len(api.list_jobs(limit=10_000)), "files": sorted(map(str, stored_files(home)))}


def test_login_is_required_everywhere(served):
    import httpx
    from gradio_client import Client

    assert httpx.get(served.url + "config").status_code == 401
    assert httpx.get(served.url + "gradio_api/info").status_code == 401
    body = {"data": [str(served.a), TEXT], "session_hash": "anonymous"}
    assert httpx.post(served.url + "gradio_api/run/predict", json=body).status_code == 401
    assert httpx.post(served.url + "gradio_api/queue/join", json={**body, "fn_index": 0}).status_code == 401
    assert httpx.post(served.url + "login", data={"username": "vi", "password": "pw1"}).status_code == 400
    with pytest.raises(Exception):  # noqa: B017 - gradio_client raises its own errors for a refused login
        Client(served.url, auth=("vi", "wrong"), verbose=False)


def test_every_editor_only_handler_refuses_a_viewer_on_the_server(served):
    """Each editor-only event (every write handler, and every read of the tabs viewers do not get: job logs, model
    source paths, the wizard, traffic experiments), called by fn_index on the queue as the viewer (as a script
    could, whatever the page shows), answers the read-only error and stores nothing; the same call as the editor
    gets past the check. A write handler's refusal is shown; the rest (the hidden tabs' own page-load and timer
    events, which a viewer's page fires by itself) are refused without a popup."""
    from jobs import api
    from tests.support.data import write_sentiment_csv
    from workbench import roles

    app = build_served_app()
    guarded = roles.write_handlers(app)
    assert {app.fns[i].name for i in guarded} >= GUARDED
    editor_only = {i for i, role in roles.handler_roles(app).items() if role == roles.EDITOR}
    assert set(guarded) <= editor_only
    viewer = Session(served.url, "vi", "pw2")
    server_deps = {d["id"]: d for d in viewer.config["dependencies"]}
    components = {c["id"]: c for c in viewer.config["components"]}
    # files an editor could add: a dataset CSV and a model archive
    csv_file = write_sentiment_csv(served.base / "upload.csv")
    archive = Path(shutil.make_archive(str(served.base / "model-upload"), "zip", served.base / "a"))
    before = _snapshot(served.home)

    def upload_for(session: Session, component: dict) -> dict:
        accepted = component.get("props", {}).get("file_types") or []
        return session.upload(archive if ".zip" in accepted else csv_file)

    def data_for(session: Session, dep: dict, extra: dict | None = None) -> list:
        """What a page would send: each input's initial value, and a real uploaded file for file inputs."""
        known = components | (extra or {})
        return [upload_for(session, known[i]) if known[i]["type"] == "file" else session.initial_value(i, extra)
                for i in dep["inputs"]]

    viewer.load_page()  # like a browser: the dropdowns of this session now offer the real variants and jobs
    job = api.list_jobs(limit=1)[0]
    refused = []
    for index in sorted(editor_only):
        dep = server_deps[index]
        assert dep["api_name"] == app.fns[index].api_name  # the served app numbers its events the same way
        data = data_for(viewer, dep)
        name = app.fns[index].name
        if name in ("cancel_job", "job_detail"):
            data[0] = str(job.id)  # a real job: for an editor this cancels it / shows its log
        if name == "model_details":
            data[0] = str(api.list_models()[0].id)  # for an editor: its source path
        message = viewer.call(index, data)
        assert not message["success"], f"{name} ran for a viewer: {message}"
        error = message["output"]["error"]
        assert READ_ONLY in error and str(served.home) not in json.dumps(message), (name, message)
        if index in guarded:
            assert guarded[index] in error and message["output"].get("visible") is not False, (name, message)
        else:
            assert message["output"].get("visible") is False, (name, message)  # quiet on the viewer's page
        refused.append(roles.handler_key(app.fns[index]))
    assert {k for k, role in HANDLERS.items() if role == E} <= set(refused)

    # The Optimize form is drawn per session (gr.render): the viewer cannot draw it, and its handlers, drawn in
    # the editor's session, refuse the viewer even with the editor's session hash.
    render = next(i for i, f in app.fns.items() if f.renderable is not None)
    assert render in editor_only and not viewer.call(render, ["quantize"])["success"]
    drawer = Session(served.url, "ed", "pw1")
    drawer.load_page()
    drawn = drawer.call(render, ["quantize"])
    assert drawn["success"], drawn
    rendered = drawn["output"]["render_config"]
    extra = {c["id"]: c for c in rendered["components"]}
    intruder = Session(served.url, "vi", "pw2")
    intruder.session_hash = drawer.session_hash
    for dep in rendered["dependencies"]:
        if not dep.get("backend_fn"):
            continue
        name = re.sub(r"_\d+$", "", dep["api_name"] or "")  # a re-render numbers the names again: launch_one_job_1
        data = data_for(intruder, dep, extra)
        if name == "launch_one_job":
            data[0] = str(served.a)  # "Start from" a real variant: for an editor this queues a job
        message = intruder.call(dep["id"], data)
        assert not message["success"] and READ_ONLY in message["output"]["error"], (name, message)
        refused.append(name)
    assert set(refused) >= RENDERED_GUARDED
    assert _snapshot(served.home) == before  # no job, model, dataset, variant or stored file from any of it

    # The editor's identical calls get past the role check: a job is queued, a cancel is answered.
    editor = Session(served.url, "ed", "pw1")
    submit = next(i for i in guarded if app.fns[i].name == "submit_job")
    data = data_for(editor, server_deps[submit])
    data[0], data[3] = "test-sleep", json.dumps({"seconds": 0.1})
    message = editor.call(submit, data)
    assert message["success"] and "Queued job" in message["output"]["data"][0], message
    assert len(api.list_jobs(limit=10_000)) == before["jobs"] + 1
    cancel = next(i for i in guarded if app.fns[i].name == "cancel_job")
    message = editor.call(cancel, data_for(editor, server_deps[cancel]))
    assert message["success"] and "pick a job to cancel" in message["output"]["data"][0], message
    detail = next(i for i in editor_only if app.fns[i].name == "job_detail")  # what the viewer was refused
    data = data_for(editor, server_deps[detail])
    data[0] = str(job.id)
    assert editor.call(detail, data)["success"]
    # and the rendered form's launch (a handler with *args, where the Request sits before the form's values)
    editor.load_page()
    render = next(i for i, f in app.fns.items() if f.renderable is not None)
    drawn = editor.call(render, ["quantize"])["output"]["render_config"]
    extra = {c["id"]: c for c in drawn["components"]}
    launch = next(d for d in drawn["dependencies"] if re.sub(r"_\d+$", "", d["api_name"]) == "launch_one_job")
    data = data_for(editor, launch, extra)
    data[0] = str(served.a)
    method = next(i for i, c in enumerate(launch["inputs"])
                  if extra.get(c, {}).get("props", {}).get("elem_id") == "param-quantize-method")
    data[method] = "torch-dynamic-int8"
    message = editor.call(launch["id"], data)
    assert message["success"] and "queued job" in message["output"]["data"][0], message
    assert api.list_jobs(limit=1)[0].kind == "quantize"


def test_a_viewer_uses_the_playground_and_the_compare_report(served):
    from gradio_client import Client

    from jobs import api

    client = Client(served.url, auth=("vi", "pw2"), verbose=False)
    got = client.predict(str(served.a), TEXT, api_name="/predict")
    assert got["probabilities"] == pytest.approx(api.predict(served.a, TEXT).probabilities, abs=1e-6)
    side = client.predict(str(served.a), str(served.b), TEXT, api_name="/ab_compare")
    assert side["a"]["label"] == got["label"]
    batch = client.predict(str(served.a), [TEXT, "awful"], api_name="/predict_batch")
    assert len(batch["predictions"]) == 2
    # traffic experiments are written by editors: a viewer can neither send a request nor flip its feedback
    exp = api.start_experiment(served.a, served.b, 50, name="stakeholders")
    editor = Client(served.url, auth=("ed", "pw1"), verbose=False)
    routed = editor.predict("stakeholders", "carol", TEXT, api_name="/traffic_request")
    assert editor.predict(routed["request"]["id"], True, api_name="/traffic_feedback")["feedback"] == "correct"
    with pytest.raises(Exception, match="read-only.*traffic experiments"):  # noqa: B017 - gradio_client's AppError
        client.predict("stakeholders", "mallory", TEXT, api_name="/traffic_request")
    with pytest.raises(Exception, match="read-only.*traffic experiments"):  # noqa: B017
        client.predict(routed["request"]["id"], False, api_name="/traffic_feedback")
    assert sum(s.requests for s in api.arm_report(exp.id)) == 1
    assert api.recent_requests(exp.id, 10)[0].feedback == "correct"

    app = build_served_app()
    report = next(i for i, f in app.fns.items() if f.name == "write_report")
    viewer = Session(served.url, "vi", "pw2")
    dep = next(d for d in viewer.config["dependencies"] if d["id"] == report)
    message = viewer.call(report, [viewer.initial_value(i) for i in dep["inputs"]])
    assert message["success"], message  # no measurements yet, so no files; but not refused


def test_a_viewer_runs_every_viewer_readable_handler_and_sees_no_server_paths(served):
    """Each viewer-readable event of the page runs for the viewer; the variant detail and the registry line leave
    out what only editors see: local source paths and the tracking store's address."""
    from workbench import roles

    app = build_served_app()
    viewer, editor = Session(served.url, "vi", "pw2"), Session(served.url, "ed", "pw1")
    viewer.load_page()  # the dropdowns of each session offer the variants (a value not offered is refused)
    editor.load_page()
    deps = {d["id"]: d for d in viewer.config["dependencies"]}
    readable = [i for i, role in roles.handler_roles(app).items()
                if role == roles.VIEWER and not roles.handler_key(app.fns[i]).startswith("workbench.http_endpoints:")]
    assert {roles.handler_key(app.fns[i]) for i in readable} == {
        k for k, role in HANDLERS.items() if role == V and not k.startswith("workbench.http_endpoints:")}
    outputs = {}
    for index in readable:
        message = viewer.call(index, [viewer.initial_value(i) for i in deps[index]["inputs"]])
        assert message["success"], (app.fns[index].name, message)
        outputs[app.fns[index].name] = message["output"]["data"]
    assert str(served.home) not in json.dumps(outputs)

    view = next(i for i, f in app.fns.items() if f.name == "variant_view")
    seen = viewer.call(view, [str(served.a)])["output"]["data"]
    assert "a local directory" in seen[1] and str(served.base) not in json.dumps(seen), seen
    shown = editor.call(view, [str(served.a)])["output"]["data"]
    assert str(served.base / "a") in shown[1]  # an editor still sees where the model came from
    refresh = next(i for i, f in app.fns.items() if roles.handler_key(f) == "workbench.tabs.variants:refresh")
    assert "shown to editors" in viewer.call(refresh, [])["output"]["data"][-1]
    assert "Tracking: `" in editor.call(refresh, [])["output"]["data"][-1]


def test_sign_ins_are_throttled_per_account_and_per_address(served):
    """A burst of wrong passwords locks the account and the address it came from; the right password is refused
    while locked (429, one line, Retry-After); other accounts and addresses are untouched; the lock ends, and the
    next failure locks again for twice as long. Addresses are set as a proxy on this machine would
    (X-Forwarded-For, which uvicorn trusts from 127.0.0.1), so the other tests' address is never locked."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    http = httpx.Client(base_url=served.url, timeout=60)

    def login(user: str, password: str, address: str) -> httpx.Response:
        return http.post("login", data={"username": user, "password": password}, headers={"X-Forwarded-For": address})

    assert f"After {MAX_FAILURES} wrong passwords" in httpx.get(served.url, timeout=60).text  # the login page says so
    answers = [login("target", f"guess-{i}", "198.51.100.1") for i in range(20)]  # bounded: 20, as fast as it goes
    assert [a.status_code for a in answers] == [400] * MAX_FAILURES + [429] * (20 - MAX_FAILURES)
    locked = answers[-1]
    assert "too many failed sign-ins" in locked.json()["detail"] and "try again in" in locked.json()["detail"]
    assert 1 <= int(locked.headers["retry-after"]) <= LOCKOUT_S
    # the right password is refused while locked: the account from anywhere, anyone from that address
    assert login("target", "pw3", "198.51.100.2").status_code == 429
    assert login("ed", "pw1", "198.51.100.1").status_code == 429
    assert login("ed", "pw1", "198.51.100.3").status_code == 200  # another account from another address

    # a parallel burst (one address each) is counted as it arrives: only MAX_FAILURES passwords are ever checked
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda i: login("racer", f"guess-{i}", f"203.0.113.{i}").status_code, range(16)))
    assert sorted(codes) == [400] * MAX_FAILURES + [429] * (16 - MAX_FAILURES)

    # the locks end: the right password passes; after a lock, one more wrong password locks again, twice as long
    time.sleep(LOCKOUT_S + 0.5)
    assert login("racer", "pw4", "203.0.113.200").status_code == 200
    assert login("target", "still-wrong", "198.51.100.4").status_code == 400
    again = login("target", "pw3", "198.51.100.5")
    assert again.status_code == 429 and int(again.headers["retry-after"]) > LOCKOUT_S


def test_the_login_throttle_forgets_and_bounds_what_it_keeps():
    from workbench import guards

    now = [0.0]
    throttle = guards.LoginThrottle(max_failures=3, lockout_s=10, clock=lambda: now[0])
    keys = ["user:u", "address:a"]
    for _ in range(3):
        assert throttle.retry_after(keys) == 0
        throttle.failed(keys)
    assert throttle.retry_after(keys) == 10 and throttle.retry_after(["user:other"]) == 0
    now[0] = 11
    throttle.failed(keys)  # once locked, one more failure locks again, twice as long
    assert throttle.retry_after(keys) == 20
    throttle.succeeded("user:u")  # the right password clears the account, not the address
    assert throttle.retry_after(["user:u"]) == 0 and throttle.retry_after(["address:a"]) == 20
    now[0] += guards.FORGET_S + 100  # long quiet: forgotten, the count starts again
    throttle.failed(["address:a"])
    assert throttle.retry_after(["address:a"]) == 0
    for i in range(guards.MAX_KEYS + 10):  # random user names cannot fill the memory
        throttle.failed([f"user:{i}"])
    assert len(throttle.records) <= guards.MAX_KEYS


def test_http_endpoint_mistakes_are_4xx_with_one_clear_line(served):
    """A plain POST with a wrong variant, dataset or limit: 404 or 400 and the reason, no internal message."""
    viewer = Session(served.url, "vi", "pw2")
    huge = "9" * 30

    def run(name: str, data: list):
        return viewer.http.post(f"/gradio_api/run/{name}", json={"data": data})

    for name, data, status, words in [
        ("predict", [huge, TEXT], 404, f"no variant '{huge}'"),
        ("predict", ["1²", TEXT], 404, "no variant '1²'"),
        ("predict", [str(served.a), 123], 400, "a text must be a string"),
        ("ab_compare", [str(served.a), huge, TEXT], 404, "no variant"),
    ]:
        response = run(name, data)
        assert response.status_code == status and words in response.json()["error"], (name, response.text)
        assert "SQLite" not in response.text and "Traceback" not in response.text
    got = run("predict", [str(served.a), TEXT])
    assert got.status_code == 200 and got.json()["data"][0]["label"]
    from gradio_client import Client

    client = Client(served.url, auth=("vi", "pw2"), verbose=False)  # queued calls: the same one line
    for args, words in [((str(served.a), str(served.b), huge), "no dataset"),
                        ((str(served.a), str(served.b), "toy", "test", "many"), "limit is a whole number")]:
        with pytest.raises(Exception, match=words):  # noqa: B017 - gradio_client's AppError
            client.predict(*args, api_name="/ab_test_set")
    with pytest.raises(Exception, match="texts must be a list"):  # noqa: B017
        client.predict(str(served.a), "not a list", api_name="/predict_batch")


def test_an_unknown_event_index_is_a_404_without_a_traceback(served):
    viewer = Session(served.url, "vi", "pw2")
    log = served.home / "serve.log"
    before = log.read_text()
    response = viewer.http.post("/gradio_api/queue/join",
                                json={"data": [], "fn_index": 987654, "session_hash": viewer.session_hash})
    assert response.status_code == 404 and "no event with index 987654" in response.json()["detail"]
    time.sleep(0.5)
    assert "KeyError" not in log.read_text()[len(before):]


def test_refs_beyond_any_id_are_not_found(home):
    from jobs import api
    from storage import catalog
    from storage.errors import InvalidInput, NotFound

    for ref in ("9" * 30, 2**70, "1²", "١٢"):
        with pytest.raises(NotFound, match="no variant"):
            api.get_variant(ref)
    with pytest.raises(NotFound, match=r"no dataset 'xxx.*\.\.\.'$"):
        api.get_dataset("x" * 5000)  # quoted, and cut short
    assert catalog.row_id(" 42 ", "request") == 42
    with pytest.raises(InvalidInput, match="whole number"):
        catalog.row_id("abc", "request")
    with pytest.raises(NotFound, match="no request"):
        api.record_feedback(2**80, True)


@pytest.mark.browser
def test_a_viewer_sees_a_banner_and_only_the_tabs_they_can_use(served):
    from tests.support.browser import open_page, require_chromium

    require_chromium()
    for user, password, role in (("vi", "pw2", "viewer: read-only"), ("ed", "pw1", "editor")):
        with open_page(served.url) as page:
            page.get_by_label("username").fill(user)
            page.get_by_label("password").fill(password)
            page.get_by_role("button", name="Login").click()
            banner = page.locator("#role-banner")
            banner.get_by_text(f"Signed in as {user} ({role}").wait_for(timeout=60_000)
            tabs = page.get_by_role("tab")
            tabs.filter(has_text="Compare").wait_for(timeout=30_000)
            if role == "editor":
                page.get_by_role("tab", name="Models").wait_for(timeout=30_000)
                page.get_by_role("tab", name="Variants").click()
                page.locator("#space-section").wait_for(timeout=30_000)  # the editor's export section
                continue
            wait_for(lambda: page.get_by_role("tab", name="Models").count() == 0, timeout=30, what="Models hidden")
            shown = [t.strip() for t in tabs.all_inner_texts()]
            assert not {"Models", "Datasets", "Optimize", "Jobs"} & set(shown), shown
            assert {"Variants", "Compare", "Predictor", "A/B"} <= set(shown), shown
            assert page.get_by_role("tab", name="Compare").get_attribute("aria-selected") == "true"
            page.get_by_role("tab", name="Variants").click()
            page.locator("#variants-html").wait_for(timeout=30_000)
            assert not page.locator("#space-section").is_visible() and not page.locator("#space-export").is_visible()
            page.get_by_role("tab", name="A/B").click()  # an experiment's results, not its controls
            page.locator("#ab-experiment").wait_for(timeout=30_000)
            assert not page.locator("#ab-start").is_visible() and not page.locator("#ab-correct").is_visible()
            # the hidden tabs' own events (page load, timers) are refused on the server without a popup
            page.wait_for_timeout(3_000)
            assert page.locator(".toast-body").count() == 0, page.locator(".toast-body").all_inner_texts()


# ---- export-space -------------------------------------------------------------------------------------------------


def _front_matter(readme: str) -> dict:
    import yaml

    assert readme.startswith("---\n")
    return yaml.safe_load(readme.split("---\n")[1])


def _exported_classifier(directory: Path):
    """The exported app's classifier, loaded from its app.py (not from the workbench)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"space_{uuid.uuid4().hex}", directory / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Classifier(directory / "model")


def _tiny(tmp_path: Path, minilm_dir: Path, name: str = "tiny"):
    from jobs import api
    from jobs.playground.predict import CACHE
    from tests.support.tiny import tiny_classifier

    CACHE.clear()  # predictors are cached by variant id; another test's database had other variants under these ids

    path = tiny_classifier(tmp_path / name, minilm_dir, init_range=0.5)
    return api.add_model(api.ModelRequest(str(path), name=name)).variant


@pytest.mark.slow
def test_export_space_writes_a_demo_that_runs_offline_on_its_own(home, tmp_path, minilm_dir):
    import gradio
    from gradio_client import Client

    from jobs import api
    from storage import files

    variant = _tiny(tmp_path, minilm_dir)
    out = tmp_path / "space"
    result = json.loads(run_cli("export-space", str(variant.id), str(out), "--license", "apache-2.0", "--json").stdout)
    model_files = {f"model/{f['path']}" for f in variant.files}
    assert set(result["files"]) == {"app.py", "requirements.txt", "README.md"} | model_files
    assert {"model/config.json", "model/model.safetensors", "model/tokenizer.json"} <= model_files
    for f in variant.files:  # copied intact
        assert files.hash_file(out / "model" / f["path"]) == f["sha256"]
    readme = (out / "README.md").read_text()
    meta = _front_matter(readme)
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py" and meta["license"] == "apache-2.0"
    assert meta["sdk_version"] == gradio.__version__ and "tiny" in meta["title"] and len(meta["short_description"]) <= 60
    assert "## Recipe" in readme and "intake" in readme and "Not evaluated" in readme and str(tmp_path) not in readme
    reqs = (out / "requirements.txt").read_text().split()
    assert f"gradio=={gradio.__version__}" in reqs and any(r.startswith("torch==") for r in reqs)
    assert not any(r.startswith("onnxruntime") for r in reqs) and all("+" not in r for r in reqs)
    app_text = (out / "app.py").read_text()
    assert "local_files_only=True" in app_text and "trust_remote_code=True" not in app_text
    assert not list(tmp_path.glob(".space.*"))  # the staging directory was moved, not left behind

    # `python app.py` on its own: offline, outside the repository, on $PORT
    port = free_port()
    env = {**os.environ, "PORT": str(port), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": ""}
    env.pop("WORKBENCH_HOME", None)
    log = open(tmp_path / "app.log", "w")
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=out, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_serving(proc, url, tmp_path / "app.log", "the exported app to serve")
        got = Client(url, verbose=False).predict(TEXT, api_name="/predict")
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
    expected = api.predict(variant.id, TEXT)
    assert got["label"] == expected.label
    assert {c["label"]: c["confidence"] for c in got["confidences"]} == pytest.approx(expected.probabilities, abs=1e-6)


@pytest.mark.slow
def test_export_space_of_an_onnx_variant_with_its_accuracy(home, tmp_path, minilm_dir):
    from jobs import api
    from tests.support.data import write_sentiment_csv

    _tiny(tmp_path, minilm_dir)
    api.add_dataset(api.DatasetRequest(str(write_sentiment_csv(tmp_path / "toy.csv")), name="toy"))
    export = api.submit("export-onnx", {}, model="tiny", dataset="toy")
    run_cli("worker", "--burst")  # the export, then the new variant's evaluation
    onnx_id = api.get_job(export.id).produced_variant_id
    assert onnx_id, api.job_log(export.id)[-2000:]
    result = api.export_space(onnx_id, tmp_path / "onnx-space")
    assert result.runtime == "onnxruntime" and "model/model.onnx" in result.files
    reqs = (tmp_path / "onnx-space" / "requirements.txt").read_text().split()
    assert any(r.startswith("onnxruntime==") for r in reqs) and not any(r.startswith("torch") for r in reqs)
    readme = (tmp_path / "onnx-space" / "README.md").read_text()
    evaluation = api.variant_detail(onnx_id)["evaluations"][-1]
    assert f"{evaluation.accuracy:.2%}" in readme and "**export-onnx**" in readme and "toy" in readme
    classifier = _exported_classifier(tmp_path / "onnx-space")
    assert classifier.runtime == "onnxruntime"
    assert classifier.predict(TEXT) == pytest.approx(api.predict(onnx_id, TEXT).probabilities, abs=1e-5)


@pytest.mark.slow
def test_export_space_redoes_pruned_heads_and_dynamic_int8(home, tmp_path, minilm_dir):
    """A head-pruned variant quantized at load: the app rebuilds the smaller attention and packs int8 as the
    workbench's loader does, so it answers what the workbench answers (a long text is truncated the same way)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from jobs import api
    from jobs.ml.artifacts import save_pytorch_variant
    from jobs.runtimes.structure import apply_kept_heads
    from storage import catalog, files

    root = _tiny(tmp_path, minilm_dir)
    model = AutoModelForSequenceClassification.from_pretrained(root.artifact_dir)
    apply_kept_heads(model, {"0": [1]})
    meta = {"kept_heads": {"0": [1]}, "quantization": "torch-dynamic-int8", "max_length": 16}
    directory = save_pytorch_variant(model, AutoTokenizer.from_pretrained(root.artifact_dir), tmp_path / "pruned", meta)
    entries = files.manifest(directory)
    steps = [*root.recipe["steps"], {"kind": "prune", "params": {"method": "structured"}},
             {"kind": "quantize", "params": {"method": "torch-dynamic-int8"}}]
    variant = catalog.create_variant(model_id=root.model_id, parent_id=root.id, name="tiny > pruned > int8",
                                     artifact_dir=str(directory), runtime="pytorch", precision="int8",
                                     recipe={"steps": steps}, files=entries, sha256=files.manifest_sha256(entries),
                                     size_bytes=sum(e["size"] for e in entries), dataset_id=None, info={})
    result = api.export_space(variant.id, tmp_path / "space")
    assert any("int8" in n for n in result.notes) and any("pruning" in n for n in result.notes)
    assert "model/workbench.json" in result.files
    classifier = _exported_classifier(tmp_path / "space")
    long_text = " ".join([TEXT] * 20)
    for text in (TEXT, long_text):
        assert classifier.predict(text) == pytest.approx(api.predict(variant.id, text).probabilities, abs=1e-5)


@pytest.mark.slow
def test_export_as_space_from_the_variants_tab(home, tmp_path, minilm_dir):
    import zipfile

    from workbench.tabs.variants import export_space_zip

    variant = _tiny(tmp_path, minilm_dir)
    status, download = export_space_zip(str(variant.id), "mit")
    assert status.startswith("✓") and download["visible"], status
    with zipfile.ZipFile(download["value"]) as archive:
        names = set(archive.namelist())
        readme = archive.read("README.md").decode()
    assert {"app.py", "requirements.txt", "README.md", "model/config.json", "model/model.safetensors"} <= names
    assert _front_matter(readme)["license"] == "mit"
    assert export_space_zip(None, "mit")[0].startswith("✗")


@pytest.mark.slow
def test_export_space_refuses_what_it_cannot_run_and_leaves_nothing_half_written(home, tmp_path, minilm_dir,
                                                                               monkeypatch):
    from transformers import AutoTokenizer, BertConfig, BertModel

    from jobs import api
    from jobs.export import space as export_space
    from storage import catalog
    from storage.errors import InvalidInput

    root = _tiny(tmp_path, minilm_dir)
    encoder_dir = tmp_path / "encoder"
    BertModel(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64)).save_pretrained(encoder_dir)
    AutoTokenizer.from_pretrained(minilm_dir).save_pretrained(encoder_dir)
    encoder = api.add_model(api.ModelRequest(str(encoder_dir), name="encoder")).variant
    fields = {k: getattr(root, k) for k in ("model_id", "artifact_dir", "precision", "recipe", "files", "sha256",
                                             "size_bytes", "dataset_id", "info")}
    engine = catalog.create_variant(parent_id=root.id, name="tiny > engine", runtime="tensorrt", **fields)

    target = tmp_path / "space"
    for variant, reason in ((encoder.id, "no classification head"), (engine.id, "TensorRT")):
        with pytest.raises(InvalidInput, match=reason):
            api.export_space(variant, target)
    assert not target.exists()

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    proc = run_cli("export-space", str(root.id), str(busy), check=False)
    assert proc.returncode == 2 and "not empty" in proc.stderr and "--force" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1

    # a failure after files were written (here: the staged app does not predict) keeps the old directory whole
    def broken(app):
        raise InvalidInput("the exported app could not predict: boom")

    with monkeypatch.context() as patch:
        patch.setattr(export_space, "_check_app", broken)
        with pytest.raises(InvalidInput, match="boom"):
            api.export_space(root.id, busy, force=True)
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging or old copies

    result = api.export_space(root.id, busy, force=True)
    assert not (busy / "keep.txt").exists() and (busy / "app.py").exists() and result.check
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    from storage import settings

    with pytest.raises(InvalidInput, match="refusing to write over"):
        api.export_space(root.id, settings.home(), force=True)
