"""Engine and session helpers. SQLite gets WAL, a busy timeout and foreign keys; any SQLAlchemy URL works."""

from __future__ import annotations

import fcntl
import threading
from contextlib import contextmanager
from typing import Iterator

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from storage import settings

_engines: dict[str, Engine] = {}
_migrated: set[str] = set()
_lock = threading.Lock()

SQLITE_BUSY_TIMEOUT_MS = 30_000


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def engine(url: str | None = None) -> Engine:
    """One engine per URL per process, created on first use and migrated to the newest schema."""
    url = url or settings.db_url()
    with _lock:
        eng = _engines.get(url)
        if eng is None:
            is_sqlite = url.startswith("sqlite")
            kwargs = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}} if is_sqlite else {}
            eng = create_engine(url, **kwargs)
            if is_sqlite:
                event.listen(eng, "connect", _sqlite_pragmas)
            _engines[url] = eng
        if url not in _migrated:
            migrate(eng)
            _migrated.add(url)
    return eng


def migrate(eng: Engine) -> None:
    """Apply Alembic migrations up to head. A file lock keeps two processes from migrating one SQLite file."""
    from alembic import command

    from storage.migrations import alembic_config

    lock_path = settings.home() / ".migrate.lock"
    with open(lock_path, "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            with eng.begin() as conn:
                cfg = alembic_config(str(eng.url))
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """The one managed session: commits when the block ends, rolls back on any exception."""
    factory = sessionmaker(bind=engine(url), expire_on_commit=False)
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def dispose_all() -> None:
    """Drop pooled connections (after fork, or between tests that switch data directories)."""
    with _lock:
        for eng in _engines.values():
            eng.dispose()
        _engines.clear()
        _migrated.clear()
