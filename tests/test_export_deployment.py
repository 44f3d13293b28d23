"""`workbench export-deployment`: a bundle that runs without the workbench.

A tiny PyTorch classifier and an ONNX export of it are bundled; each bundle's server is started as its own process
from the bundle's folder, in an environment where the workbench's packages (jobs, storage, workbench) cannot be
imported (a meta-path blocker on PYTHONPATH: the workbench is installed editable in this venv) and, as in the
image, PYTHONDONTWRITEBYTECODE=1: the bundle must hold exactly the files its SHA256SUMS lists after serving (the
container's file system is read-only). They must answer as the workbench does; a bundle with one changed model
file must stay not ready. The Kubernetes manifests are checked against the Kubernetes schemas with
kubernetes-validate (offline) and the Dockerfile's instructions with dockerfile-parse: there is no Docker engine
here, so the image itself is not built.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import free_port, run_cli
from tests.support.browser import wait_until_serving
from tests.support.processes import Server
from tests.support.tiny import LABELS

KEY = "ship-it-key"
TEXTS = ["what a wonderful day", "the flight was delayed again", "meh", "word " * 300]  # the last is truncated
WORKBENCH_PACKAGES = ("jobs", "storage", "workbench", "tests")
BLOCKER = '''"""Refuses to import the workbench's own packages: a bundle must run without them."""
import sys

BLOCKED = {blocked!r}


class WorkbenchBlocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{{name}} is blocked: the bundle must run without the workbench")
        return None


