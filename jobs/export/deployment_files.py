"""The text files of a deployment bundle: requirements.txt, Dockerfile, Kubernetes manifests and README.md.

Each is made from what the export knows (the variant, its labels and lineage, the server's libraries) and nothing
else: no file names a path of this machine, and none holds an API key (keys reach the server through its
environment: a Kubernetes Secret, `docker run -e`).
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import re
import sys
from dataclasses import dataclass
from typing import Any

import yaml
from packaging.requirements import InvalidRequirement, Requirement

from jobs.serving import API_KEYS_ENV

CONTAINER_PORT = 8080
SERVER_COMMAND = ("python", "-m", "bundle_server")
USER_ID = 10001  # numeric, so Kubernetes can check runAsNonRoot against the image without reading /etc/passwd
PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"  # the lock below is for this Python
BASE_IMAGE = f"python:{PYTHON}-slim"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
# CUDA builds' own libraries: a CPU lock leaves them out (a GPU image installs torch from a CUDA index instead)
GPU_ONLY_DISTS = re.compile(r"^(nvidia-.*|triton|cuda-.*)$")
API_KEYS_SECRET_KEY = "keys"
HPA_CPU_TARGET = 70  # % of the CPU request: a replica busier than this on average adds one
HPA_MAX_REPLICAS = 4
MIB = 1 << 20


@dataclass(frozen=True)
class BundleFacts:
    """What the files describe: the variant, where it came from, and what the server needs."""

    name: str  # a DNS-1123 label: the Kubernetes objects' and the image's name
    variant: dict[str, Any]  # the manifest's variant (id, name, runtime, precision, sha256, files, lineage, ...)
    labels: list[str]
    model_bytes: int
    accuracy: str  # one sentence (markdown)
    recipe: list[str]  # one markdown line per step
    requirements: list[str]
    uses_torch: bool
    replicas: int = 1  # the Deployment's replicas and the autoscaler's floor
    max_replicas: int = HPA_MAX_REPLICAS  # the autoscaler's ceiling


# ---- requirements.txt --------------------------------------------------------------------------------------


def _key(dist: str) -> str:
    return re.sub(r"[-_.]+", "-", dist).lower()


def distributions(libraries: set[str]) -> set[str]:
    """The installed distributions that provide these top-level modules (`yaml` -> PyYAML)."""
    provided = importlib.metadata.packages_distributions()
    found = set()
    for name in libraries:
        dists = provided.get(name)
        if not dists:
            raise LookupError(f"no installed distribution provides the module {name!r}")
        found.update(dists)
    return found


def installed(dist: str) -> bool:
    try:
        importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def locked(dists: set[str]) -> dict[str, str]:
    """Each distribution and everything it requires here (markers evaluated for this machine, no extras), with
    the installed versions: the lock a bundle installs to run what ran here."""
    versions: dict[str, str] = {}
    names: dict[str, str] = {}
    wanted = sorted(dists)
    while wanted:
        dist = wanted.pop()
        key = _key(dist)
        if key in versions or GPU_ONLY_DISTS.match(key):
            continue
        try:
            meta = importlib.metadata.distribution(dist)
        except importlib.metadata.PackageNotFoundError:
            continue  # an optional dependency not installed here is not needed here either
        versions[key], names[key] = meta.version, meta.metadata["Name"] or dist
        for line in meta.requires or []:
            try:
                requirement = Requirement(line)
            except InvalidRequirement:
                continue
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                wanted.append(requirement.name)
    return {names[key]: versions[key] for key in sorted(versions)}


def requirements_text(pins: dict[str, str], uses_torch: bool) -> str:
    lines = [
        "# What the bundle's server imports, and everything those need, pinned to the versions it was exported",
        f"# with (Python {PYTHON}). `pip install -r requirements.txt`",
    ]
    if uses_torch:
        lines += ["# torch comes from PyTorch's CPU index (no CUDA libraries); for a GPU, install torch from a CUDA index",
                  f"--extra-index-url {TORCH_CPU_INDEX}"]
    # a local version label (+cpu) is dropped: `torch==2.13.0` matches the CPU build on its index
    lines += [f"{name}=={version.split('+')[0]}" for name, version in pins.items()]
    return "\n".join(lines) + "\n"


# ---- Dockerfile --------------------------------------------------------------------------------------------


def dockerfile(facts: BundleFacts) -> str:
    health = (f"import sys, urllib.request; "
              f"sys.exit(urllib.request.urlopen('http://127.0.0.1:{CONTAINER_PORT}/health', timeout=4).status != 200)")
    return "\n".join([
        f"# Model server for variant #{facts.variant['id']} ({facts.variant['name']}), exported by the Transformer",
        "# Deployment Workbench. Build from this folder: docker build -t "
        f"{facts.name} .",
        "# API keys: docker run -e WORKBENCH_SERVING_API_KEYS=... (never baked into the image).",
        f"FROM {BASE_IMAGE}",
        "",
        "ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \\",
        "    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HOME=/tmp/huggingface",
        "",
        f"RUN useradd --uid {USER_ID} --user-group --no-create-home --shell /usr/sbin/nologin server",
        "WORKDIR /srv/bundle",
        "COPY requirements.txt ./",
        "RUN pip install --no-cache-dir -r requirements.txt",
        "# owned by root and read-only to the server: it cannot change its own model or code",
        "COPY . ./",
        "",
        f"USER {USER_ID}:{USER_ID}",
        f"EXPOSE {CONTAINER_PORT}",
        "HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \\",
        f"    CMD {json.dumps(['python', '-c', health])}",
        f"CMD {json.dumps([*SERVER_COMMAND, '--host', '0.0.0.0', '--port', str(CONTAINER_PORT)])}",
        "",
    ])


# ---- Kubernetes --------------------------------------------------------------------------------------------


def _mib(n_bytes: float) -> str:
    return f"{max(64, math.ceil(n_bytes / MIB / 64) * 64)}Mi"


def memory_request(model_bytes: int, uses_torch: bool) -> int:
    """Bytes a replica asks for: the libraries (torch's are larger) and about twice the model (weights loaded,
    plus the copy a load makes on the way)."""
    libraries = (640 if uses_torch else 320) * MIB
    return libraries + 2 * model_bytes


def kubernetes_manifests(facts: BundleFacts) -> dict[str, dict[str, Any]]:
    """file name -> one Kubernetes object: the Deployment, its Service and its HorizontalPodAutoscaler."""
    name = facts.name
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/component": "model-server",
              "app.kubernetes.io/part-of": "transformer-deployment-workbench"}
    annotations = {"workbench/variant-id": str(facts.variant["id"]), "workbench/variant-sha256": facts.variant["sha256"],
                   "workbench/runtime": facts.variant["runtime"]}
    request = memory_request(facts.model_bytes, facts.uses_torch)
    probe = {"httpGet": {"path": "/health", "port": "http"}, "initialDelaySeconds": 5, "periodSeconds": 10,
             "timeoutSeconds": 3, "failureThreshold": 3}
    container = {
        "name": "model-server",
        "image": f"{name}:{facts.variant['sha256'][:12]}",
        "imagePullPolicy": "IfNotPresent",
        # the whole command: `args` alone would replace the image's CMD (and its --host 0.0.0.0) entirely
        "command": list(SERVER_COMMAND),
        # one thread per replica: the autoscaler adds replicas, not threads
        "args": ["--host", "0.0.0.0", "--port", str(CONTAINER_PORT), "--threads", "1"],
        "ports": [{"name": "http", "containerPort": CONTAINER_PORT, "protocol": "TCP"}],
        "env": [{"name": API_KEYS_ENV, "valueFrom": {"secretKeyRef": {
            "name": f"{name}-api-keys", "key": API_KEYS_SECRET_KEY}}}],
        "livenessProbe": probe,
        # ready once every file matched its sha256 and the model answered a warm-up text
        "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "initialDelaySeconds": 5,
                           "periodSeconds": 5, "timeoutSeconds": 3, "failureThreshold": 3},
        "resources": {"requests": {"cpu": "1", "memory": _mib(request)},
                      "limits": {"cpu": "2", "memory": _mib(request * 1.5)}},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "runAsNonRoot": True, "runAsUser": USER_ID, "runAsGroup": USER_ID,
                            "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "spec": {
            "replicas": facts.replicas,
            "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
            "template": {
                "metadata": {"labels": labels, "annotations": annotations},
                "spec": {
                    "securityContext": {"runAsNonRoot": True, "runAsUser": USER_ID, "runAsGroup": USER_ID,
                                        "seccompProfile": {"type": "RuntimeDefault"}},
                    "automountServiceAccountToken": False,
                    "containers": [container],
                    "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "labels": labels},
        "spec": {"type": "ClusterIP", "selector": {"app.kubernetes.io/name": name},
                 "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]},
    }
    autoscaler = {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": facts.replicas, "maxReplicas": facts.max_replicas,
            "metrics": [{"type": "Resource", "resource": {
                "name": "cpu", "target": {"type": "Utilization", "averageUtilization": HPA_CPU_TARGET}}}],
        },
    }
    return {"deployment.yaml": deployment, "service.yaml": service, "hpa.yaml": autoscaler}


class _PlainDumper(yaml.SafeDumper):
    """Writes a mapping used twice (the labels) out each time: no &anchors, which people reading manifests trip on."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def yaml_text(obj: dict[str, Any]) -> str:
    return yaml.dump(obj, Dumper=_PlainDumper, sort_keys=False, default_flow_style=False)


