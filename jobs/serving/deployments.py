"""Deployments: a model server (`python -m jobs.serving.server`) started for a variant in its own process, and
the record of it (`storage.deployments`): where it listens, how it is configured, its pid and its status.

A server outlives whoever started it (the CLI exits at once; the app may restart), so its status is not pushed by
anyone: `refresh` looks at the process and asks the server's `/ready`, and every listing refreshes what it shows.
A process that is gone is `crashed` with the reason (its exit status when this process started it and so can
reap it, else "process N is gone") and the last line of its log. The server's own log (stdout and stderr) is a
file under `$WORKBENCH_HOME/deployments/`. API keys reach the server through its environment only: they are in
no command line (which `ps` shows to every user) and in no record.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import psutil

from jobs.serving import ADMIN_TOKEN_ENV, API_KEYS_ENV, rollout
from storage import deployments as store
from storage import settings
from storage.entities import Deployment, LogTail
from storage.errors import Conflict, InvalidInput
from storage.orm import utcnow

SERVER_MODULE = "jobs.serving.server"

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
# Logs are read by people: no progress bars redrawn in place, no tokenizer fork warnings, lines as they come.
SERVER_ENV = {"PYTHONUNBUFFERED": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TOKENIZERS_PARALLELISM": "false"}
READY_PROBE_TIMEOUT_S = 2.0
STOP_GRACE_S = 10.0  # SIGTERM lets the server finish the requests it holds; after this it is killed
KILL_WAIT_S = 5.0
# A record still without a pid this long after it was made: the process that was starting it died first.
NEVER_STARTED_S = 60.0
LAST_LINE_CHARS = 300
DEFAULT_TAIL_CHARS = 20_000

# The server processes this process started, by deployment id: polling them reaps them (a dead child would
# otherwise stay a zombie as long as this process lives) and gives their exit status.
_CHILDREN: dict[int, subprocess.Popen] = {}


@dataclass(frozen=True)
class ServerConfig:
    """How a server batches, queues and runs; recorded with the deployment (the key only as `api_key_set`)."""

    max_batch: int = 16  # most requests' texts run together in one forward pass
    max_wait_ms: float = 5  # how long the first request of a batch waits for others
    max_queue: int = 256  # requests waiting beyond this are answered 429
    timeout_s: float = 10  # a request not answered within this is answered 503
    cache_size: int = 0  # predictions kept in memory by the text's hash; 0: no cache
    device: str = "cpu"
    threads: int | None = None  # CPU threads the runtime may use; None: its default
    api_key_set: bool = False
    # the environment variable the key was read from (`--api-key-env`), never the key: a load test finds it there
    api_key_env: str | None = None
    sample_rate: float = 0.1  # fraction of texts sampled for drift monitoring (jobs.serving.drift); 0: none

    def __post_init__(self):
        def whole(name: str, low: int, high: int) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise InvalidInput(f"{name} must be a whole number from {low} to {high}, not {value!r}",
                                   inputs=[name])

        def number(name: str, low: float, high: float, low_open: bool = False) -> None:
            value = getattr(self, name)
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
            if not ok or not (low < value if low_open else low <= value) or value > high:
                raise InvalidInput(f"{name} must be a number {'above' if low_open else 'from'} {low:g} "
                                   f"{'and at most' if low_open else 'to'} {high:g}, not {value!r}", inputs=[name])

        whole("max_batch", 1, 1024)
        number("max_wait_ms", 0, 10_000)
        whole("max_queue", 1, 1_000_000)
        number("timeout_s", 0, 3600, low_open=True)
        whole("cache_size", 0, 10_000_000)
        number("sample_rate", 0, 1)
        if self.threads is not None:
            whole("threads", 1, 1024)
        if self.api_key_env is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,199}", str(self.api_key_env)):
            raise InvalidInput(f"api_key_env must name an environment variable (letters, digits, _), not "
                               f"{self.api_key_env!r}", inputs=["api_key_env"])

    def server_args(self) -> list[str]:
        args = ["--max-batch", str(self.max_batch), "--max-wait-ms", _number(self.max_wait_ms),
                "--max-queue", str(self.max_queue), "--timeout-s", _number(self.timeout_s),
                "--cache-size", str(self.cache_size), "--device", self.device,
                "--sample-rate", _number(self.sample_rate)]
        return args + (["--threads", str(self.threads)] if self.threads else [])


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


# ---- deploy -------------------------------------------------------------------------------------------------


def deploy(variant_or_alias: int | str, port: int | None = None, max_batch: int = 16, max_wait_ms: float = 5,
           replicas: int = 1, api_key: str | None = None, *, host: str = "127.0.0.1", max_queue: int = 256,
           timeout_s: float = 10, cache_size: int = 0, device: str = "cpu", threads: int | None = None,
           name: str | None = None, wait_s: float = 0, sample_rate: float = 0.1,
           reference_dataset: int | str | None = None, api_key_env: str | None = None,
           canary: int | str | None = None, **rollout_options: Any) -> Deployment:
    """Start a model server for a variant (an id, a name, or a registry alias `NAME@ALIAS`, resolved now: the
    deployment keeps serving that variant when the alias moves) on `host:port` (a free port when None).

    `api_key`: one key, or several separated by commas, that requests must bear (`Authorization: Bearer KEY`);
    `api_key_env`: the name of the environment variable it was read from, recorded so a load test can read it too.
    Returns the record as `starting`; with `wait_s`, after waiting up to that long for it to be ready or crash.
    `sample_rate`: the fraction of texts sampled for drift monitoring; `reference_dataset`: the dataset whose test
    split the Drift view compares them with (default: the one the variant was fine-tuned or evaluated on).
    """
    from jobs.tracking.variant_refs import parse_alias, resolve_variant

    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
        raise InvalidInput(f"replicas must be a whole number of at least 1, not {replicas!r}", inputs=["replicas"])
    if replicas > 1:
        # several server processes behind one port need a load balancer that keeps canary and admin calls
        # consistent across them: that is Kubernetes' Service, which the exported bundle targets
        raise InvalidInput("a local deployment runs one server process: for replicas behind one address, "
                           "`workbench export-deployment VARIANT DIR --replicas N` writes a Kubernetes Deployment "
                           "with N replicas, a Service and an autoscaler", inputs=["replicas"])
    keys = _api_keys(api_key)
    # checked before the variant is looked up (which may ask the MLflow registry): a bad number costs nothing
    config = ServerConfig(max_batch=max_batch, max_wait_ms=max_wait_ms, max_queue=max_queue, timeout_s=timeout_s,
                          cache_size=cache_size, device=device, threads=threads, api_key_set=keys is not None,
                          sample_rate=sample_rate, api_key_env=api_key_env if keys is not None else None)
    reference_dataset_id = _reference_dataset_id(reference_dataset)
    # `canary`: a second variant for a share of users; options: canary_percent, rollback_* (jobs.serving.rollout)
    policy = rollout.policy_for(canary, rollout_options)
    if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535):
        raise InvalidInput(f"a port is a whole number from 1 to 65535, not {port!r}", inputs=["port"])
    variant = resolve_variant(variant_or_alias)
    parsed = parse_alias(variant_or_alias) if isinstance(variant_or_alias, str) else None
    alias = f"{parsed[0]}@{parsed[1]}" if parsed else None
    config = replace(config, device=_device_for(variant.runtime, variant.id, device))
    canary_variant = rollout.resolve_canary(canary, variant) if policy is not None else None
    if canary_variant is not None:
        _device_for(canary_variant.runtime, canary_variant.id, config.device)  # both arms run on the same device
    port = _claim_port(host, port)

    directory = settings.home() / "deployments"
    directory.mkdir(parents=True, exist_ok=True)
    record = store.create_deployment(
        name=(name or alias or variant.name)[:200], variant_id=variant.id, variant_sha256=variant.sha256, alias=alias,
        host=host, port=port, config={**asdict(config), "reference_dataset_id": reference_dataset_id}, pid=None,
        status="starting",
        reason="starting the server process", log_path="",
        **(rollout.record_fields(canary, canary_variant, policy) if canary_variant is not None else {}),
    )
    log_path = directory / f"{record.id}.log"
    command = [sys.executable, "-u", "-m", SERVER_MODULE, "--variant-id", str(variant.id), "--host", host,
               "--port", str(port), *config.server_args(), "--deployment-id", str(record.id)]
    server_env = _server_env(keys)
    if canary_variant is not None:
        command += rollout.server_args(canary_variant, policy)
        server_env.update(rollout.new_admin_token(record.id))
        rollout.started_event(record)
    try:
        with open(log_path, "ab") as log:
            log.write(f"# deployment {record.id}: {' '.join(command)}\n".encode())
            log.flush()
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=server_env,
                start_new_session=True,  # its own session: no terminal's Ctrl-C or hang-up reaches it
            )
    except OSError as exc:
        store.update_deployment(record.id, log_path=str(log_path), status="crashed", stopped_at=utcnow(),
                                reason=f"could not start the server process: {exc.strerror or exc}")
        raise InvalidInput(f"could not start the server process: {exc.strerror or exc}") from None
    _CHILDREN[record.id] = process
    started = store.update_deployment(record.id, log_path=str(log_path), pid=process.pid, started_at=utcnow(),
                                      reason="loading the model")
    assert started is not None
    return wait_ready(started, wait_s) if wait_s > 0 else started


def _reference_dataset_id(ref: int | str | None) -> int | None:
    """The dataset drift is measured against (NotFound for an unknown one); None: chosen later from the records."""
    if ref is None or (isinstance(ref, str) and not ref.strip()):
        return None
    from storage import catalog

    return catalog.get_dataset(ref.strip() if isinstance(ref, str) else ref).id


def _api_keys(api_key: str | None) -> str | None:
    if api_key is None:
        return None
    keys = [k.strip() for k in str(api_key).split(",")]
    if not all(keys):
        raise InvalidInput("an API key cannot be empty (several keys are separated by single commas)",
                           inputs=["api_key"])
    if any(any(c.isspace() or not c.isprintable() for c in k) for k in keys):
        raise InvalidInput("an API key is printable characters without spaces", inputs=["api_key"])
    return ",".join(keys)


def _device_for(runtime_name: str, variant_id: int, wanted: str) -> str:
    """The device the variant's runtime runs on here, or InvalidInput saying why it cannot run on this machine."""
    from jobs.runtimes.registry import get_runtime

    runtime = get_runtime(runtime_name)
    try:
        device = runtime.device_for(wanted.strip() or "cpu")
    except ValueError as exc:
        raise InvalidInput(str(exc), inputs=["device"]) from None
    if device == "cpu":
        return device
    from jobs.runtimes.devices import detect  # imports torch to look for CUDA: only when a GPU is asked for

    # every device but the CPU (cuda, cuda:1, ONNX Runtime's tensorrt-ep) is an NVIDIA GPU
    if "cuda" not in detect()["devices"]:
        raise InvalidInput(f"variant {variant_id} is a {runtime.display_name} variant that runs on {device}, and this "
                           "machine has no CUDA GPU", inputs=["device"])
    return device


