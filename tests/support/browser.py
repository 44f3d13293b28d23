"""The served app (with its worker) and a headless Debian Chromium page, for the browser tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from tests.conftest import REPO, free_port, wait_for

CHROMIUM = os.environ.get("WORKBENCH_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
]


def require_chromium() -> None:
    if not shutil.which(CHROMIUM):
        pytest.skip(f"unavailable because {CHROMIUM} is not installed (`apt-get install chromium`)")


def start_serve(home: Path, env: dict[str, str] | None = None, timeout: float = 120) -> tuple[subprocess.Popen, str]:
    """`workbench serve` (app + worker) on a free port with `home` as its data directory and `env` added to the
    environment, once it answers; returns the process and the URL (the process is killed if it never does)."""
    port = free_port()
    env = {**os.environ, "WORKBENCH_HOME": str(home), "WORKBENCH_HEARTBEAT_S": "0.5", **(env or {})}
    with open(home / "serve.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "workbench", "serve", "--port", str(port)], cwd=REPO, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_serving(proc, url, home / "serve.log", "the app to serve", timeout)
    except BaseException:
        proc.kill()
        proc.wait(30)
        raise
    return proc, url


def wait_until_serving(proc: subprocess.Popen, url: str, log: Path, what: str, timeout: float = 120) -> None:
    """Wait until `url` answers 200; fails at once with the process's log if it exits first."""

    def up():
        assert proc.poll() is None, log.read_text()
        try:
            return urllib.request.urlopen(url, timeout=2).status == 200
        except OSError:
            return False

    wait_for(up, timeout=timeout, what=what)


@contextmanager
def serve_app(home: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    """`start_serve` for the length of a `with` block; yields the URL and stops the server after it."""
    proc, url = start_serve(home, env)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


@contextmanager
def open_page(url: str):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        yield page
        browser.close()


def choose(page, elem_id: str, option: str) -> None:
    """Pick the first option of a Gradio dropdown whose text contains `option`."""
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option", name=option).first.click()


def upload_file(page, elem_id: str, path: Path, attempts: int = 2) -> None:
    """Put `path` into the Gradio file component `elem_id` and wait until it shows the file's name.

    Why a second attempt: under load Gradio's file component can stay on "Uploading…" for good when its progress
    stream (`/upload_progress`, which gives up after 3 s) asks before the upload itself has registered, a race in
    Gradio (gradio-app/gradio#9514) that a user meets as a spinner and answers by dropping the file again."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for attempt in range(1, attempts + 1):
        page.locator(f"#{elem_id} input[type=file]").set_input_files(str(path))
        try:
            page.locator(f"#{elem_id}").get_by_text(path.name).wait_for(timeout=30_000)
            return
        except PlaywrightTimeout:
            if attempt == attempts:
                raise
            clear = page.locator(f"#{elem_id} button[aria-label='Clear']")
            if clear.count():
                clear.first.click()


@contextmanager
def module_home(home: Path) -> Iterator[Path]:
    """`home` as this process's data directory (on the embedded SQLite, migrated) for a module-scoped fixture, which
    cannot use monkeypatch; the environment and the cached engine are restored after the block."""
    from storage import db

    saved = {key: os.environ.get(key) for key in ("WORKBENCH_HOME", "WORKBENCH_DB_URL")}
    os.environ["WORKBENCH_HOME"] = str(home)
    os.environ.pop("WORKBENCH_DB_URL", None)
    db.dispose_all()
    db.engine()
    try:
        yield home
    finally:
        db.dispose_all()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