sys.meta_path.insert(0, WorkbenchBlocker())
'''


@dataclass
class Shipped:
    base: Path
    env: dict[str, str]  # the bundles' servers' environment: the workbench cannot be imported
    variants: dict[str, object]  # runtime -> variant
    bundles: dict[str, object]  # runtime -> DeploymentExport
    servers: dict[str, Server]  # pytorch (with an API key), onnxruntime, tampered


def without_workbench_env(base: Path) -> dict[str, str]:
    blocker = base / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(BLOCKER.format(blocked=set(WORKBENCH_PACKAGES)))
    (base / "hf-home").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WORKBENCH_", "PYTHON"))}
    # as the Dockerfile sets them: HF_HOME in a writable place (/tmp), no bytecode written into the bundle
    return {**env, "PYTHONPATH": str(blocker), "HF_HOME": str(base / "hf-home"), "PYTHONNOUSERSITE": "1",
            "PYTHONDONTWRITEBYTECODE": "1"}


def onnx_variant(torch_variant, home: Path):
    """The tiny classifier exported to ONNX with the export-onnx kind's own exporter, stored as a variant."""
    from transformers import AutoTokenizer

    from jobs.kinds.export_onnx import ExportOnnxParams, _forward_names, export_graph
    from jobs.ml.artifacts import copy_support_files
    from jobs.runtimes.torch_runtime import load_torch_model
    from storage import catalog, files

    source = Path(torch_variant.artifact_dir)
    out = home / "artifacts" / "variants" / "tiny-onnx"
    out.mkdir(parents=True)
    copy_support_files(source, out)
    model = load_torch_model(source, attn_implementation="eager")
    tokenizer = AutoTokenizer.from_pretrained(source)
    encoded = {k: v.astype("int64") for k, v in tokenizer(TEXTS[:2], padding=True, return_tensors="np").items()}
    export_graph(model, encoded, _forward_names(model, encoded), out / "model.onnx", ExportOnnxParams())
    entries = files.manifest(out)
    return catalog.create_variant(model_id=torch_variant.model_id, parent_id=torch_variant.id, name="tiny > onnx",
                                  artifact_dir=str(out), runtime="onnxruntime", precision="fp32",
                                  recipe={"steps": [{"kind": "export-onnx", "params": {}}]}, files=entries,
                                  sha256=files.manifest_sha256(entries), size_bytes=sum(e["size"] for e in entries))


def start_bundle(bundle: Path, env: dict[str, str], name: str, log_dir: Path, extra_env: dict | None = None) -> Server:
    port = free_port()
    log = log_dir / f"{name}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "bundle_server", "--port", str(port), "--threads", "1"],
                                cwd=bundle, env={**env, **(extra_env or {})}, stdout=out, stderr=subprocess.STDOUT)
    return Server(proc, f"http://127.0.0.1:{port}", log)


@pytest.fixture(scope="module")
def shipped(tmp_path_factory, minilm_dir):
    from jobs import api
    from storage import db
    from tests.support.tiny import tiny_classifier

    base = tmp_path_factory.mktemp("ship")
    home = base / "home"
    servers: dict[str, Server] = {}
    with pytest.MonkeyPatch.context() as env:
        env.setenv("WORKBENCH_HOME", str(home))
        env.delenv("WORKBENCH_DB_URL", raising=False)
        env.setenv("WORKBENCH_AUTH", "")
        env.setenv("WORKBENCH_VIEWERS", "")
        db.dispose_all()
        db.upgrade()
        try:
            model_dir = tiny_classifier(base / "tiny", minilm_dir, 0, init_range=0.5)
            root = api.add_model(api.ModelRequest(str(model_dir), name="tiny")).variant
            variants = {"pytorch": root, "onnxruntime": onnx_variant(root, home)}
            bundles = {rt: api.export_deployment(v.id, str(base / f"bundle-{rt}")) for rt, v in variants.items()}
            tampered = base / "bundle-tampered"
            shutil.copytree(bundles["onnxruntime"].directory, tampered)
            graph = tampered / "model" / "model.onnx"
            data = bytearray(graph.read_bytes())
            data[len(data) // 2] ^= 0xFF  # one byte: same size, another hash
            graph.write_bytes(bytes(data))
            run_env = without_workbench_env(base)
            servers["pytorch"] = start_bundle(bundles["pytorch"].directory, run_env, "pytorch", base,
                                              {"WORKBENCH_SERVING_API_KEYS": KEY})
            servers["onnxruntime"] = start_bundle(bundles["onnxruntime"].directory, run_env, "onnxruntime", base)
            servers["tampered"] = start_bundle(tampered, run_env, "tampered", base)
            for name in ("pytorch", "onnxruntime"):
                s = servers[name]
                wait_until_serving(s.proc, f"{s.url}/ready", s.log, f"the {name} bundle's server to be ready")
            s = servers["tampered"]
            wait_until_serving(s.proc, f"{s.url}/health", s.log, "the tampered bundle's server to live")
            yield Shipped(base, run_env, variants, bundles, servers)
        finally:
            for server in servers.values():
                server.stop()
            db.dispose_all()


# ---- the bundle's server ------------------------------------------------------------------------------------


@pytest.mark.parametrize("runtime", ["pytorch", "onnxruntime"])
def test_the_bundle_answers_like_the_workbench(shipped, runtime):
    from jobs import api

    variant, server = shipped.variants[runtime], shipped.servers[runtime]
    headers = {"Authorization": f"Bearer {KEY}"} if runtime == "pytorch" else {}
    assert httpx.get(f"{server.url}/health").json()["status"] == "alive"
    assert httpx.get(f"{server.url}/ready").json() == {"ready": True, "variant_id": variant.id}
    answer = httpx.post(f"{server.url}/v1/predict", json={"texts": TEXTS}, headers=headers, timeout=60)
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    assert answer.json()["variant_id"] == variant.id and len(predictions) == len(TEXTS)
    for text, got in zip(TEXTS, predictions, strict=True):
        want = api.predict(variant.id, text)
        assert got["label"] == want.label
        assert got["probabilities"] == pytest.approx(want.probabilities, abs=1e-5)
        assert (got["tokens"], got["truncated"]) == (want.tokens, want.truncated)
    assert predictions[-1]["truncated"] and not predictions[0]["truncated"]
    described = httpx.get(f"{server.url}/v1/model", headers=headers).json()
    assert (described["sha256"], described["runtime"], described["labels"]) == (variant.sha256, runtime, list(LABELS))
    assert described["files"] == variant.files and described["lineage"][-1] == variant.id
    bad = httpx.post(f"{server.url}/v1/predict", json={"text": ""}, headers=headers)
    assert bad.status_code == 422 and "empty" in bad.json()["detail"]
    assert "workbench_serving_batch_size_count" in httpx.get(f"{server.url}/metrics").text


def test_api_keys_come_from_the_environment(shipped):
    url = shipped.servers["pytorch"].url
    assert httpx.post(f"{url}/v1/predict", json={"text": TEXTS[0]}).status_code == 401
    wrong = {"Authorization": "Bearer not-the-key"}
    assert httpx.post(f"{url}/v1/predict", json={"text": TEXTS[0]}, headers=wrong).status_code == 401
    assert httpx.get(f"{shipped.servers['onnxruntime'].url}/v1/model").status_code == 200  # no keys set: open


def test_the_bundle_runs_without_the_workbench(shipped):
    env = shipped.env
    for package in ("jobs", "storage", "workbench"):
        probe = subprocess.run([sys.executable, "-c", f"import {package}"], env=env, capture_output=True, text=True,
                               cwd=shipped.base, timeout=60)
        assert probe.returncode != 0 and "blocked" in probe.stderr, (package, probe.stderr)
    for bundle in shipped.bundles.values():
        for path in (bundle.directory / "bundle_server").rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                assert not [n for n in names if n.split(".")[0] in WORKBENCH_PACKAGES], (path, names)
    # the servers started with that environment, from their folders, and are serving (the fixture waited)
    assert all(s.proc.poll() is None for s in shipped.servers.values())


def test_a_changed_model_file_keeps_the_bundle_not_ready(shipped):
    url = shipped.servers["tampered"].url
    assert httpx.get(f"{url}/health").status_code == 200
    ready = httpx.get(f"{url}/ready")
    assert ready.status_code == 503
    assert "model.onnx: sha256 differs from the stored hash" in ready.json()["reason"]
    refused = httpx.post(f"{url}/v1/predict", json={"text": TEXTS[0]})
    assert refused.status_code == 503 and "not ready" in refused.json()["detail"]


# ---- the bundle's files -------------------------------------------------------------------------------------


def test_sha256sums_list_every_file_and_serving_wrote_nothing_into_the_bundle(shipped):
    for runtime, bundle in shipped.bundles.items():
        root = bundle.directory
        listed = {}
        for line in (root / "SHA256SUMS").read_text().splitlines():
            digest, name = line.split("  ", 1)
            listed[name] = digest
        on_disk = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} - {"SHA256SUMS"}
        assert set(listed) == on_disk
        assert all(hashlib.sha256((root / n).read_bytes()).hexdigest() == d for n, d in listed.items())
        variant = shipped.variants[runtime]
        assert {f"model/{f['path']}": f["sha256"] for f in variant.files}.items() <= listed.items()
        manifest = json.loads((root / "deployment.json").read_text())
        assert manifest["variant"]["files"] == variant.files and manifest["model_dir"] == "model"
        assert not [p for p in root.rglob("*") if p.is_symlink()]


def test_requirements_pin_what_the_runtime_needs(shipped):
    from importlib.metadata import version

    torch_reqs = (shipped.bundles["pytorch"].directory / "requirements.txt").read_text()
    onnx_reqs = (shipped.bundles["onnxruntime"].directory / "requirements.txt").read_text()
    pins = {}
    for text in (torch_reqs, onnx_reqs):
        lines = [line for line in text.splitlines() if line and not line.startswith(("#", "--"))]
        assert all("==" in line for line in lines), lines
        pins[text] = {line.split("==")[0].lower(): line.split("==")[1] for line in lines}
    torch_pins, onnx_pins = pins[torch_reqs], pins[onnx_reqs]
    assert torch_pins["torch"] == "2.13.0" and "--extra-index-url https://download.pytorch.org/whl/cpu" in torch_reqs
    assert "onnxruntime" not in torch_pins
    assert onnx_pins["onnxruntime"] == version("onnxruntime") and "torch" not in onnx_pins
    assert "--extra-index-url" not in onnx_reqs
    for pins_ in (torch_pins, onnx_pins):
        for dist in ("fastapi", "uvicorn", "transformers", "tokenizers", "prometheus_client", "numpy"):
            assert pins_[dist] == version(dist), dist
        assert not {"sqlalchemy", "gradio", "mlflow", "pandas"} & set(pins_)


def test_kubernetes_manifests_pass_the_kubernetes_schemas_offline(shipped, monkeypatch):
    import kubernetes_validate

    def no_network(*args, **kwargs):
        raise AssertionError("kubernetes-validate tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    k8s = shipped.bundles["pytorch"].directory / "k8s"
    objects = {p.name: yaml.safe_load(p.read_text()) for p in sorted(k8s.glob("*.yaml"))}
    assert set(objects) == {"deployment.yaml", "service.yaml", "hpa.yaml"}
    version = kubernetes_validate.latest_version()
    for obj in objects.values():
        kubernetes_validate.validate(obj, version, strict=True)
    broken = json.loads(json.dumps(objects["deployment.yaml"]))
    broken["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "eighty"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, version, strict=True)

    deployment, service, hpa = objects["deployment.yaml"], objects["service.yaml"], objects["hpa.yaml"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    started = container["command"] + container["args"]  # args alone would replace the image's whole CMD
    assert started[:3] == ["python", "-m", "bundle_server"] and "0.0.0.0" in started
    assert started[started.index("--port") + 1] == str(container["ports"][0]["containerPort"])
    assert {"cpu", "memory"} <= set(container["resources"]["requests"]) and container["resources"]["limits"]
    assert pod["securityContext"]["runAsNonRoot"] and container["securityContext"]["runAsNonRoot"]
    assert pod["securityContext"]["runAsUser"] != 0
    (key,) = [e for e in container["env"] if e["name"] == "WORKBENCH_SERVING_API_KEYS"]
    assert "secretKeyRef" in key["valueFrom"] and "value" not in key
    labels = deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["selector"] == labels
    assert labels.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert hpa["apiVersion"] == "autoscaling/v2" and hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu" and metric["resource"]["target"]["type"] == "Utilization"


def test_replicas_go_into_the_deployment_and_the_autoscaler(shipped):
    from jobs import api
    from storage.errors import InvalidInput

    variant = shipped.variants["onnxruntime"]
    with pytest.raises(InvalidInput, match="max_replicas .2. must be at least replicas .3."):
        api.export_deployment(variant.id, str(shipped.base / "scaled-wrong"), replicas=3, max_replicas=2)
    assert not (shipped.base / "scaled-wrong").exists()
    result = api.export_deployment(variant.id, str(shipped.base / "scaled"), replicas=3, max_replicas=6)
    k8s = result.directory / "k8s"
    deployment = yaml.safe_load((k8s / "deployment.yaml").read_text())
    hpa = yaml.safe_load((k8s / "hpa.yaml").read_text())
    assert deployment["spec"]["replicas"] == 3
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 6)
    assert "from 3 to 6 replicas" in (result.directory / "README.md").read_text()


def test_the_dockerfile_runs_as_non_root_with_a_healthcheck(shipped):
    from dockerfile_parse import DockerfileParser

    parsed = DockerfileParser(path=str(shipped.bundles["onnxruntime"].directory / "Dockerfile"))
    steps = [(i["instruction"], i["value"]) for i in parsed.structure]
    kinds = [kind for kind, _ in steps]
    assert parsed.baseimage.startswith("python:") and parsed.baseimage.endswith("-slim")
    (user,) = [value for kind, value in steps if kind == "USER"]
    assert user.split(":")[0].isdigit() and int(user.split(":")[0]) != 0
    assert kinds.index("USER") > max(i for i, k in enumerate(kinds) if k in ("RUN", "COPY"))  # nothing runs as root after
    (health,) = [value for kind, value in steps if kind == "HEALTHCHECK"]
    assert "/health" in health and "python" in health and "curl" not in health
    check = json.loads(health[health.index("CMD") + 3:])  # the exec form, run here against a live and a dead port
    server_port = shipped.servers["onnxruntime"].url.rsplit(":", 1)[1]
    for port, healthy in ((server_port, True), (str(free_port()), False)):
        probe = [sys.executable, *(arg.replace(":8080/", f":{port}/") for arg in check[1:])]  # check[0]: python
        ran = subprocess.run(probe, env=shipped.env, capture_output=True, timeout=30)
        assert (ran.returncode == 0) == healthy, (port, ran.stderr[-500:])
    assert ("EXPOSE", "8080") in steps
    assert "RUN pip install --no-cache-dir -r requirements.txt" in [f"{k} {v}" for k, v in steps]
    cmd = json.loads([value for kind, value in steps if kind == "CMD"][-1])
    assert cmd[:3] == ["python", "-m", "bundle_server"] and "0.0.0.0" in cmd
    assert "HF_HUB_OFFLINE" in parsed.envs and "WORKBENCH_SERVING_API_KEYS" not in parsed.envs
    readme = (shipped.bundles["onnxruntime"].directory / "README.md").read_text()
    assert "This image was not built when the bundle was exported" in readme
    assert shipped.variants["onnxruntime"].sha256 in readme and "negative, neutral, positive" in readme


# ---- refusals -----------------------------------------------------------------------------------------------


def test_an_existing_directory_is_refused_unless_forced(shipped):
    from jobs import api

    variant = shipped.variants["onnxruntime"]
    target = shipped.base / "occupied"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    beside = shipped.base / "beside.txt"
    beside.write_text("not in the target")
    proc = run_cli("export-deployment", str(variant.id), str(target), check=False,
                   env={"WORKBENCH_HOME": os.environ["WORKBENCH_HOME"]})
    assert proc.returncode != 0 and "is not empty" in proc.stderr, proc.stderr
    assert [p.name for p in target.iterdir()] == ["keep.txt"]
    assert not list(shipped.base.glob(".occupied.*"))  # no staging left beside it
    result = api.export_deployment(variant.id, str(target), force=True)
    assert not (target / "keep.txt").exists() and (target / "bundle_server" / "__main__.py").is_file()
    assert result.directory == target and "SHA256SUMS" in result.files
    assert beside.read_text() == "not in the target" and not list(shipped.base.glob(".occupied.*"))


def test_a_changed_variant_file_is_refused_and_nothing_is_written(shipped):
    from jobs import api
    from storage import catalog
    from storage.errors import InvalidInput

    source = shipped.variants["pytorch"]
    copy = shipped.base / "home" / "artifacts" / "variants" / "changed"
    shutil.copytree(source.artifact_dir, copy)
    changed = catalog.create_variant(model_id=source.model_id, parent_id=source.id, name="tiny changed",
                                     artifact_dir=str(copy), runtime="pytorch", precision="fp32", recipe={},
                                     files=source.files, sha256=source.sha256, size_bytes=source.size_bytes)
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    target = shipped.base / "never"
    with pytest.raises(InvalidInput, match="model.safetensors changed since the variant was made"):
        api.export_deployment(changed.id, str(target))
    assert not target.exists() and not list(shipped.base.glob(".never.*"))
    with pytest.raises(InvalidInput, match="not a Kubernetes name"):
        api.export_deployment(source.id, str(target), name="Not_A_Name")


def test_the_deploy_tab_downloads_the_bundle_as_a_zip(shipped):
    from workbench.tabs.deploy_export import export_deployment_zip

    status, download = export_deployment_zip(str(shipped.variants["pytorch"].id))
    assert status.startswith("✓") and download["visible"], status
    with zipfile.ZipFile(download["value"]) as archive:
        names = set(archive.namelist())
    assert {"SHA256SUMS", "Dockerfile", "k8s/deployment.yaml", "bundle_server/__main__.py", "deployment.json",
            "model/model.safetensors", "requirements.txt", "README.md"} <= names
    shutil.rmtree(Path(download["value"]).parent)
    assert export_deployment_zip("")[0].startswith("✗")


def test_the_copier_redirects_imports_and_refuses_the_database(tmp_path):
    from jobs.export.vendor import redirect_imports, vendor
    from storage.errors import InvalidInput

    source = ('"""é"""\nfrom jobs.runtimes.base import (\n    Predictor,\n    softmax,\n)\nimport numpy as np\n'
              "import jobs.runtimes as runtimes\n\n\ndef later():\n    from storage import settings  # lazy\n"
              "    return settings\n")
    text, statements, libraries = redirect_imports(source, "pkg")
    assert "from pkg.jobs.runtimes.base import (\n    Predictor,\n    softmax,\n)" in text
    assert "import pkg.jobs.runtimes as runtimes" in text and "    from pkg.storage import settings  # lazy" in text
    assert libraries == {"numpy"} and [s.lazy for s in statements] == [False, False, True]
    with pytest.raises(InvalidInput, match="needs an 'as' name"):
        redirect_imports("import jobs.api\n", "pkg")
    refused = r"needs storage.catalog \(jobs.playground.predictor_cache -> storage.catalog\), which a bundle cannot"
    with pytest.raises(InvalidInput, match=refused):
        vendor(["jobs.playground.predictor_cache"], tmp_path, "pkg", header="#")
