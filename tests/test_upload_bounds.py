"""Uploads are bounded by what they expand to, measured: bombs (tiny files, big expansions, generated here) are
refused with one line, exit status 2 and nothing stored, while the process's peak memory stays near what the CLI
or the server takes anyway; the same through the served app's upload handlers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.conftest import REPO, stored_files
from tests.support import bombs

MIB = 1 << 20
# What `workbench datasets add` / `models add` peaks at here on a small good input is ~150 MiB; a bomb may add a
# little, never its expansion (1 GiB and more).
PEAK_LIMIT = 400 * MIB


# The CLI runs as the child of a small Python launcher that reports the CLI's own peak RSS: measured from pytest
# directly, Linux would count pytest's size at the fork (ru_maxrss survives exec) into the child's figure.
LAUNCHER = """
import os, subprocess, sys
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
err = proc.stderr.read()
_, status, usage = os.wait4(proc.pid, 0)
sys.stderr.buffer.write(err)
print(usage.ru_maxrss * 1024)  # KiB on Linux
sys.exit(os.waitstatus_to_exitcode(status))
"""


def cli_with_peak_rss(home: Path, *args: str) -> tuple[int, str, int]:
    """Run the CLI in its own process; return (exit status, stderr, peak RSS in bytes of that process)."""
    proc = subprocess.run([sys.executable, "-c", LAUNCHER, sys.executable, "-m", "workbench", *args], cwd=REPO,
                          capture_output=True, text=True, env={**os.environ, "WORKBENCH_HOME": str(home)}, timeout=600)
    return proc.returncode, proc.stderr, int(proc.stdout.strip())


def assert_refused(home: Path, status: int, stderr: str, peak: int, *expected: str) -> None:
    lines = stderr.strip().splitlines()
    assert status == 2 and len(lines) == 1, stderr
    assert all(e in lines[0] for e in expected), lines[0]
    assert peak < PEAK_LIMIT, f"peak RSS {peak / MIB:.0f} MiB"
    assert stored_files(home) == []  # staging empty, no artifact


@pytest.mark.parametrize(
    "make, command, expected",
    [
        # 1.0 MiB zip of zeros declaring 1 GiB: refused from the ratio before a byte is written
        (lambda d: bombs.zip_of_zeros(d / "zeros.zip"), "models", ["expands more than 200 times",
                                                                   "WORKBENCH_MAX_COMPRESSION_RATIO"]),
        # a gzip'd tar inflating ~1000:1: refused while it is read, after a few MiB
        (lambda d: bombs.tar_gz_of_zeros(d / "zeros.tar.gz", 256 * MIB), "models", ["expands more than 200 times"]),
        # ~500 bytes of Parquet expanding to 1.25 GB: refused from its dictionary and indices, never expanded
        (lambda d: bombs.parquet_bomb(d / "bomb.parquet"), "datasets", ["bomb.parquet decodes to more than 200 MiB",
                                                                        "WORKBENCH_MAX_DATASET_MB"]),
        (lambda d: bombs.parquet_bomb(d / "wide.parquet", rows=25_000, value_chars=50_000), "datasets",
         ["decodes to more than 200 MiB"]),
    ],
)
def test_bombs_are_refused_in_the_cli_with_memory_bounded(tmp_path, make, command, expected):
    path = make(tmp_path)
    assert path.stat().st_size < 2 * MIB
    home = tmp_path / "home"
    status, stderr, peak = cli_with_peak_rss(home, command, "add", str(path))
    assert_refused(home, status, stderr, peak, *expected)
    print(f"{path.name}: {path.stat().st_size:,} bytes, peak RSS {peak / MIB:.0f} MiB")


def test_a_50_mb_text_field_is_refused_at_intake_with_its_row(tmp_path):
    path = tmp_path / "long.csv"
    rows = [f"short text {i},{'pos' if i % 2 else 'neg'}" for i in range(40)]
    rows[6] = '"' + "x" * (50 * MIB) + '",pos'
    path.write_text("text,label\n" + "\n".join(rows) + "\n")
    home = tmp_path / "home"
    status, stderr, peak = cli_with_peak_rss(home, "datasets", "add", str(path))
    # the cell is parsed once (a 50 MB file is within WORKBENCH_MAX_DATASET_MB), then refused before any split
    assert status == 2 and len(stderr.strip().splitlines()) == 1, stderr
    assert "long.csv: data row 7, column 'text', holds 52,428,800 characters" in stderr
    assert "WORKBENCH_MAX_TEXT_FIELD_CHARS" in stderr and stored_files(home) == []
    assert peak < 600 * MIB, f"peak RSS {peak / MIB:.0f} MiB"
    print(f"50 MB text field: peak RSS {peak / MIB:.0f} MiB")


def test_a_binary_parquet_text_column_is_exit_2_with_one_line(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "binary.parquet"
    pq.write_table(pa.table({"text": pa.array([b"\xff\xfe %d" % i for i in range(40)], pa.binary()),
                             "label": ["a", "b"] * 20}), path)
    home = tmp_path / "home"
    status, stderr, peak = cli_with_peak_rss(home, "datasets", "add", str(path))
    assert_refused(home, status, stderr, peak, "text column 'text' holds bytes that are not UTF-8 text")


# ---- the served app -------------------------------------------------------------------------------------------


def _vm(pid: int, field: str) -> int:
    """VmRSS (now) or VmHWM (peak) of a process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for {pid}")


