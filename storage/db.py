"""Engine and session helpers. SQLite gets WAL, a busy timeout and foreign keys; any SQLAlchemy URL works.

The schema is migrated once, by the entry points (`workbench serve`, `workbench worker`, `workbench db upgrade`)
calling `upgrade()`. Every other use of a database only checks, once per process, that it is at the newest
revision, and refuses to work on an older (or newer) schema with a message naming the command that fixes it:
migrating under a running server or worker whose code expects the old schema is what this avoids. A brand new,
empty database is the exception: whichever process opens it first creates the schema, since nothing in it can be
lost and nothing can be using it yet (so `workbench models add` works on a fresh data directory).
"""

from __future__ import annotations

import fcntl
import functools
import threading
from contextlib import contextmanager
from typing import Iterator

from sqlalchemy import create_engine, event, inspect
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker

from storage import settings
from storage.errors import WorkbenchError
from storage.portable import check_string_lengths, server_json

_engines: dict[str, Engine] = {}
_session_factories: dict[str, sessionmaker[Session]] = {}
_verified: set[str] = set()
_lock = threading.RLock()  # re-entrant: upgrade() creates the engine while holding it

SQLITE_BUSY_TIMEOUT_MS = 30_000
ALEMBIC_VERSION_TABLE = "alembic_version"
# The key of the PostgreSQL advisory lock that migrations hold: any fixed 64-bit number no other tool uses.
PG_MIGRATION_LOCK_KEY = 0x776F726B62656E63  # "workbenc"


class SchemaOutOfDate(WorkbenchError):
    """The database's schema is not the one this workbench's code was written for."""


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def _create_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        # SQLite keeps one file per process; SQLAlchemy's default pool for it needs no sizing.
        eng = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        event.listen(eng, "connect", _sqlite_pragmas)
        return eng
    return create_engine(
        url,
        pool_size=settings.get("WORKBENCH_DB_POOL_SIZE"),
        max_overflow=settings.get("WORKBENCH_DB_MAX_OVERFLOW"),
        pool_recycle=settings.get("WORKBENCH_DB_POOL_RECYCLE_S"),
        pool_pre_ping=True,  # a database server restarted under a long-running worker costs one retry, not a failed job
        json_serializer=server_json,  # NaN and Infinity are not JSON to a server's json type (storage/portable.py)
    )


def _cached_engine(url: str) -> Engine:
    with _lock:
        eng = _engines.get(url)
        if eng is None:
            eng = _engines[url] = _create_engine(url)
        return eng


@functools.cache
def _migration_scripts():
    from alembic.script import ScriptDirectory  # imported when needed: Alembic takes half a second to import

    from storage.migrations import alembic_config

    return ScriptDirectory.from_config(alembic_config("sqlite://"))


def head_revision() -> str:
    """The newest migration shipped with this code: the schema the ORM describes."""
    head = _migration_scripts().get_current_head()
    assert head is not None
    return head


def _is_known_revision(revision: str) -> bool:
    from alembic.util import CommandError

    try:
        return _migration_scripts().get_revision(revision) is not None
    except CommandError:
        return False


def current_revision(conn: Connection) -> str | None:
    from alembic.migration import MigrationContext

    return MigrationContext.configure(conn).get_current_revision()


def display_url(url: str) -> str:
    """The URL without its password, for messages."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _verify(eng: Engine, url: str) -> None:
    """Raise SchemaOutOfDate unless the database is at the head revision; create the schema in an empty one."""
    with eng.connect() as conn:
        current = current_revision(conn)
        empty = current is None and not inspect(conn).get_table_names()
    head = head_revision()
    if current == head:
        return
    if empty:
        # A brand new database (the first command on a fresh data directory): creating the schema loses nothing
        # and races nothing, since no process can be using tables that do not exist yet.
        _migrate(eng)
        return
    if current is None:
        raise SchemaOutOfDate(
            f"the database at {display_url(url)} has tables but no workbench schema revision; "
            "point WORKBENCH_DB_URL at a workbench database or an empty one"
        )
    raise _out_of_date(url, current)


def _out_of_date(url: str, current: str) -> SchemaOutOfDate:
    if _is_known_revision(current):
        fix = "run `workbench db upgrade`"
    else:  # upgrading cannot help: this code has no migration from there
        fix = "it was migrated by a newer workbench; run that version (or a newer one)"
    return SchemaOutOfDate(f"the database at {display_url(url)} is at revision {current}, this workbench needs {head_revision()}: {fix}")


def engine(url: str | None = None) -> Engine:
    """One engine per URL per process; the first use checks that the schema is the newest one (see module doc)."""
    url = url or settings.db_url()
    with _lock:
        eng = _cached_engine(url)
        if url not in _verified:
            _verify(eng, url)
            _verified.add(url)
    return eng


def upgrade(url: str | None = None) -> tuple[str | None, str]:
    """Migrate the database to the newest schema (the entry points call this at start-up).

    Returns the revision it was at before (None for a new database) and the one it is at now.
    """
    url = url or settings.db_url()
    with _lock:
        eng = _cached_engine(url)
        with eng.connect() as conn:
            before = current_revision(conn)
        if before is not None and not _is_known_revision(before):
            raise _out_of_date(url, before)
        _migrate(eng)
        _verified.add(url)
    return before, head_revision()


def _migrate(eng: Engine) -> None:
    """Apply Alembic migrations up to head. A file lock keeps two processes from migrating one SQLite file; on
    PostgreSQL an advisory lock held by the migrating transaction also serialises processes on other machines (the
    file lock is per data directory), and the one that waited then finds the schema at head and does nothing."""
    from alembic import command

    from storage.migrations import alembic_config

    is_sqlite = eng.dialect.name == "sqlite"
    lock_path = settings.home() / ".migrate.lock"
    with open(lock_path, "w") as lock_file, eng.connect() as conn:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            if is_sqlite:
                # Batch mode rebuilds a table and drops the old one; with foreign keys on, SQLite first deletes its
                # rows, cascading to (or nulling) every row that points at them. The pragma only takes effect
                # outside a transaction, hence here and not in a migration.
                conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
                conn.commit()
            with conn.begin():
                if eng.dialect.name == "postgresql":
                    conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({PG_MIGRATION_LOCK_KEY})")
                cfg = alembic_config(eng.url.render_as_string(hide_password=False))
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
                if is_sqlite and (broken := conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()):
                    raise RuntimeError(f"migrating left rows pointing at nothing (table, rowid, parent, key): {broken[:5]}")
        finally:
            if is_sqlite:
                conn.rollback()
                conn.exec_driver_sql("PRAGMA foreign_keys=ON")
                conn.commit()
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _session_factory(url: str | None) -> sessionmaker[Session]:
    url = url or settings.db_url()
    factory = _session_factories.get(url)
    if factory is None:
        with _lock:
            factory = _session_factories.get(url)
            if factory is None:
                factory = sessionmaker(bind=engine(url), expire_on_commit=False)
                # an over-long string is refused alike on SQLite and on a server (storage/portable.py)
                event.listen(factory, "before_flush", check_string_lengths)
                _session_factories[url] = factory
    return factory


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """The one managed session: commits when the block ends, rolls back on any exception."""
    session = _session_factory(url)()
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
        _session_factories.clear()
        _verified.clear()
