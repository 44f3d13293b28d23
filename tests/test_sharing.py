"""Sharing with stakeholders: `serve --share` only with accounts, a read-only role enforced on the server for every
write handler (called directly, not through the page), the playground open to viewers, and `export-space`."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import free_port, run_cli, stored_files, wait_for

ACCOUNTS = {"WORKBENCH_AUTH": "ed:pw1", "WORKBENCH_VIEWERS": "vi:pw2"}
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
    # the playground and the Compare report stay open to viewers
    open_names = {app.fns[i].name for i in app.fns if i not in guarded}
    assert {"predict", "predict_batch", "ab_compare", "ab_test_set", "traffic_request", "traffic_feedback",
            "write_report", "start", "send", "simulate"} <= open_names


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
        join = self.http.post("/gradio_api/queue/join",
                              json={"data": data, "fn_index": fn_index, "session_hash": self.session_hash})
        join.raise_for_status()
        event_id = join.json()["event_id"]
        with self.http.stream("GET", "/gradio_api/queue/data", params={"session_hash": self.session_hash}) as stream:
            for line in stream.iter_lines():
                if line.startswith("data:"):
                    message = json.loads(line[5:])
                    if message.get("event_id") == event_id and message.get("msg") == "process_completed":
                        return message
        raise AssertionError(f"no result for fn {fn_index}")


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
        with serve_app(home, env=ACCOUNTS) as url:
            yield Served(url, home, a.id, b.id, base)
        assert api.list_models()  # the database outlived the server
    finally:
        db.dispose_all()
        patch.undo()


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


def test_every_write_handler_refuses_a_viewer_on_the_server(served):
    """Each guarded event, called by fn_index on the queue as the viewer (as a script could, whatever the page
    shows), answers the read-only error and stores nothing; the same call as the editor gets past the check."""
    from jobs import api
    from tests.support.data import write_sentiment_csv
    from workbench import roles
    from workbench.app import build_app

    app = build_app()  # the same code as the server's app: the same events at the same indices
    guarded = roles.write_handlers(app)
    assert {app.fns[i].name for i in guarded} >= GUARDED
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
    job = str(api.list_jobs(limit=1)[0].id)
    refused = []
    for index, action in guarded.items():
        dep = server_deps[index]
        assert dep["api_name"] == app.fns[index].api_name  # the served app numbers its events the same way
        data = data_for(viewer, dep)
        if app.fns[index].name == "cancel_job":
            data[0] = job  # a real job: for an editor this cancels it
        message = viewer.call(index, data)
        assert not message["success"], f"{app.fns[index].name} ran for a viewer: {message}"
        assert READ_ONLY in message["output"]["error"] and action in message["output"]["error"]
        refused.append(app.fns[index].name)

    # the Optimize form is drawn per session (gr.render): draw it, then call its guarded handlers too
    for index, fn in app.fns.items():
        if fn.renderable is None:
            continue
        drawn = viewer.call(index, data_for(viewer, server_deps[index]))
        assert drawn["success"], drawn
        rendered = drawn["output"]["render_config"]
        extra = {c["id"]: c for c in rendered["components"]}
        for dep in rendered["dependencies"]:
            if not WRITE_NAME.search(dep["api_name"] or ""):
                continue
            name = re.sub(r"_\d+$", "", dep["api_name"])  # a re-render numbers the names again: launch_one_job_1
            data = data_for(viewer, dep, extra)
            if name == "launch_one_job":
                data[0] = str(served.a)  # "Start from" a real variant: for an editor this queues a job
            message = viewer.call(dep["id"], data)
            assert not message["success"] and READ_ONLY in message["output"]["error"], (name, message)
            refused.append(name)
    assert set(refused) >= GUARDED | RENDERED_GUARDED
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
    from workbench.app import build_app

    client = Client(served.url, auth=("vi", "pw2"), verbose=False)
    got = client.predict(str(served.a), TEXT, api_name="/predict")
    assert got["probabilities"] == pytest.approx(api.predict(served.a, TEXT).probabilities, abs=1e-6)
    side = client.predict(str(served.a), str(served.b), TEXT, api_name="/ab_compare")
    assert side["a"]["label"] == got["label"]
    exp = api.start_experiment(served.a, served.b, 50, name="stakeholders")
    routed = client.predict("stakeholders", "carol", TEXT, api_name="/traffic_request")
    assert client.predict(routed["request"]["id"], False, api_name="/traffic_feedback")["feedback"] == "wrong"
    assert sum(s.requests for s in api.arm_report(exp.id)) == 1

    app = build_app()
    report = next(i for i, f in app.fns.items() if f.name == "write_report")
    viewer = Session(served.url, "vi", "pw2")
    dep = next(d for d in viewer.config["dependencies"] if d["id"] == report)
    message = viewer.call(report, [viewer.initial_value(i) for i in dep["inputs"]])
    assert message["success"], message  # no measurements yet, so no files; but not refused


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
    from jobs.playground import CACHE
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

    def up():
        assert proc.poll() is None, (tmp_path / "app.log").read_text()
        try:
            return urllib.request.urlopen(url, timeout=2).status == 200
        except OSError:
            return False

    try:
        wait_for(up, timeout=120, what="the exported app to serve")
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
    from jobs.artifacts import save_pytorch_variant
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
    assert status.startswith("✅") and download["visible"], status
    with zipfile.ZipFile(download["value"]) as archive:
        names = set(archive.namelist())
        readme = archive.read("README.md").decode()
    assert {"app.py", "requirements.txt", "README.md", "model/config.json", "model/model.safetensors"} <= names
    assert _front_matter(readme)["license"] == "mit"
    assert export_space_zip(None, "mit")[0].startswith("❌")


@pytest.mark.slow
def test_export_space_refuses_what_it_cannot_run_and_leaves_nothing_half_written(home, tmp_path, minilm_dir,
                                                                               monkeypatch):
    from transformers import AutoTokenizer, BertConfig, BertModel

    from jobs import api, export_space
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
