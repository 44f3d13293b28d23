"""Reading a module's lab (jobs run by a burst worker, see tests/test_optimize.py): what a job made, and its
evaluation, with the job's log in the failure message when it did not succeed."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


@contextmanager
def tiny_lab(root: Path, tokenizer_dir: Path, dataset_csv: Path, dataset_name: str) -> Iterator[Any]:
    """A module's own data directory under `root` (SQLite, migrated) holding a tiny BERT classifier named "tiny"
    and the dataset; yields the classifier's variant; the database engine is disposed after."""
    import pytest

    from jobs import api
    from storage import db
    from tests.support.tiny import tiny_classifier

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WORKBENCH_HOME", str(root / "home"))
        mp.delenv("WORKBENCH_DB_URL", raising=False)
        db.dispose_all()
        db.upgrade()
        try:
            model = tiny_classifier(root / "tiny", tokenizer_dir, init_range=0.5)
            original = api.add_model(api.ModelRequest(str(model), name="tiny")).variant
            api.add_dataset(api.DatasetRequest(str(dataset_csv), name=dataset_name))
            yield original
        finally:
            db.dispose_all()


def produced(lab, name: str):
    job = lab["jobs"][name]
    assert job.status.value == "succeeded", f"{name}: {job.message}\n{lab['api'].job_log(job.id)[-3000:]}"
    return lab["api"].get_variant(job.produced_variant_id)


def evaluation_of(lab, variant):
    evaluations = lab["api"].variant_detail(variant.id)["evaluations"]
    assert evaluations, f"variant {variant.id} ({variant.name}) has no evaluation"
    return evaluations[-1]