def _claim_port(host: str, port: int | None) -> int:
    """`port` if nothing listens on it (a free one when None), and no running deployment has it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if port is None:
        with socket.socket(family) as s:
            try:
                s.bind((host, 0))
            except OSError as exc:
                raise InvalidInput(f"cannot listen on {host}: {exc.strerror or exc}", inputs=["host"]) from None
            return s.getsockname()[1]
    for other in store.list_deployments(store.RUNNING):
        if other.port == port and refresh(other).running:
            raise Conflict(f"deployment {other.id} already uses port {port}; stop it or choose another port",
                           inputs=["port"])
    with socket.socket(family) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will: a closing connection is no owner
        try:
            s.bind((host, port))
        except OSError as exc:
            raise InvalidInput(f"cannot listen on {host}:{port}: {exc.strerror or exc}", inputs=["port"]) from None
    return port


def _server_env(keys: str | None) -> dict[str, str]:
    env = {**os.environ, **SERVER_ENV}
    # the server finds the same database and artifacts whatever its working directory, and this code's modules
    env["WORKBENCH_HOME"] = str(settings.home())
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))
    env.pop(API_KEYS_ENV, None)  # keys set in the caller's environment are not this deployment's
    env.pop(ADMIN_TOKEN_ENV, None)  # nor is an admin token: a deployment with a canary gets its own
    if keys is not None:
        env[API_KEYS_ENV] = keys
    return env


# ---- status -------------------------------------------------------------------------------------------------


def _probe_host(host: str) -> str:
    """Where to reach a server listening on `host`: a wildcard address is reached on loopback."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


