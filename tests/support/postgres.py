"""A throwaway PostgreSQL server for the tests: Debian's installed server binaries, one cluster per test session in
a temporary folder, listening on 127.0.0.1 only, and a fresh database for each test that asks for one.

The tests that run against PostgreSQL (`WORKBENCH_TEST_DB=postgresql`, see tests/conftest.py) use it through the
`db_url` fixture; `make postgres` installs the server package where it is missing.

PostgreSQL refuses to run as root, so when the tests run as root the server runs as the `postgres` account
(which Debian's package creates) and owns the cluster's folder; as anyone else it runs as that user.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

BIN_GLOB = "/usr/lib/postgresql/*/bin"
SERVER_ACCOUNT = "postgres"
START_TIMEOUT_S = 60


def server_bin_dir() -> Path | None:
    """The newest installed PostgreSQL server's bin folder (Debian keeps one per major version), or None."""
    override = os.environ.get("WORKBENCH_TEST_PG_BIN")
    candidates = [override] if override else glob.glob(BIN_GLOB)
    found = [Path(d) for d in candidates if (Path(d) / "postgres").is_file() and (Path(d) / "initdb").is_file()]

    def major(path: Path) -> int:
        digits = re.findall(r"\d+", path.parent.name)
        return int(digits[0]) if digits else 0

    return max(found, key=major, default=None)


def missing_reason() -> str | None:
    """Why a PostgreSQL server cannot be started here, or None when it can."""
    if server_bin_dir() is None:
        return f"no PostgreSQL server installed ({BIN_GLOB}/postgres); `make postgres` installs it"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SERVER_ACCOUNT)
        except KeyError:
            return f"running as root and there is no {SERVER_ACCOUNT!r} account to run the server as"
    return None


class PostgresServer:
    """One cluster: `start()`, `create_database()` for each test, `stop()` removes everything it made."""

    def __init__(self, port: int):
        self.port = port
        self.bin = server_bin_dir()
        if self.bin is None:
            raise RuntimeError(missing_reason())
        # not pytest's tmp_path: that folder is root's and private, and the server may run as another account
        self.root = Path(tempfile.mkdtemp(prefix="workbench-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root / "sockets"
        self.log = self.root / "server.log"
        self._as_root = os.geteuid() == 0
        self._names = itertools.count(1)
        self.superuser = SERVER_ACCOUNT if self._as_root else pwd.getpwuid(os.geteuid()).pw_name

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [str(self.bin / args[0]), *args[1:]],
            user=SERVER_ACCOUNT if self._as_root else None,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C", "TZ": "UTC"},
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT_S,
        )
        if proc.returncode != 0:
            log = self.log.read_text()[-3000:] if self.log.exists() else ""
            raise RuntimeError(f"{args[0]} exited {proc.returncode}: {proc.stderr.strip()}\n{log}")
        return proc

    def start(self) -> PostgresServer:
        self.socket_dir.mkdir()
        if self._as_root:
            account = pwd.getpwnam(SERVER_ACCOUNT)
            for path in (self.root, self.socket_dir):
                os.chown(path, account.pw_uid, account.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", self.superuser, "--auth=trust", "--encoding=UTF8",
                  "--locale=C", "--no-sync")
        # Durability settings are off: a test cluster is thrown away, and fsync per commit would only slow it.
        options = " ".join([
            "-c listen_addresses=127.0.0.1", f"-c port={self.port}", f"-c unix_socket_directories={self.socket_dir}",
            "-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off", "-c max_connections=300",
            "-c timezone=UTC",
        ])
        self._run("pg_ctl", "start", "-w", "-t", str(START_TIMEOUT_S), "-D", str(self.data), "-l", str(self.log),
                  "-o", options)
        return self

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{self.superuser}@127.0.0.1:{self.port}/{database}"

    def _admin(self, statement: str) -> None:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user=self.superuser, dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(statement)

    def create_database(self) -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        name = f"workbench_test_{next(self._names)}"
        # FILE_COPY: template1 is tiny and fsync is off, so a plain copy is quicker than WAL-logging it
        self._admin(f'CREATE DATABASE "{name}" STRATEGY FILE_COPY')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        """Drop a database made by `create_database`, closing what is still connected (a process a test left)."""
        from sqlalchemy.engine import make_url

        self._admin(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "immediate", "-w")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
