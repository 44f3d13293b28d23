"""deploy/compose.yaml and docs/kuberay.md, checked as far as this machine allows.

Neither was started here: there is no Docker engine and no Kubernetes. What is checked: the compose file against
the Compose specification's JSON schema (the copy check-jsonschema ships), the standard Kubernetes objects of the
guide against the Kubernetes schemas (kubernetes-validate, offline), that every WORKBENCH_* variable is a real
setting, that images are pinned to the versions this project runs with, and that every `workbench`, `ray start`
and `mlflow server` command line is accepted by the real CLI's argument parser.
"""

from __future__ import annotations

import json
import re
import shlex
import socket
import tomllib
from importlib import resources
from importlib.metadata import version
from pathlib import Path

import jsonschema
import pytest
import yaml

from jobs.runner.params import HARDWARE_CLASS_PATTERN, RAY_BUILTIN_RESOURCES
from storage import settings
from tests.support import postgres
from workbench.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "deploy" / "compose.yaml"
KUBERAY = ROOT / "docs" / "kuberay.md"
PROJECT_IMAGE = "transformer-deployment-workbench:0.1.0"
# stand-ins for the variables the file requires from the person starting it
COMPOSE_VARIABLES = {"POSTGRES_PASSWORD": "s3cret", "WORKBENCH_AUTH": "admin:pw", "WORKBENCH_VIEWERS": ""}
# Compose's own interpolation (${VAR}, ${VAR:-default}, ${VAR:?error}) written here: no Compose implementation
# runs without an engine, and only these forms occur in the file
INTERPOLATION = re.compile(r"\$\{(\w+)(?::?[-?][^}]*)?\}")


def interpolate(value):
    if isinstance(value, str):
        return INTERPOLATION.sub(lambda m: COMPOSE_VARIABLES[m.group(1)], value)
    if isinstance(value, list):
        return [interpolate(v) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v) for k, v in value.items()}
    return value


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())  # YAML merge keys (<<) resolved, as Compose does


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return interpolate(compose["services"])


def command_lines(command) -> list[list[str]]:
    """The programs a service's command runs: a list as is; `sh -c "A && exec B"` as [A, B]."""
    if command[:2] == ["sh", "-c"]:
        return [[w for w in shlex.split(part) if w != "exec"] for part in command[2].split("&&")]
    return [command]


def parse_ray_start(args: list[str]):
    from ray.scripts.scripts import start

    assert args[:2] == ["ray", "start"], args
    return start.make_context("ray start", list(args[2:])).params  # click raises on an unknown flag or a bad value


def assert_hardware_classes(resources_json: str) -> list[str]:
    names = list(json.loads(resources_json))
    for name in names:
        assert HARDWARE_CLASS_PATTERN.fullmatch(name) and name not in RAY_BUILTIN_RESOURCES, name
    return names


def ray_pin() -> str:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    (pin,) = [r for r in extras["ray"] if r.startswith("ray")]
    return pin.split("==")[1]


# ---- compose ------------------------------------------------------------------------------------------------


def test_the_compose_file_is_valid_by_the_compose_specification_schema(compose):
    schema_file = resources.files("check_jsonschema") / "builtin_schemas" / "vendor" / "compose-spec.json"
    schema = json.loads(schema_file.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose)]
    assert errors == []
    # the schema bites: a condition Compose does not know, and a misspelt service key
    broken = json.loads(json.dumps(compose))
    broken["services"]["workbench"]["depends_on"]["postgres"]["condition"] = "service_ready"
    broken["services"]["mlflow"]["healthcheck"]["intervall"] = "5s"
    assert len(list(validator.iter_errors(broken))) >= 2
    assert "NOT STARTED HERE" in COMPOSE.read_text()


def test_the_services_are_the_deployment_and_depend_only_on_services_that_exist(compose, services):
    assert set(services) == {"postgres", "mlflow", "ray-head", "ray-worker", "workbench", "workbench-worker"}
    for name, service in services.items():
        for needed, how in service.get("depends_on", {}).items():
            assert needed in services, (name, needed)
            if "healthcheck" in services[needed]:
                assert how["condition"] == "service_healthy", (name, needed)
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        test = service["healthcheck"]["test"]
        if test[:2] == ["CMD", "python"]:
            compile(test[3], f"{name} healthcheck", "exec")  # the one-liner is valid Python
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE.parent / source).is_file(), (name, source)
            else:
                assert source in compose["volumes"], (name, source)
    # ports only where a person needs them: the UI, and MLflow's UI on the Docker host only
    published = {name: s["ports"] for name, s in services.items() if s.get("ports")}
    assert published == {"workbench": ["7860:7860"], "mlflow": ["127.0.0.1:5000:5000"]}
    # the UI is served on a network: accounts are required, not defaulted
    assert "${WORKBENCH_AUTH:?" in json.dumps(compose["services"]["workbench"]["environment"])