def _probe_url(deployment: Deployment, path: str) -> str:
    host = _probe_host(deployment.host)
    return f"http://{f'[{host}]' if ':' in host else host}:{deployment.port}{path}"


def metrics_url(deployment: Deployment) -> str:
    """Where its server's Prometheus metrics are read (loopback for a server listening on every address)."""
    return _probe_url(deployment, "/metrics")


def _exit_of(deployment: Deployment) -> tuple[bool, str | None]:
    """(alive, how it ended when known). A zombie is dead; a pid now running something else is not our server."""
    child = _CHILDREN.get(deployment.id)
    if child is not None:
        returncode = child.poll()
        if returncode is None:
            return True, None
        _CHILDREN.pop(deployment.id, None)
        if returncode < 0:
            try:
                name = signal.Signals(-returncode).name
            except ValueError:
                name = f"signal {-returncode}"
            return False, f"server process {child.pid} was killed by {name} (signal {-returncode})"
        return False, f"server process {child.pid} exited with status {returncode}"
    if deployment.pid is None:
        return True, None
    try:
        process = psutil.Process(deployment.pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False, None
        command = process.cmdline()
    except psutil.NoSuchProcess:
        return False, None
    except psutil.AccessDenied:  # another user's process cannot be ours; but a restricted /proc hides our own too
        return True, None
    if SERVER_MODULE not in command or str(deployment.port) not in command:
        return False, None
    return True, None


def _reap(deployment_id: int) -> None:
    child = _CHILDREN.get(deployment_id)
    if child is not None and child.poll() is not None:
        _CHILDREN.pop(deployment_id, None)


def _last_log_line(path: str) -> str:
    text = _read_tail(path, 4096).text
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("# deployment ")]
    return lines[-1][:LAST_LINE_CHARS] if lines else ""


