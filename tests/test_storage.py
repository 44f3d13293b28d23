"""Storage: migrations, SQLite settings, entities at the boundary, the artifact store."""

from __future__ import annotations

import dataclasses

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from storage import catalog, db, files, settings
from storage.entities import Model, Variant
from storage.errors import Conflict, NotFound
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