def test_every_workbench_variable_it_sets_is_a_real_setting(services):
    set_here = {}
    for service in services.values():
        set_here.update(service.get("environment", {}))
    workbench_vars = {k for k in set_here if k.startswith("WORKBENCH_")}
    assert workbench_vars >= {"WORKBENCH_HOME", "WORKBENCH_DB_URL", "WORKBENCH_EXECUTOR", "WORKBENCH_AUTH"}
    assert workbench_vars <= set(settings.SETTINGS)
    for name in ("workbench", "workbench-worker"):
        env = services[name]["environment"]
        assert env["WORKBENCH_EXECUTOR"] == "ray" and env["RAY_ADDRESS"] == "ray-head:6379"
        assert env["WORKBENCH_DB_URL"].startswith("postgresql+psycopg://") and env["WORKBENCH_DB_URL"].endswith("@postgres:5432/workbench")
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
        assert env["WORKBENCH_HOME"] == "/data"
    # the shared-artifacts root is on the same volume at the same path on every node that runs or hands out jobs
    for name in ("ray-head", "ray-worker", "workbench", "workbench-worker"):
        assert "workbench-data:/data" in services[name]["volumes"], name


def test_images_are_pinned_to_the_versions_this_project_runs_with(compose, services):
    for name, service in services.items():
        repo, _, tag = service["image"].rpartition(":")
        assert repo and tag and tag != "latest", (name, service["image"])
    # the Ray nodes and the workbench run the project image, which installs the ray extra pinned in pyproject.toml
    for name in ("ray-head", "ray-worker", "workbench", "workbench-worker"):
        assert services[name]["image"] == PROJECT_IMAGE
        assert services[name]["build"] == {"context": "..", "dockerfile": "Dockerfile"}
        assert services[name]["init"] is True  # reaps the daemons `ray start` leaves behind
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert '-c constraints.txt ".[ray]"' in dockerfile
    assert version("ray") == ray_pin()  # so `ray start --help` below is the pinned Ray's
    # MLflow's server at the client's version, plus the PostgreSQL driver the workbench itself uses
    inline = services["mlflow"]["build"]["dockerfile_inline"].splitlines()
    assert inline[0] == f"FROM ghcr.io/mlflow/mlflow:v{version('mlflow')}"
    assert f'"psycopg[binary]=={version("psycopg")}"' in inline[1]
    assert services["mlflow"]["image"].endswith(f":{version('mlflow')}")
    # PostgreSQL at the major version the PostgreSQL test pass runs against (Debian's server, where installed)
    tag = services["postgres"]["image"].split(":")[1]
    assert re.fullmatch(r"\d+\.\d+-bookworm", tag), tag
    if postgres.server_bin_dir() is not None:
        assert tag.split(".")[0] == postgres.server_bin_dir().parent.name


def test_its_workbench_ray_and_mlflow_commands_are_accepted_by_the_real_parsers(services):
    from mlflow.cli import server as mlflow_server
    from mlflow.server.security_utils import is_allowed_host_header

    parser = build_parser()
    head = parse_ray_start(services["ray-head"]["command"])
    assert head["head"] and head["port"] == 6379 and head["num_cpus"] == 0 and head["block"]
    worker = parse_ray_start(services["ray-worker"]["command"])
    assert worker["address"] == "ray-head:6379" and worker["block"]
    assert assert_hardware_classes(worker["resources"]) == ["cpu-node"]
    expected = {"workbench": ("serve", {"no_worker": True, "host": "0.0.0.0", "port": 7860}),
                "workbench-worker": ("worker", {"executor": "ray", "concurrency": 4})}
    for name, (command, values) in expected.items():
        join, run = command_lines(services[name]["command"])
        joined = parse_ray_start(join)  # a driver joins as a node that takes no job
        assert joined["address"] == "ray-head:6379" and joined["num_cpus"] == 0 and joined["num_gpus"] == 0
        assert run[0] == "workbench"
        args = parser.parse_args(run[1:])
        assert args.command == command
        assert {k: getattr(args, k) for k in values} == values
    mlflow_args = services["mlflow"]["command"]
    assert mlflow_args[:2] == ["mlflow", "server"]
    params = mlflow_server.make_context("mlflow server", mlflow_args[2:]).params
    assert params["backend_store_uri"] == "postgresql+psycopg://workbench:s3cret@postgres:5432/mlflow"
    init_sql = (COMPOSE.parent / "postgres-init.sql").read_text()
    assert "CREATE DATABASE mlflow OWNER workbench;" in init_sql
    # MLflow's server refuses Host headers it does not know: the workbench's (mlflow:5000) and the host's browser
    allowed = params["allowed_hosts"].split(",")
    for host in ("mlflow:5000", "localhost:5000", "127.0.0.1:5000"):
        assert is_allowed_host_header(allowed, host), host
    assert not is_allowed_host_header(allowed, "evil.example.com")
    with pytest.raises(Exception, match="No such option"):
        parse_ray_start(["ray", "start", "--head", "--no-such-flag"])


