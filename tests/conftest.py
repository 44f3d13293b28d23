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


# Which database the `home` fixture gives a test: SQLite in the data directory (the default), or a fresh database on
# a throwaway PostgreSQL server (`--db postgresql`, or WORKBENCH_TEST_DB=postgresql; `make test` runs the store's,
# queue's, worker's, intake's and playground's tests a second time that way).
DB_BACKENDS = ("sqlite", "postgresql")
TEST_DB_ENV = "WORKBENCH_TEST_DB"


def pytest_addoption(parser):
    parser.addoption("--db", choices=DB_BACKENDS, default=os.environ.get(TEST_DB_ENV) or "sqlite",
                     help=f"database the tests' data directories use (default: ${TEST_DB_ENV} or sqlite)")


def pytest_configure(config):
    for backend in DB_BACKENDS:
        config.addinivalue_line("markers", f"{backend}: about {backend} itself; runs only when the tests use it (--db)")


def pytest_report_header(config):
    return f"database: {config.getoption('--db')}"


def pytest_collection_modifyitems(config, items):
    """On another database than SQLite, only the tests that use a data directory's database (`db_url`, which `home`
    uses) run, less those about SQLite itself: the others would repeat the SQLite run exactly."""
    if config.getoption("--db") == "sqlite":
        return
    kept = [item for item in items
            if "db_url" in getattr(item, "fixturenames", ()) and item.get_closest_marker("sqlite") is None]
    if len(kept) < len(items):
        config.hook.pytest_deselected(items=[item for item in items if item not in kept])
        items[:] = kept


def pytest_runtest_setup(item):
    chosen = item.config.getoption("--db")
    for backend in DB_BACKENDS:
        if backend != chosen and item.get_closest_marker(backend) is not None:
            pytest.skip(f"about {backend}; this run uses {chosen} (--db)")


@pytest.fixture(scope="session")
def postgres_server():
    """One PostgreSQL server for the whole session (see tests/support/postgres.py), stopped at the end."""
    from tests.support.postgres import PostgresServer, missing_reason

    reason = missing_reason()
    if reason is not None:
        if os.environ.get("CI"):  # CI installs the server (`make postgres`): a skip there would hide a broken set-up
            pytest.fail(reason)
        pytest.skip(f"unavailable because {reason}")
    server = PostgresServer(free_port()).start()
    yield server
    server.stop()


@pytest.fixture
def db_url(request):
    """The database URL a test's data directory uses: None for SQLite in the data directory, else a fresh empty
    PostgreSQL database that is dropped after the test."""
    if request.config.getoption("--db") != "postgresql":
        yield None
        return
    server = request.getfixturevalue("postgres_server")
    url = server.create_database()
    yield url
    server.drop_database(url)


def use_database(monkeypatch, url: str | None) -> None:
    """Point this process (and the processes it starts) at `url`, or at SQLite in the data directory for None."""
    if url is None:
        monkeypatch.delenv("WORKBENCH_DB_URL", raising=False)
    else:
        monkeypatch.setenv("WORKBENCH_DB_URL", url)


@pytest.fixture
def home(tmp_path, monkeypatch, db_url):
    """A fresh data directory and database (SQLite in it, or PostgreSQL: see `db_url`) for one test."""
    from storage import db

    path = tmp_path / "home"
    monkeypatch.setenv("WORKBENCH_HOME", str(path))
    use_database(monkeypatch, db_url)
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
