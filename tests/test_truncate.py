"""The `truncate` kind: a variant that reads fewer tokens per text, on PyTorch and ONNX Runtime variants, its files
shared with its parent, evaluated like any variant, and measured on real traffic at its own shorter length; a length
that would change nothing is refused with nothing made.

One module-scoped data directory: a tiny BERT classifier and texts of mixed lengths; every job is queued up front
and run by one `worker --burst`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_cli
from tests.support.lab import evaluation_of, produced, tiny_lab

pytestmark = pytest.mark.slow

EVAL = {"max_examples": 40, "tolerance_points": 1.0}
SHORT = 16  # tokens; the mixed texts run to 60 words
REAL_TRAFFIC = {"traffic": "real", "batch_sizes": [4], "texts": 16, "seed": 3, "warmup": 1, "window": 4,
                "min_samples": 8, "max_seconds": 1.0, "threads": 1}
LONG_TEXT = " ".join(["the table was great but the chair was awful"] * 6)


@pytest.fixture(scope="module")
def lab(tmp_path_factory, minilm_dir):
    from jobs import api
    from tests.support.data import write_mixed_lengths_csv

    root = tmp_path_factory.mktemp("truncate")
    with tiny_lab(root, minilm_dir, write_mixed_lengths_csv(root / "mixed.csv"), "mixed") as original:
        jobs = {"short": api.submit("truncate", {"max_length": SHORT}, model="tiny", dataset="mixed", evaluation=EVAL)}
        jobs["onnx"] = api.submit("export-onnx", {}, model="tiny", dataset="mixed")
        jobs["onnx-half"] = api.submit("truncate", {"fraction": 0.5}, depends_on=jobs["onnx"].id, evaluation=EVAL)
        jobs["no-shorter"] = api.submit("truncate", {"max_length": 500}, model="tiny", dataset="mixed")
        jobs["benchmark"] = api.submit("benchmark", REAL_TRAFFIC, depends_on=jobs["short"].id, dataset="mixed")
        run_cli("worker", "--burst")
        yield {"api": api, "jobs": {name: api.get_job(job.id) for name, job in jobs.items()}, "original": original}


def test_a_truncated_variant_reads_fewer_tokens_with_its_parents_weights(lab):
    from jobs.runtimes import load_predictor
    from jobs.runtimes.base import VARIANT_META, read_variant_meta

    original, short = lab["original"], produced(lab, "short")
    assert (short.runtime, short.precision, short.parent_id) == (original.runtime, original.precision, original.id)
    assert read_variant_meta(Path(short.artifact_dir))["max_length"] == SHORT
    assert short.info["truncation"] == {"from_tokens": 128, "to_tokens": SHORT}
    assert short.recipe["steps"][-1]["kind"] == "truncate"  # a recipe like any other: it can be re-run
    # the weights are the parent's own files (hard links in one artifact store), only workbench.json differs
    parent_dir, child_dir = Path(original.artifact_dir), Path(short.artifact_dir)
    weights = [p.name for p in parent_dir.iterdir() if p.name.endswith(".safetensors")]
    assert weights
    for name in weights:
        assert os.stat(parent_dir / name).st_ino == os.stat(child_dir / name).st_ino
    assert {p.name for p in child_dir.iterdir()} - {VARIANT_META} == {p.name for p in parent_dir.iterdir()} - {VARIANT_META}
    predictor, reference = load_predictor(short, threads=1), load_predictor(original, threads=1)
    try:
        assert predictor.max_length == SHORT and reference.max_length == 128
        # what the truncated variant answers is its parent's answer to the text cut at SHORT tokens
        ids = reference.tokenizer(LONG_TEXT, truncation=True, max_length=SHORT)["input_ids"]
        cut = reference.tokenizer.decode(ids[1:-1])
        np.testing.assert_allclose(predictor.predict([LONG_TEXT]), reference.predict([cut]), atol=1e-5)
        assert len(reference.tokenizer(LONG_TEXT)["input_ids"]) > SHORT
    finally:
        predictor.close()
        reference.close()
    assert 0 <= evaluation_of(lab, short).accuracy <= 1


def test_an_onnx_variant_is_truncated_to_a_fraction_of_its_own_length(lab):
    from jobs.runtimes import load_predictor

    onnx, half = produced(lab, "onnx"), produced(lab, "onnx-half")
    assert (half.runtime, half.precision, half.parent_id) == ("onnxruntime", onnx.precision, onnx.id)
    assert half.info["truncation"] == {"from_tokens": 128, "to_tokens": 64}
    predictor = load_predictor(half, threads=1)
    try:
        assert predictor.max_length == 64
    finally:
        predictor.close()
    evaluation_of(lab, half)


def test_a_length_that_changes_nothing_is_refused_with_nothing_made(lab):
    job = lab["jobs"]["no-shorter"]
    assert job.status.value == "failed" and job.produced_variant_id is None
    assert "already reads at most 128 tokens" in job.message
    from storage.errors import InvalidInput

    with pytest.raises((InvalidInput, ValueError), match="exactly one"):
        lab["api"].submit("truncate", {"max_length": SHORT, "fraction": 0.5}, model="tiny")


def test_real_traffic_on_a_truncated_variant_is_measured_at_its_shorter_length(lab):
    from storage import catalog

    job = lab["jobs"]["benchmark"]
    assert job.status.value == "succeeded", lab["api"].job_log(job.id)[-3000:]
    rows = [m for m in catalog.list_measurements() if m.job_id == job.id]
    assert rows
    for m in rows:
        lengths = m.traffic["token_lengths"]
        assert lengths["max"] == SHORT and m.traffic["truncated"] > 0  # texts of up to 60 words, cut at SHORT