# ---- the KubeRay guide --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kuberay_objects() -> list[dict]:
    blocks = re.findall(r"```yaml\n(.*?)```", KUBERAY.read_text(), flags=re.S)
    return [obj for block in blocks for obj in yaml.safe_load_all(block) if obj]


def test_the_guides_standard_objects_pass_the_kubernetes_schemas_offline(kuberay_objects, monkeypatch):
    import kubernetes_validate

    def no_network(*args, **kwargs):
        raise AssertionError("kubernetes-validate tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    kinds = [(o["kind"], o["metadata"]["name"]) for o in kuberay_objects]
    assert kinds == [("PersistentVolumeClaim", "workbench-data"), ("Secret", "workbench-db"), ("Deployment", "mlflow"),
                     ("Service", "mlflow"), ("RayCluster", "workbench"), ("Deployment", "workbench"),
                     ("Service", "workbench")]
    k8s_version = kubernetes_validate.latest_version()
    standard = [o for o in kuberay_objects if o["kind"] != "RayCluster"]
    for obj in standard:
        kubernetes_validate.validate(obj, k8s_version, strict=True)
    broken = json.loads(json.dumps(standard[0]))
    broken["spec"]["accessModes"] = "ReadWriteMany"  # a string where a list belongs
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, k8s_version, strict=True)
    assert standard[0]["spec"]["accessModes"] == ["ReadWriteMany"]
    # the RayCluster's own schema is not here, but each of its groups' pod templates is a core/v1 PodTemplateSpec
    (cluster,) = [o for o in kuberay_objects if o["kind"] == "RayCluster"]
    for group in [cluster["spec"]["headGroupSpec"], *cluster["spec"]["workerGroupSpecs"]]:
        as_pod_template = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "ray-group"},
                           "template": group["template"]}
        kubernetes_validate.validate(as_pod_template, k8s_version, strict=True)


def test_the_guides_raycluster_and_workbench_fit_the_project(kuberay_objects):
    """The RayCluster is a custom resource whose schema ships with the KubeRay operator, not offline: its shape is
    checked here, and its rayStartParams against `ray start`'s own parser."""
    by_name = {(o["kind"], o["metadata"]["name"]): o for o in kuberay_objects}
    cluster = by_name[("RayCluster", "workbench")]
    assert cluster["apiVersion"] == "ray.io/v1"
    assert cluster["spec"]["rayVersion"] == ray_pin()
    groups = [cluster["spec"]["headGroupSpec"], *cluster["spec"]["workerGroupSpecs"]]
    classes = []
    for group in groups:
        # KubeRay turns each rayStartParams entry into a `ray start --KEY=VALUE` flag
        args = ["ray", "start", "--address=workbench-head-svc:6379"]
        for key, value in group["rayStartParams"].items():
            args.append(f"--{key}={json.loads(value) if key == 'resources' else value}")
        params = parse_ray_start(args)
        if params["resources"] != "{}":
            classes += assert_hardware_classes(params["resources"])
        pod = group["template"]["spec"]
        (container,) = pod["containers"]
        assert container["image"].rsplit("/", 1)[1].startswith(PROJECT_IMAGE)
        assert {"name": "data", "mountPath": "/data"} in container["volumeMounts"]
        assert pod["volumes"] == [{"name": "data", "persistentVolumeClaim": {"claimName": "workbench-data"}}]
        # its own probes (KubeRay's default ones need the Ray dashboard, which the plain `ray` extra lacks)
        for probe in (container["livenessProbe"], container["readinessProbe"]):
            program = probe["exec"]["command"]
            assert program[:2] == ["python", "-c"]
            compile(program[2], "probe", "exec")
        if params["num_gpus"]:
            assert container["resources"]["limits"]["nvidia.com/gpu"] == str(params["num_gpus"])
    assert classes == ["cpu-avx512", "gpu-l4"]

    workbench = by_name[("Deployment", "workbench")]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in workbench["env"]}
    assert {k for k in env if k.startswith("WORKBENCH_")} <= set(settings.SETTINGS)
    assert env["RAY_ADDRESS"] == "workbench-head-svc:6379" and env["WORKBENCH_EXECUTOR"] == "ray"
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    join, run = command_lines(workbench["command"] + workbench["args"])
    joined = parse_ray_start(join)
    assert joined["address"] == env["RAY_ADDRESS"] and joined["num_cpus"] == 0
    args = build_parser().parse_args(run[1:])
    assert run[0] == "workbench" and args.command == "serve" and not args.no_worker
    secret = by_name[("Secret", "workbench-db")]["stringData"]
    assert secret["WORKBENCH_DB_URL"].startswith("postgresql+psycopg://")
