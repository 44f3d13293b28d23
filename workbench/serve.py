"""`workbench serve`: migrate the database, start a worker process beside the UI, serve the app."""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys

from storage import db, settings
from storage.errors import WorkbenchError


def check_port_free(host: str, port: int) -> None:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise WorkbenchError(f"cannot listen on {host}:{port} ({exc.strerror}); is the workbench already running? try --port") from None


def start_worker(concurrency: int = 1) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "workbench", "worker", "--concurrency", str(concurrency)])


def stop_worker(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


def serve(host: str = "127.0.0.1", port: int = 7860, with_worker: bool = True, concurrency: int = 1) -> None:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    check_port_free(host, port)
    if concurrency < 1:
        raise WorkbenchError(f"--concurrency must be at least 1, not {concurrency}")
    db.engine()  # migrate before the worker starts, so only one process creates the schema
    worker = start_worker(concurrency) if with_worker else None
    if worker is not None:
        atexit.register(stop_worker, worker)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    from workbench.app import CSS, build_app

    app = build_app()
    print(f"Workbench data in {settings.home()}; open http://{host}:{port}", flush=True)
    app.queue(default_concurrency_limit=4).launch(
        server_name=host,
        server_port=port,
        css=CSS,
        ssr_mode=False,
        show_error=True,
        max_file_size=f"{settings.get('WORKBENCH_MAX_UPLOAD_MB')}mb",
        footer_links=["api"],
    )
