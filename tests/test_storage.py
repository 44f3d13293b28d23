"""Storage: migrations, SQLite settings, entities at the boundary, the artifact store."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import subprocess
import sys
from datetime import datetime

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, create_engine, inspect, text

from storage import catalog, db, files, settings
from storage.entities import LogTail, Model, Variant
from storage.errors import Conflict, InvalidInput, NotFound, WorkbenchError
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


@pytest.mark.sqlite
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


def test_the_jobs_that_made_a_variant_from_another_are_found_by_kind_input_and_dataset(home):
    """`made_from` (what a search reads to start from steps made outside it): succeeded jobs of one kind that took
    one variant and one dataset (or none) and made a variant, newest first; nothing failed, of another kind, input
    or dataset."""
    from storage import catalog, queue
    from storage.orm import JobStatus
    from tests.support.rows import placeholder_dataset, placeholder_model

    model, root = placeholder_model()
    data, other_data = placeholder_dataset("d"), placeholder_dataset("e")

    def ran(kind, dataset, status=JobStatus.SUCCEEDED, makes=True, source=root):
        job = queue.enqueue(kind, {"student": "half-layers"}, model_id=model.id, variant_id=source.id,
                            dataset_id=dataset.id if dataset else None)
        assert queue.claim_next("w", ["cpu"]).id == job.id
        made = catalog.create_variant(model_id=model.id, parent_id=source.id, name=f"made by {job.id}",
                                      artifact_dir="/nonexistent", runtime="pytorch", precision="fp32", recipe={},
                                      files=[], sha256=str(job.id), size_bytes=1) if makes else None
        assert queue.finish(job.id, status, produced_variant_id=made.id if made else None)
        return job.id, made

    older, student = ran("distill", data)
    newer, _ = ran("distill", data)
    ran("distill", other_data), ran("prune", data), ran("distill", data, JobStatus.FAILED, makes=False)
    ran("distill", data, makes=False), ran("distill", data, source=student)
    without_data, _ = ran("distill", None)
    assert [j.id for j in queue.made_from("distill", root.id, data.id)] == [newer, older]
    assert [j.params for j in queue.made_from("distill", root.id, data.id)] == [{"student": "half-layers"}] * 2
    assert [j.id for j in queue.made_from("distill", root.id, None)] == [without_data]
    assert queue.made_from("quantize", root.id, data.id) == []


# ---- migrations: run once, verified elsewhere ------------------------------------------------------------------


@pytest.fixture
def bare_home(tmp_path, monkeypatch, db_url):
    """A data directory with no database yet (not migrated, unlike `home`), and no engine cached before or after."""
    from tests.conftest import use_database

    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    use_database(monkeypatch, db_url)
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
                     "'{}', 'succeeded', 'cpu', 1.0, 'done', :log, '{}', 0, 1, 2, :no, '2024-01-01 00:00:00', :dep)"),
                {"id": job_id, "log": log, "dep": depends_on, "no": False},  # a bound bool: 0 to SQLite, false to PG
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


def test_migration_0006_backfills_the_validity_of_existing_evaluations(bare_home):
    """Rows written by an older workbench, through the reflected tables so each column gets its own type (a JSON
    or boolean column takes what the database's driver makes of a dict or a bool, on SQLite and on PostgreSQL)."""
    from statsmodels.stats.proportion import proportion_confint

    _migrate_to("0005")
    raw = create_engine(settings.db_url())
    tables = MetaData()
    tables.reflect(bind=raw)
    t = tables.tables
    when = datetime(2024, 1, 1)

    def insert(conn, table, **values):
        return conn.execute(t[table].insert().values(created_at=when, **values)).inserted_primary_key[0]

    with raw.begin() as conn:
        model_id = insert(conn, "models", name="m", source_kind="local", source="/x", allow_pickle=False, info={})
        dataset_id = insert(conn, "datasets", name="d", source_kind="upload", source="d.csv", text_column="text",
                            label_column="label", labels=["neg", "pos"], class_counts={}, num_rows=20, split_seed=0,
                            split_fractions={}, split_sizes={}, artifact_dir="/d", sha256="0" * 64)
        variant_id = insert(conn, "variants", model_id=model_id, name="v", artifact_dir="/v", runtime="pytorch",
                            precision="fp32", recipe={}, files=[], sha256="0" * 64, size_bytes=2**40)
        for confusion in ([[5, 0], [1, 4]], [[5, 0], [5, 0]]):
            insert(conn, "evaluations", variant_id=variant_id, dataset_id=dataset_id, split="test", num_examples=10,
                   accuracy=0.9, macro_f1=0.9, confusion={"labels": ["neg", "pos"], "matrix": confusion})
    raw.dispose()

    assert db.upgrade() == ("0005", db.head_revision())
    sound, one_class = catalog.list_evaluations(variant_id)
    low, high = proportion_confint(9, 10, alpha=0.05, method="wilson")
    assert (sound.majority_label, sound.majority_accuracy) == ("neg", 0.5)
    assert (sound.accuracy_low, sound.accuracy_high) == (pytest.approx(low), pytest.approx(high))
    assert sound.per_class_recall == {"neg": 1.0, "pos": 0.8} and sound.degenerate is False
    assert sound.tolerance_points == 1.0 and sound.flagged is False and sound.predictions == []  # server defaults
    assert one_class.degenerate is True and one_class.degenerate_reason == "predicts 'neg' for 100% of the 10 examples"
    assert catalog.get_variant(variant_id).size_bytes == 2**40  # a BIGINT, not an INTEGER
    # ids written before the upgrade leave the next one free (a sequence, on PostgreSQL, moved on with them)
    model, _ = catalog.create_model(name="n", source_kind="local", source="/y", allow_pickle=False,
                                    variant=_variant_fields())
    assert model.id == model_id + 1


def test_a_stale_schema_is_refused_with_the_command_that_fixes_it(tmp_path, bare_home):
    _migrate_to("0006")
    message = f"is at revision 0006, this workbench needs {db.head_revision()}: run `workbench db upgrade`"
    with pytest.raises(db.SchemaOutOfDate, match=re.escape(message)) as refused:
        catalog.list_models()
    assert isinstance(refused.value, WorkbenchError) and db.display_url(settings.db_url()) in str(refused.value)
    if settings.get("WORKBENCH_DB_URL") == "":
        assert str(tmp_path / "home" / "workbench.db") in str(refused.value)
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


# ---- the same on every database (tests/conftest.py: --db postgresql runs these on PostgreSQL too) ------------------


def test_over_long_text_is_refused_alike_on_every_database(home):
    """SQLite would keep 201 characters in a VARCHAR(200); PostgreSQL would fail mid-transaction. Both refuse."""
    with pytest.raises(InvalidInput, match=r"^a model's name is 201 characters long; at most 200 are kept$"):
        catalog.create_model(name="x" * 201, source_kind="local", source="/x", allow_pickle=False,
                             variant=_variant_fields())
    assert catalog.list_models() == [] and catalog.list_variants() == []  # nothing half-written
    model, _ = catalog.create_model(name="é" * 200, source_kind="local", source="/x", allow_pickle=False,
                                    variant=_variant_fields())  # characters, not bytes
    with pytest.raises(InvalidInput, match="a model's task is 61 characters long; at most 60 are kept"):
        catalog.update_model_info(model.id, {"seen": True}, task="t" * 61)
    assert catalog.get_model(model.id).task == "text-classification" and catalog.get_model(model.id).info == {}


@pytest.mark.sqlite
def test_a_row_sqlite_kept_over_length_before_the_check_can_still_be_updated(home):
    from storage.orm import SqlModel

    model, _ = catalog.create_model(name="m", source_kind="local", source="/x", allow_pickle=False,
                                    variant=_variant_fields())
    with db.engine().begin() as conn:  # as an older workbench on SQLite may have stored it
        conn.execute(SqlModel.__table__.update().where(SqlModel.id == model.id).values(name="x" * 250))
    assert catalog.update_model_info(model.id, {"seen": True}).info == {"seen": True}


def test_non_finite_floats_in_json_commit_on_every_database(home):
    from storage import queue

    job = queue.enqueue("test-sleep", {"history": [1.5, math.nan, math.inf], "loss": -math.inf})
    stored = queue.get_job(job.id).params
    if db.engine().dialect.name == "sqlite":  # SQLite keeps Python's own NaN / Infinity text
        assert stored["history"][0] == 1.5 and math.isnan(stored["history"][1]) and stored["loss"] == -math.inf
    else:  # a server's json type has no such numbers: they are null
        assert stored == {"history": [1.5, None, None], "loss": None}


@pytest.mark.postgresql
def test_a_database_server_gets_the_pool_settings(home, monkeypatch):
    monkeypatch.setenv("WORKBENCH_DB_POOL_SIZE", "3")
    monkeypatch.setenv("WORKBENCH_DB_MAX_OVERFLOW", "2")
    monkeypatch.setenv("WORKBENCH_DB_POOL_RECYCLE_S", "600")
    db.dispose_all()
    engine = db.engine()
    assert (engine.dialect.name, engine.dialect.driver) == ("postgresql", "psycopg")
    assert (engine.pool.size(), engine.pool._max_overflow, engine.pool._recycle) == (3, 2, 600)
    assert catalog.list_models() == []


@pytest.mark.postgresql
def test_processes_migrating_one_postgresql_database_at_once_take_turns(bare_home, tmp_path):
    """Each has its own data directory (so its own migration file lock): only the advisory lock keeps them apart."""
    from tests.conftest import REPO

    procs = [
        subprocess.Popen([sys.executable, "-m", "workbench", "db", "upgrade", "--json"], cwd=REPO, text=True,
                         env={**os.environ, "WORKBENCH_HOME": str(tmp_path / f"home{i}")},
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for i in range(3)
    ]
    outcomes = [(proc.wait(timeout=300), *proc.communicate()) for proc in procs]
    assert [code for code, _, _ in outcomes] == [0, 0, 0], outcomes
    upgrades = [json.loads(out) for _, out, _ in outcomes]
    assert all(u["to"] == db.head_revision() for u in upgrades)
    assert sum(u["from"] is None for u in upgrades) >= 1  # whoever went first made the schema from nothing
    with db.engine().connect() as conn:
        assert db.current_revision(conn) == db.head_revision()


@pytest.mark.parametrize("ref", [2**31, 2**63 - 1, 2**63, "²"])
def test_an_id_beyond_any_row_is_not_found_on_every_database(home, ref):
    """PostgreSQL's INTEGER ids are 32-bit and it refuses to compare one with a larger number; SQLite overflows at
    64 bits. Either way such an id names no row."""
    from storage import deployments, queue, traffic

    for get in (catalog.get_model, catalog.get_variant, catalog.get_dataset, queue.get_job, traffic.get_experiment):
        with pytest.raises(NotFound):
            get(str(ref))
    with pytest.raises(NotFound):
        queue.job_log(2**31)
    with pytest.raises((NotFound, InvalidInput)):
        deployments.get_deployment(ref)
    with pytest.raises((NotFound, InvalidInput)):
        traffic.set_feedback(ref, "correct")
