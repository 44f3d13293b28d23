"""`workbench serve`: migrate the database, start a worker process beside the UI, serve the app.

With accounts (WORKBENCH_AUTH editors, WORKBENCH_VIEWERS read-only viewers) every page and API call needs a
login; `--share` (a public Gradio link) is refused without them.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

from storage import db, settings
from storage.errors import WorkbenchError


def check_port_free(host: str, port: int) -> None:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise WorkbenchError(f"cannot listen on {host}:{port} ({exc.strerror}); is the workbench already running? try --port") from None



def upload_folder() -> Path:
    """Gradio's temporary folder for this server: one per server process inside the data directory, removed when
    the server stops; a folder left by a server that was killed is removed by the next one. Uploads (a viewer's
    too, which no handler stores) then never outlive the server in the machine's shared temporary directory."""
    import psutil

    root = settings.home() / "uploads"
    root.mkdir(parents=True, exist_ok=True)
    for folder in root.glob("server-*"):
        pid = folder.name.removeprefix("server-")
        if not pid.isdigit() or not psutil.pid_exists(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
    mine = root / f"server-{os.getpid()}"
    mine.mkdir(exist_ok=True)
    atexit.register(shutil.rmtree, mine, True)
    return mine


def start_worker(concurrency: int = 1) -> subprocess.Popen:
    from jobs.runner.lifeline import death_signal_hook
    from jobs.runner.worker import PARENT_PID_ENV

    # The worker also watches its parent pid (a server that died before prctl took effect, or no prctl at all).
    env = {**os.environ, PARENT_PID_ENV: str(os.getpid())}
    return subprocess.Popen([sys.executable, "-m", "workbench", "worker", "--concurrency", str(concurrency)],
                            env=env, preexec_fn=death_signal_hook())  # SIGTERM: it stops its jobs first


def stop_worker(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


SHARE_NEEDS_AUTH = ("--share makes the workbench reachable by anyone with the link: set WORKBENCH_AUTH (editors) "
                    "and/or WORKBENCH_VIEWERS (read-only) to comma-separated user:password pairs first")
AUTH_MESSAGE = ("Transformer Deployment Workbench: sign in. Editors change things; viewers compare and try the "
                "playground. After {failures} wrong passwords an account, and the address they came from, are locked "
                "for {lockout:g} s (longer each time); a locked sign-in does nothing until then.")


def auth_message() -> str:
    return AUTH_MESSAGE.format(failures=settings.get("WORKBENCH_LOGIN_MAX_FAILURES"),
                               lockout=settings.get("WORKBENCH_LOGIN_LOCKOUT_S"))


def login_check(share: bool = False):
    """`launch(auth=...)`: the account check when accounts are configured, else None (local, no login).

    Refuses `--share` without accounts, and malformed accounts, before anything starts.
    """
    from workbench import roles

    configured = roles.auth_configured()  # raises InvalidInput on a malformed user:password list
    if share and not configured:
        raise WorkbenchError(SHARE_NEEDS_AUTH)
    return roles.check_login if configured else None


def share_failed_message(host: str, port: int) -> str:
    return (f"no share link: Gradio's share server could not be reached (it needs internet access; a firewall or "
            f"an offline machine stops it). The workbench still serves locally on http://{host}:{port} with "
            "login required, but people outside this machine cannot reach it.")


def serve(host: str = "127.0.0.1", port: int = 7860, with_worker: bool = True, concurrency: int = 1,
          share: bool = False) -> None:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    auth = login_check(share)
    message = auth_message() if auth else None  # a malformed throttle setting is refused before anything starts
    check_port_free(host, port)
    if concurrency < 1:
        raise WorkbenchError(f"--concurrency must be at least 1, not {concurrency}")
    db.upgrade()  # migrate once, here, before the worker starts; the app and job processes only check the schema
    os.environ["GRADIO_TEMP_DIR"] = str(upload_folder())  # read by Gradio when the app is built, below
    worker = start_worker(concurrency) if with_worker else None
    if worker is not None:
        atexit.register(stop_worker, worker)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # SIGTERM runs the atexit clean-ups

    from workbench import guards
    from workbench.app import CSS, build_app

    app = build_app()
    login = "; login required" if auth else ""
    print(f"Workbench data in {settings.home()}; open http://{host}:{port}{login}", flush=True)
    app.queue(default_concurrency_limit=4).launch(
        server_name=host,
        server_port=port,
        css=CSS,
        ssr_mode=False,
        show_error=True,
        max_file_size=f"{settings.get('WORKBENCH_MAX_UPLOAD_MB')}mb",
        footer_links=["api"],
        auth=auth,
        auth_message=message,
        app_kwargs=guards.app_kwargs(),  # sign-in throttling; an unknown event index answers 404, not a traceback
        share=share,
        prevent_thread_lock=True,
    )
    if share:
        if app.share_url:
            print(f"Share link (login required): {app.share_url}", flush=True)
        else:
            print(f"error: {share_failed_message(host, port)}", file=sys.stderr, flush=True)
    app.block_thread()