class Page:
    """One browser-like session over HTTP: uploads, and events called by name on the queue."""

    def __init__(self, url: str):
        import httpx

        self.http = httpx.Client(base_url=url, timeout=120)
        self.session_hash = uuid.uuid4().hex[:12]
        self.deps = {d.get("api_name"): d["id"] for d in self.http.get("/config").json()["dependencies"]}

    def upload(self, path: Path) -> dict:
        with open(path, "rb") as f:
            response = self.http.post("/gradio_api/upload", files={"files": (path.name, f)})
        response.raise_for_status()
        return {"path": response.json()[0], "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}

    def call(self, name: str, data: list) -> list:
        from tests.support.queue_client import queue_call

        message = queue_call(self.http, self.session_hash, self.deps[name], data)
        assert message["success"], message
        return message["output"]["data"]


def _server_pid(url: str) -> int:
    import psutil

    port = url.rstrip("/").rsplit(":", 1)[1]
    return next(p.pid for p in psutil.Process().children()
                if "serve" in p.cmdline() and port in p.cmdline())


def _text(value) -> str:
    return json.dumps(value)


def test_bombs_uploaded_to_the_served_app_are_refused_and_memory_stays(tmp_path):
    from tests.support.browser import serve_app

    home = tmp_path / "home"
    home.mkdir()
    parquet, archive = bombs.parquet_bomb(tmp_path / "bomb.parquet"), bombs.zip_of_zeros(tmp_path / "zeros.zip")
    with serve_app(home) as url:
        page, pid = Page(url), _server_pid(url)
        page.call("upload_columns", [None])  # warm up the handler path once
        rss_before, peak_before = _vm(pid, "VmRSS"), _vm(pid, "VmHWM")

        upload = page.upload(parquet)
        columns = page.call("upload_columns", [upload])  # the column peek reads the footer only
        assert columns[0]["choices"] == [["text", "text"], ["label", "label"]], columns
        added = page.call("add_uploaded_dataset", [upload, "", "text", "label", 42])
        assert "bomb.parquet decodes to more than 200 MiB (WORKBENCH_MAX_DATASET_MB)" in _text(added[0]), added[0]

        model = page.call("add_uploaded_model", [page.upload(archive), "", False])
        assert "expands more than 200 times its compressed size" in _text(model[0]), model[0]
        assert str(home) not in _text(added[0]) + _text(model[0])  # no server paths

        rss_after, peak_after = _vm(pid, "VmRSS"), _vm(pid, "VmHWM")
        print(f"served app: RSS {rss_before / MIB:.0f} -> {rss_after / MIB:.0f} MiB, "
              f"peak {peak_before / MIB:.0f} -> {peak_after / MIB:.0f} MiB")
        assert peak_after - peak_before < 100 * MIB and rss_after - rss_before < 100 * MIB
    assert stored_files(home) == []


def test_uploads_live_in_the_servers_own_folder_and_go_with_it(tmp_path):
    """An upload reaches Gradio's temporary folder, which is the server's own under the data directory: removed
    when the server stops, and a folder left by a killed server is removed by the next one."""
    import httpx

    from tests.support.browser import serve_app

    home = tmp_path / "home"
    stale = home / "uploads" / "server-999999999"  # no such process: a server that was killed
    stale.mkdir(parents=True)
    (stale / "left.csv").write_text("text,label\n")
    with serve_app(home) as url:
        assert not stale.exists()
        folders = list((home / "uploads").glob("server-*"))
        assert len(folders) == 1
        answer = httpx.post(url + "gradio_api/upload", files={"files": ("mine.csv", b"text,label\nhi,positive\n")})
        assert answer.status_code == 200, answer.text
        stored = [Path(p) for p in answer.json()]
        assert stored and all(p.is_file() and folders[0] in p.parents for p in stored)
    assert not folders[0].exists() and not any(p.exists() for p in stored)