def refresh(deployment: Deployment) -> Deployment:
    """The record brought up to date with its process and its server's `/ready`; stopped and crashed ones as they
    are. Written only when something changed."""
    if not deployment.running:
        _reap(deployment.id)  # stopped or found crashed by another process: this one may still hold the child
        return deployment
    alive, ended = _exit_of(deployment)
    if deployment.pid is None:
        age = (utcnow() - deployment.created_at).total_seconds()
        if age < NEVER_STARTED_S:
            return deployment
        alive, ended = False, "the process starting it ended before it started the server"
    if not alive:
        reason = ended or f"process {deployment.pid} is gone"
        last = _last_log_line(deployment.log_path) if deployment.log_path else ""
        if last:
            reason += f"; its log ends with: {last}"
        changed = store.update_deployment(deployment.id, expect=store.RUNNING, status="crashed", reason=reason,
                                          stopped_at=utcnow())
        return changed or store.get_deployment(deployment.id)
    status, reason = _ask_ready(deployment)
    if (status, reason) == (deployment.status, deployment.reason):
        return deployment
    changes: dict = {"status": status, "reason": reason}
    if status == "ready" and deployment.ready_at is None:
        changes["ready_at"] = utcnow()
    changed = store.update_deployment(deployment.id, expect=store.RUNNING, **changes)
    return changed or store.get_deployment(deployment.id)


