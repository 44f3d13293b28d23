"""A real MLflow tracking server for the tests: `mlflow server` backed by a database on the session's PostgreSQL
server (tests/support/postgres.py), artifacts proxied through the server (`--serve-artifacts`) into a temporary
folder, on 127.0.0.1 and a free port with one worker; stopped (with the uvicorn it starts) at the end.

The backend URL is SQLAlchemy's `postgresql+psycopg://` (psycopg 3, which the workbench already installs for its
own PostgreSQL store): MLflow takes any SQLAlchemy URL whose dialect is postgresql, so psycopg2 is not needed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

START_TIMEOUT_S = 120  # the first start creates MLflow's tables (its Alembic migrations) in the empty database


@dataclass
class MlflowServer:
    proc: subprocess.Popen
    url: str  # the tracking URI: http://127.0.0.1:PORT
    backend_url: str  # the PostgreSQL database MLflow keeps its runs and registry in
    artifacts: Path  # where the server writes the artifacts it is sent
    log: Path
    started: float  # time.monotonic() at launch

    def wait_healthy(self) -> MlflowServer:
        """Return once /health answers (it takes seconds: a caller has other work to do meanwhile)."""
        while not _healthy(self.url):
            if self.proc.poll() is not None or time.monotonic() > self.started + START_TIMEOUT_S:
                self.stop()
                state = (f"exited {self.proc.returncode}" if self.proc.returncode is not None
                         else f"not healthy in {START_TIMEOUT_S}s")
                raise RuntimeError(f"mlflow server {state}:\n{self.log_tail()}")
            time.sleep(0.5)
        return self

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def stop(self) -> None:
        # its own session: `mlflow server` and the uvicorn process it starts go together
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def start(backend_url: str, root: Path, port: int) -> MlflowServer:
    """Launch `mlflow server` on 127.0.0.1:`port` with `backend_url` as its store; `wait_healthy()` before use."""
    artifacts = root / "mlartifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    log = root / "mlflow-server.log"
    # no server-side job runner: it starts seven huey consumer processes for MLflow's GenAI jobs (scorers, prompt
    # optimization), which the workbench does not use and a small test machine would only pay for
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    # mlflow starts `uvicorn` by name: the one of this environment
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    for name in ("MLFLOW_TRACKING_URI", "WORKBENCH_HOME", "WORKBENCH_DB_URL"):
        env.pop(name, None)
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_url,
             "--serve-artifacts", "--artifacts-destination", artifacts.as_uri(),
             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root, start_new_session=True,
        )
    return MlflowServer(proc, f"http://127.0.0.1:{port}", backend_url, artifacts, log, time.monotonic())
