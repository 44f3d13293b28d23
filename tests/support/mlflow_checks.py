"""What the MLflow tests check from outside the workbench, as another MLflow user would: runs and versions read
through `MlflowClient`, and a registered alias loaded by `mlflow.pyfunc` in a fresh process that knows nothing of
the workbench but the tracking URI (a SQLite store or a tracking server alike)."""

from __future__ import annotations

import os

import pytest


def client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def run_of(uri: str, job_id: int, experiment: str):
    c = client(uri)
    exp = c.get_experiment_by_name(experiment)
    assert exp is not None, f"no experiment {experiment!r} in {uri}"
    runs = c.search_runs([exp.experiment_id], filter_string=f"tags.`workbench.job_id` = '{job_id}'")
    assert len(runs) == 1, f"job {job_id}: {len(runs)} runs in {experiment!r}"
    return runs[0]


PYFUNC_TEXTS = ["what a wonderful day", "this was awful and boring", "it arrived on time", "meh"]

# run in a fresh process that knows nothing of the workbench but the tracking URI: what another MLflow user would do
LOAD_WITH_MLFLOW = """
import json, sys
from pathlib import Path
import mlflow.pyfunc, pandas as pd
from mlflow.artifacts import download_artifacts

name, aliases, texts = sys.argv[1], sys.argv[2].split(","), json.loads(sys.argv[3])
answers = {}
for alias in aliases:
    uri = f"models:/{name}@{alias}"
    model = mlflow.pyfunc.load_model(uri)
    local = Path(download_artifacts(uri))
    answers[alias] = {
        "frame": model.predict(pd.DataFrame({"text": texts})).to_dict(orient="records"),
        "mapping": model.predict({"text": texts}).to_dict(orient="records"),
        "signature": model.metadata.signature.to_dict() if model.metadata.signature else None,
        "input_example": model.metadata.saved_input_example_info,
        # a local store's model is loaded in place, so Python may have cached the entry file's bytecode there
        "files": sorted(p.relative_to(local).as_posix() for p in local.rglob("*")
                        if p.is_file() and "__pycache__" not in p.parts),
    }
print(json.dumps(answers))
"""


def mlflow_user_env(uri: str) -> dict[str, str]:
    """Only the tracking URI (no WORKBENCH_HOME, no database); PATH to find the tools, telemetry off (no network)."""
    return {"PATH": os.environ["PATH"], "MLFLOW_TRACKING_URI": uri, "MLFLOW_DISABLE_TELEMETRY": "true"}


def assert_answers_like_the_workbench(api, variant_id: int, rows: list[dict], texts: list[str]) -> None:
    assert len(rows) == len(texts)
    for row, text in zip(rows, texts, strict=True):
        expected = api.predict(variant_id, text)
        assert row["label"] == expected.label, text
        assert row["confidence"] == pytest.approx(expected.confidence, abs=1e-5)
        assert {k: v for k, v in row.items() if k.startswith("p_")} == pytest.approx(
            {f"p_{label}": p for label, p in expected.probabilities.items()}, abs=1e-5)