# ---- README.md ---------------------------------------------------------------------------------------------


def readme(facts: BundleFacts) -> str:
    v, name = facts.variant, facts.name
    lineage = " → ".join(f"#{i}" for i in v.get("lineage") or [v["id"]])
    rows = [f"| `model/{f['path']}` | {f['size']:,} | `{f['sha256']}` |" for f in v["files"]]
    runtime_pins = [r for r in facts.requirements if r.split("==")[0].lower() in ("torch", "onnxruntime")]
    return "\n".join([
        f"# {name}: a model server for variant #{v['id']}",
        "",
        f"Variant #{v['id']} **{v['name']}** of model **{v.get('model_name') or '?'}** "
        f"({v['runtime']} {v['precision']}, {facts.model_bytes / 1e6:.1f} MB), exported by the Transformer "
        "Deployment Workbench with the workbench's own model server: the same routes, dynamic batcher, "
        "Prometheus metrics, input checks and runtime code, so it answers as the workbench does. It runs without "
        "the workbench and offline: the model, tokenizer and config are in `model/`, nothing is downloaded and no "
        "remote code runs.",
        "",
        f"- **Labels:** {', '.join(facts.labels)}",
        f"- **Runtime:** {v['runtime']} ({', '.join(f'`{r}`' for r in runtime_pins) or 'see requirements.txt'})",
        f"- **Variant sha256** (of its file list): `{v['sha256']}`",
        f"- **Lineage** (variant ids, from the original model's): {lineage}",
        f"- **Accuracy:** {facts.accuracy}",
        "",
        "Recipe:",
        "",
        *([f"{i}. {step}" for i, step in enumerate(facts.recipe, start=1)] or ["(the original model)"]),
        "",
        "## Run it locally",
        "",
        "```bash",
        f"python{PYTHON} -m venv .venv && . .venv/bin/activate",
        "pip install -r requirements.txt",
        "python -m bundle_server --port 8080          # http://127.0.0.1:8080/docs",
        "```",
        "",
        "`python -m bundle_server --help` lists the options: `--host` (default 127.0.0.1), `--port`, `--max-batch`, "
        "`--max-wait-ms`, `--max-queue`, `--timeout-s`, `--cache-size`, `--device`, `--threads`.",
        "",
        "## Run it with Docker",
        "",
        "```bash",
        f"docker build -t {name}:{v['sha256'][:12]} .",
        f"docker run --rm -p 8080:8080 -e {API_KEYS_ENV}=change-me {name}:{v['sha256'][:12]}",
        "```",
        "",
        f"The image is `{BASE_IMAGE}`, runs as the non-root user {USER_ID}, and checks `/health` itself "
        "(HEALTHCHECK). **This image was not built when the bundle was exported**: the workbench writes the "
        "Dockerfile and checks its instructions, but it runs no Docker engine, so build it once before you rely "
        "on it. The server in it is the one `python -m bundle_server` starts above.",
        "",
        "## Run it on Kubernetes",
        "",
        "```bash",
        f"docker build -t REGISTRY/{name}:{v['sha256'][:12]} . && docker push REGISTRY/{name}:{v['sha256'][:12]}",
        "# set the image in k8s/deployment.yaml to what you pushed, then:",
        f"kubectl create secret generic {name}-api-keys --from-literal={API_KEYS_SECRET_KEY}=KEY1,KEY2",
        "kubectl apply -f k8s/",
        f"kubectl port-forward service/{name} 8080:80",
        "```",
        "",
        f"`k8s/deployment.yaml`: {facts.replicas} replica(s) to start, liveness probe on `/health`, readiness probe on `/ready` "
        "(traffic only once the files are verified and the model is loaded), CPU and memory requests and limits, "
        "a non-root read-only container, the API keys from the Secret. `k8s/service.yaml`: a ClusterIP Service on "
        f"port 80. `k8s/hpa.yaml`: an autoscaling/v2 HorizontalPodAutoscaler from {facts.replicas} to "
        f"{facts.max_replicas} replicas "
        f"at {HPA_CPU_TARGET} % of the CPU request (needs the cluster's metrics-server).",
        "",
        "## Endpoints",
        "",
        "| method | path | what |",
        "|---|---|---|",
        '| POST | `/v1/predict` | `{"text": "..."}` or `{"texts": ["...", ...]}` → each label\'s probability, '
        "the label, tokens, truncation; 422 for bad input, 429 when the queue is full, 503 on timeout |",
        "| GET | `/v1/model` | the variant: runtime, precision, sha256, files, labels, lineage |",
        "| GET | `/health` | 200 while the process runs (liveness) |",
        "| GET | `/ready` | 200 once every model file matched its sha256 and the model is loaded; 503 with the "
        "reason otherwise (a changed file keeps it 503) |",
        "| GET | `/metrics` | Prometheus: requests, errors, latency, queue time, batch sizes, cache hits |",
        "| GET | `/docs` | OpenAPI documentation |",
        "",
        "```bash",
        "curl -s localhost:8080/v1/predict -H 'Authorization: Bearer KEY1' -H 'Content-Type: application/json' \\",
        "     -d '{\"text\": \"what a wonderful day\"}'",
        "```",
        "",
        "## Environment",
        "",
        "| variable | what |",
        "|---|---|",
        f"| `{API_KEYS_ENV}` | Bearer keys the server accepts, comma-separated; unset: no key needed. "
        "`/health`, `/ready` and `/metrics` never need one |",
        "| `WORKBENCH_MAX_TEXT_CHARS` | longest text accepted, in characters (default 20000) |",
        "| `WORKBENCH_MAX_BATCH_LINES` | most texts in one request (default 2000) |",
        "| `PORT` | the port when `--port` is not given (default 8080) |",
        "| `HF_HUB_OFFLINE`, `TRANSFORMERS_OFFLINE` | set to 1 by the server itself: nothing is downloaded |",
        "",
        "## Files",
        "",
        "`sha256sum -c SHA256SUMS` checks every file of the bundle. `deployment.json` describes the variant and "
        "the file list the server verifies at `/ready`; `bundle_server/` is the server (the workbench's "
        "`jobs/serving` and what it needs, copied with their imports redirected; `bundle_server/jobs/...` keeps "
        "the original layout).",
        "",
        "| file | bytes | sha256 |",
        "|---|---|---|",
        *rows,
        "",
    ])
