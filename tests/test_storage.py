"""Storage: migrations, SQLite settings, entities at the boundary, the artifact store."""

from __future__ import annotations

import dataclasses
import re

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

from storage import catalog, db, files, settings
from storage.entities import LogTail, Model, Variant
from storage.errors import Conflict, NotFound, WorkbenchError
from storage.migrations import alembic_config
from storage.orm import Base


def test_migrations_have_a_single_head():
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    assert len(script.get_heads()) == 1


def test_migrated_schema_matches_the_orm(home):
    """A model change without a migration fails here: autogenerate must find nothing to do."""
    with db.engine().connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_sqlite_runs_with_wal_busy_timeout_and_foreign_keys(home):
    assert (home / "workbench.db").exists()
    with db.engine().connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() == db.SQLITE_BUSY_TIMEOUT_MS
    tables = set(inspect(db.engine()).get_table_names())
    assert {"models", "datasets", "variants", "jobs", "workers", "measurements", "evaluations"} <= tables


def test_db_url_setting_points_anywhere(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WORKBENCH_DB_URL", url)
    db.dispose_all()
    try:
        assert settings.db_url() == url
        db.engine()
        assert (tmp_path / "elsewhere.db").exists()
        assert not (tmp_path / "home" / "workbench.db").exists()
    finally:
        db.dispose_all()


def _variant_fields(**over):
    base = dict(name="v", artifact_dir="/x", runtime="pytorch", precision="fp32", recipe={}, files=[], sha256="0" * 64, size_bytes=1)
    return {**base, **over}


def test_callers_get_frozen_entities_not_rows(home):
    model, variant = catalog.create_model(
        name="m", source_kind="local", source="/x", allow_pickle=False, variant=_variant_fields()
    )
    assert type(model) is Model and type(variant) is Variant
    with pytest.raises(dataclasses.FrozenInstanceError):
        model.name = "other"  # type: ignore[misc]
    assert catalog.get_model("m").id == model.id == catalog.get_model(str(model.id)).id
    assert catalog.root_variant(model.id).id == variant.id


def test_duplicate_model_names_conflict_and_write_nothing(home):
    catalog.create_model(name="m", source_kind="local", source="/x", allow_pickle=False, variant=_variant_fields())
    with pytest.raises(Conflict):
        catalog.create_model(name="m", source_kind="local", source="/y", allow_pickle=False, variant=_variant_fields())
    assert len(catalog.list_models()) == 1
    assert len(catalog.list_variants()) == 1


def test_unknown_references_name_what_is_missing_without_cli_words(home):
    """The core's message is for every surface; the CLI adds its own hint (`workbench models list`, tested there)."""
    with pytest.raises(NotFound, match="no model 'nope'") as caught:
        catalog.get_model("nope")
    assert "workbench" not in str(caught.value) and caught.value.what == "model"


def test_artifacts_are_addressed_by_content(home):
    def stage(content: bytes):
        with files.staging("t") as d:
            (d / "a.bin").write_bytes(content)
            sha = files.manifest_sha256(files.manifest(d))
            return files.commit_dir(d, "things", sha)

    first, created = stage(b"hello")
    again, created_again = stage(b"hello")
    other, _ = stage(b"world")
    assert created and not created_again and first == again and other != first
    assert first.name == files.manifest_sha256([{"path": "a.bin", "size": 5, "sha256": files.hash_file(first / "a.bin")}])
    assert list((home / "staging").iterdir()) == []


# ---- job logs -----------------------------------------------------------------------------------------------


def _job():
    from storage import queue

    return queue.enqueue("test-sleep", {})


def test_log_chunks_are_appended_and_read_in_order(home):
    from storage import queue

    job, other = _job(), _job()
    for i in range(5):
        queue.append_log(job.id, f"line {i}\n")
        queue.append_log(other.id, f"other {i}\n")
    queue.append_log(job.id, "")  # nothing to add: no chunk
    queue.append_log(999, "a job that is gone takes nothing")
    assert queue.job_log(job.id) == "".join(f"line {i}\n" for i in range(5))
    chunks = queue.log_chunks(job.id)
    assert [text for _, text in chunks] == [f"line {i}\n" for i in range(5)]
    assert [chunk_id for chunk_id, _ in chunks] == sorted(chunk_id for chunk_id, _ in chunks)
    assert queue.job_log(_job().id) == ""
    with pytest.raises(NotFound, match="no job 999"):
        queue.job_log(999)


def test_following_a_log_reads_only_what_came_after_the_last_chunk_seen(home):
    from storage import queue

    job = _job()
    queue.append_log(job.id, "a\n")
    queue.append_log(job.id, "b\n")
    seen = queue.log_chunks(job.id)
    last_id = seen[-1][0]
    assert queue.log_chunks(job.id, after_id=last_id) == []
    queue.append_log(job.id, "c\n")
    queue.append_log(job.id, "d\n")
    queue.append_log(job.id, "e\n")
    page = queue.log_chunks(job.id, after_id=last_id, limit=2)
    assert [text for _, text in page] == ["c\n", "d\n"]
    assert [text for _, text in queue.log_chunks(job.id, after_id=page[-1][0])] == ["e\n"]


def test_the_tail_of_a_log_says_whether_earlier_text_was_left_out(home):
    from storage import queue

    job = _job()
    for i in range(10):
        queue.append_log(job.id, f"line {i}\n")  # 7 characters each
    whole = queue.job_log(job.id)
    assert queue.log_tail(job.id, 1000) == LogTail(text=whole, omitted=False)
    assert queue.log_tail(job.id, len(whole)) == LogTail(text=whole, omitted=False)
    assert queue.log_tail(job.id, 14) == LogTail(text="line 8\nline 9\n", omitted=True)
    assert queue.log_tail(job.id, 10) == LogTail(text=" 8\nline 9\n", omitted=True)
    assert queue.job_log(job.id, max_chars=7) == queue.LOG_OMITTED_MARK + "line 9\n"
    assert queue.job_log(job.id, max_chars=1000) == whole
    assert queue.log_tail(_job().id, 100) == LogTail(text="", omitted=False)


def test_a_log_larger_than_2_mb_is_kept_whole(home):
    from storage import queue

    job = _job()
    block = "x" * 99_999 + "\n"
    for i in range(25):  # 2.5 MB: the old single column kept only the last 2 MB
        queue.append_log(job.id, f"block {i}\n" + block)
    log = queue.job_log(job.id)
    assert len(log) > 2_500_000 and log.startswith("block 0\n") and "block 24\n" in log
    assert queue.log_tail(job.id, 200_000).text.endswith(block)


def test_listing_jobs_reads_no_logs(home):
    from storage import queue
    from storage.entities import Job

    job = _job()
    queue.append_log(job.id, "not part of a job entity\n")
    assert "log" not in {f.name for f in dataclasses.fields(Job)}
    assert [j.id for j in queue.list_jobs()] == [job.id]


# ---- migrations: run once, verified elsewhere ------------------------------------------------------------------


@pytest.fixture
def bare_home(tmp_path, monkeypatch):
    """A data directory with no database yet (not migrated, unlike `home`), and no engine cached before or after."""
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("WORKBENCH_DB_URL", raising=False)
    db.dispose_all()
    yield tmp_path / "home"
    db.dispose_all()


def _migrate_to(revision: str) -> None:
    """A database left at an older revision, as an older workbench would have left it."""
    from alembic import command

    command.upgrade(alembic_config(settings.db_url()), revision)


def test_migration_0007_moves_an_old_log_into_chunks_and_back(tmp_path, bare_home):
    from alembic import command

    from storage import queue

    _migrate_to("0006")
    old_log = "loading\n" + "y" * 3000 + "\ndone\n"
    raw = create_engine(settings.db_url())
    with raw.begin() as conn:
        for job_id, log, depends_on in ((1, old_log, None), (2, "", 1)):
            conn.execute(
                text("INSERT INTO jobs (id, kind, params, status, device, progress, message, log, result, priority, "
                     "attempts, max_attempts, cancel_requested, created_at, depends_on_id) VALUES (:id, 'inspect', "
                     "'{}', 'succeeded', 'cpu', 1.0, 'done', :log, '{}', 0, 1, 2, 0, '2024-01-01 00:00:00', :dep)"),
                {"id": job_id, "log": log, "dep": depends_on},
            )
    assert db.upgrade() == ("0006", db.head_revision())
    assert queue.job_log(1) == old_log and queue.job_log(2) == ""
    # rebuilding the jobs table deleted nothing that points at it (SQLite cascades a dropped table's rows)
    assert queue.get_job(2).depends_on_id == 1
    assert len(queue.log_chunks(1)) == 1 and queue.log_chunks(2) == []
    queue.append_log(1, "appended after the upgrade\n")

    db.dispose_all()
    command.downgrade(alembic_config(settings.db_url()), "0006")
    with raw.connect() as conn:
        assert conn.execute(text("SELECT log FROM jobs WHERE id = 1")).scalar() == old_log + "appended after the upgrade\n"
    raw.dispose()


def test_a_stale_schema_is_refused_with_the_command_that_fixes_it(tmp_path, bare_home):
    _migrate_to("0006")
    message = f"is at revision 0006, this workbench needs {db.head_revision()}: run `workbench db upgrade`"
    with pytest.raises(db.SchemaOutOfDate, match=re.escape(message)) as refused:
        catalog.list_models()
    assert isinstance(refused.value, WorkbenchError) and str(tmp_path / "home" / "workbench.db") in str(refused.value)
    with pytest.raises(db.SchemaOutOfDate):  # refused again, not half-opened
        db.engine()
    db.upgrade()
    assert catalog.list_models() == []


def test_a_schema_newer_than_the_code_is_refused_even_by_upgrade(tmp_path, bare_home):
    db.upgrade()
    with db.engine().begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    db.dispose_all()
    for use in (db.engine, db.upgrade):
        with pytest.raises(db.SchemaOutOfDate, match="at revision 9999, .* migrated by a newer workbench"):
            use()


def test_engine_and_session_factory_are_made_once_per_database(home):
    assert db.engine() is db.engine()
    assert db._session_factory(None) is db._session_factory(settings.db_url())
    with db.session_scope() as first, db.session_scope() as second:
        assert first is not second and first.get_bind() is second.get_bind() is db.engine()


def test_pool_settings_come_from_the_environment_for_database_servers(monkeypatch):
    made: dict[str, dict] = {}
    monkeypatch.setattr(db, "create_engine", lambda url, **kwargs: made.setdefault(url, kwargs))
    monkeypatch.setattr(db.event, "listen", lambda *args: None)
    monkeypatch.setenv("WORKBENCH_DB_POOL_SIZE", "3")
    monkeypatch.setenv("WORKBENCH_DB_MAX_OVERFLOW", "7")
    monkeypatch.setenv("WORKBENCH_DB_POOL_RECYCLE_S", "600")
    db._create_engine("postgresql://wb:secret@db.example/workbench")
    db._create_engine("sqlite:///x.db")
    server = made["postgresql://wb:secret@db.example/workbench"]
    assert (server["pool_size"], server["max_overflow"], server["pool_recycle"]) == (3, 7, 600)
    assert "pool_size" not in made["sqlite:///x.db"]  # SQLite keeps its own pool; it only gets its busy timeout
    assert db.display_url("postgresql://wb:secret@db.example/workbench") == "postgresql://wb:***@db.example/workbench"