def _ask_ready(deployment: Deployment) -> tuple[str, str | None]:
    import httpx

    try:
        response = httpx.get(_probe_url(deployment, "/ready"), timeout=READY_PROBE_TIMEOUT_S)
    except httpx.ConnectError:
        if deployment.status == "starting":
            return "starting", "loading the model (not listening yet)"
        return deployment.status, f"{deployment.url} refuses connections"
    except httpx.HTTPError as exc:
        return deployment.status, f"/ready did not answer within {READY_PROBE_TIMEOUT_S:g} s ({type(exc).__name__})"
    if response.status_code == 200:
        return "ready", None
    try:
        body = response.json()
        detail = (body.get("reason") or body.get("detail")) if isinstance(body, dict) else None
    except ValueError:
        detail = None
    detail = str(detail or response.text or f"/ready answered {response.status_code}").strip()[:LAST_LINE_CHARS]
    # not ready (loading, or its files do not match their recorded hashes): starting, with the server's reason
    return "starting", detail


def wait_ready(deployment: Deployment, timeout_s: float, poll_s: float = 0.25) -> Deployment:
    """Refresh until it is no longer starting (ready, crashed) or `timeout_s` passed; the record as it is then."""
    deadline = time.monotonic() + timeout_s
    current = refresh(deployment)
    while current.status == "starting" and time.monotonic() < deadline:
        time.sleep(poll_s)
        current = refresh(current)
    return current


def get_deployment(ref: int | str, refresh_status: bool = True) -> Deployment:
    deployment = store.get_deployment(ref)
    return refresh(deployment) if refresh_status else deployment


def list_deployments(refresh_status: bool = True) -> list[Deployment]:
    """Every deployment, newest first; running ones refreshed (so a server that died shows as crashed)."""
    return [refresh(d) if refresh_status else d for d in store.list_deployments()]


# ---- stop and logs ------------------------------------------------------------------------------------------


def stop(ref: int | str, grace_s: float = STOP_GRACE_S) -> Deployment:
    """SIGTERM its server (its whole process group), SIGKILL after `grace_s`; the record becomes `stopped`."""
    deployment = refresh(store.get_deployment(ref))
    if deployment.status == "stopped":
        raise Conflict(f"deployment {deployment.id} is already stopped")
    if deployment.status == "crashed":
        raise Conflict(f"deployment {deployment.id} already crashed, nothing to stop: {deployment.reason}")
    how = "stopped on request"
    if deployment.pid is not None and _exit_of(deployment)[0]:
        _signal(deployment.pid, signal.SIGTERM)
        if not _wait_gone(deployment, grace_s):
            _signal(deployment.pid, signal.SIGKILL)
            _wait_gone(deployment, KILL_WAIT_S)
            how = f"stopped on request (killed: it did not exit within {grace_s:g} s of SIGTERM)"
    _CHILDREN.pop(deployment.id, None)
    stopped = store.update_deployment(deployment.id, expect=store.RUNNING, status="stopped", reason=how,
                                      stopped_at=utcnow())
    return stopped or store.get_deployment(deployment.id)


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)  # started in its own session: its process group is its pid, with anything it started
    except ProcessLookupError:
        pass
    except PermissionError:
        os.kill(pid, sig)


def _wait_gone(deployment: Deployment, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while _exit_of(deployment)[0]:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def logs(ref: int | str, tail_chars: int = DEFAULT_TAIL_CHARS) -> LogTail:
    """The end of the server's log (what it printed), at most `tail_chars` characters."""
    if isinstance(tail_chars, bool) or not isinstance(tail_chars, int) or tail_chars < 1:
        raise InvalidInput(f"the tail is a whole number of characters of at least 1, not {tail_chars!r}",
                           inputs=["tail"])
    deployment = store.get_deployment(ref)
    return _read_tail(deployment.log_path, tail_chars)


def _read_tail(path: str, chars: int) -> LogTail:
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            start = max(0, size - chars * 4)  # a character is at most 4 bytes of UTF-8
            f.seek(start)
            text = f.read().decode("utf-8", errors="replace")
    except (FileNotFoundError, IsADirectoryError):
        return LogTail("", False)
    if start > 0:
        text = text[1:] if text.startswith("\ufffd") else text  # a character cut in half at the start
    omitted = start > 0 or len(text) > chars
    return LogTail(text[-chars:], omitted)
