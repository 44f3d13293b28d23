from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# Child processes (workers, job processes, the served app) import the test kinds from this repository.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")]))
os.environ["WORKBENCH_PLUGINS"] = "tests.support.kinds"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("WORKBENCH_MLFLOW", "off")  # MLflow tracking is tested in test_mlflow.py, which turns it on


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh data directory and database for one test."""
    from storage import db

    path = tmp_path / "home"
    monkeypatch.setenv("WORKBENCH_HOME", str(path))
    monkeypatch.delenv("WORKBENCH_DB_URL", raising=False)
    db.dispose_all()
    db.upgrade()  # as `workbench serve` and `workbench worker` do at start-up; later uses only check the schema
    yield path
    db.dispose_all()


def stored_files(home: Path) -> list[Path]:
    """Everything intake left on disk (staging must be empty; artifacts only what was accepted)."""
    return [p for sub in ("staging", "artifacts") if (home / sub).exists() for p in (home / sub).rglob("*") if p.is_file()]


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def run_cli(*args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "workbench", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=REPO,
        timeout=600,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"workbench {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
    return proc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    from jobs.intake.builtin import builtin_model

    return builtin_model("minilm-l6").path()


@pytest.fixture
def page(served):
    """A headless Chromium page on the app a browser test module serves (its `served` fixture yields the URL)."""
    from tests.support.browser import open_page

    with open_page(served) as page:
        yield page
