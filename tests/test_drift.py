"""Drift monitoring: PSI and chi-square against hand computations; a real deployment (server process, real HTTP on
127.0.0.1) sampling every text into SQLite; in-distribution traffic gives no alarm, long texts raise one; too few
samples say so; the sample writer never blocks a request and counts what it drops.
"""

from __future__ import annotations

import math
import random
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import run_cli, wait_for

WINDOW = 300


# ---- the statistics, by hand --------------------------------------------------------------------------------------


def test_psi_equals_a_hand_computation_with_quantile_bins_and_an_empty_bin():
    from jobs.serving.drift import PSI_EPSILON, psi

    reference = list(range(1, 11))  # quintile edges 2.8, 4.6, 6.4, 8.2: two values per bin
    live = [1, 1, 1, 1, 2, 3, 5, 9, 10, 10]  # shares .5 .1 .1 0 .3
    result = psi(reference, live, bins=5)
    by_hand = ((0.5 - 0.2) * math.log(0.5 / 0.2) + 2 * (0.1 - 0.2) * math.log(0.1 / 0.2)
               + (PSI_EPSILON - 0.2) * math.log(PSI_EPSILON / 0.2) + (0.3 - 0.2) * math.log(0.3 / 0.2))
    assert result.value == pytest.approx(by_hand, rel=1e-12)
    assert result.reference_shares == pytest.approx([0.2] * 5) and result.live_shares == pytest.approx([.5, .1, .1, 0, .3])
    assert result.bins == ["< 2.8", "2.8 – 4.6", "4.6 – 6.4", "6.4 – 8.2", "≥ 8.2"]
    assert psi(reference, reference, bins=5).value == 0.0
    # token counts: the same bins (edges rounded up hold the same whole numbers), named by the numbers they hold
    counts = psi(reference, live, bins=5, whole=True)
    assert counts.value == pytest.approx(by_hand) and counts.bins == ["≤ 2", "3–4", "5–6", "7–8", "≥ 9"]
    # a constant reference still tells a live value off it
    assert psi([7] * 20, [7] * 10).value == 0.0 and psi([7] * 20, [9] * 10).value > 1


def test_the_label_mix_chi_square_equals_a_hand_computation():
    from jobs.serving.drift import label_test

    reference = ["a"] * 50 + ["b"] * 30 + ["c"] * 20
    live = ["a"] * 20 + ["b"] * 20 + ["c"] * 60
    result = label_test(reference, live)
    # expected counts per row: 35, 25, 40 (column totals 70, 50, 80 over two rows of 100)
    statistic = 2 * (15**2 / 35 + 5**2 / 25 + 20**2 / 40)
    assert result.statistic == pytest.approx(statistic) and result.dof == 2
    assert result.p_value == pytest.approx(math.exp(-statistic / 2))  # chi-square survival with 2 dof
    assert (result.reference_counts, result.live_counts) == ([50, 30, 20], [20, 20, 60])
    same = label_test(reference, reference)
    assert same.statistic == 0 and same.p_value == pytest.approx(1.0)
    assert label_test(["a"] * 5, ["a"] * 9).p_value == 1.0  # one label on both sides: nothing to test


# ---- the sample writer ----------------------------------------------------------------------------------------------


def test_the_writer_never_blocks_and_counts_what_it_drops(home):
    from jobs import api
    from jobs.serving.drift import reference_dataset
    from jobs.serving.drift_sampling import DriftSampleWriter
    from storage import catalog, deployments, drift
    from tests.support.rows import placeholder_dataset, placeholder_model

    _, variant = placeholder_model()
    record = deployments.create_deployment(name="w", variant_id=variant.id, variant_sha256="a" * 64, alias=None,
                                           host="127.0.0.1", port=1, config={}, pid=None, status="stopped",
                                           reason=None, log_path="")
    result = {"label": "a", "confidence": 0.9, "tokens": 5}
    writer = DriftSampleWriter(record.id, 1.0, {}, max_buffer=5)  # not started: nothing drains the buffer
    started = time.perf_counter()
    writer([f"text {i}" for i in range(200)], [result] * 200, variant_id=variant.id)
    assert time.perf_counter() - started < 0.05
    value = writer.registry.get_sample_value
    assert writer.buffered == 5 and value("workbench_serving_drift_samples_dropped_total", {"reason": "buffer_full"}) == 195
    assert writer.flush() == 5 and drift.count(record.id) == 5
    rows = drift.window(record.id)
    # no tokenizer for this variant: its rate is unknown (None), never a made-up 0
    assert [(r.tokens, r.label, r.unknown_token_rate) for r in rows] == [(5, "a", None)] * 5
    assert value("workbench_serving_drift_samples_written_total") == 5

    orphan = DriftSampleWriter(record.id + 99, 1.0, {})  # no such deployment: the database refuses the rows
    orphan(["x", "y"], [result, result], variant_id=variant.id)
    assert orphan.flush() == 0 and drift.count(record.id + 99) == 0
    assert orphan.registry.get_sample_value("workbench_serving_drift_samples_dropped_total",
                                            {"reason": "write_failed"}) == 2

    # no reference chosen and no record of what the variant learnt from: the view asks for one
    roomy = DriftSampleWriter(record.id, 1.0, {})
    roomy([f"more {i}" for i in range(60)], [result] * 60, variant_id=variant.id)
    assert roomy.flush() == 60 and drift.count(record.id) == 65
    asked = api.deployment_drift(record.id)
    assert asked.status == "no_reference" and asked.message.startswith("choose a reference dataset")
    # ...while a child of a variant fine-tuned on a dataset is measured against that dataset
    dataset = placeholder_dataset("sst")
    parent = catalog.create_variant(**{**fields_of(variant), "name": "tuned", "dataset_id": dataset.id,
                                       "parent_id": variant.id})
    child = catalog.create_variant(**{**fields_of(variant), "name": "int8", "parent_id": parent.id})
    assert reference_dataset(record, child) == dataset and reference_dataset(record, variant) is None

    sparse = DriftSampleWriter(record.id, 0.1, {}, seed=3)
    sparse([f"t{i}" for i in range(2000)], [result] * 2000, variant_id=variant.id)
    assert 140 < sparse.buffered < 260  # about a tenth
    with pytest.raises(ValueError, match="--sample-rate"):
        DriftSampleWriter(record.id, 1.5, {})


def fields_of(variant) -> dict:
    keep = ("model_id", "artifact_dir", "runtime", "precision", "recipe", "files", "sha256", "size_bytes")
    return {name: getattr(variant, name) for name in keep}


# ---- a real deployment ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def deployed(tmp_path_factory, minilm_dir):
    """A confident tiny classifier deployed with every text sampled, and a 3-class dataset of 3,000 rows (300 in its
    test split, the reference)."""
    from jobs import api
    from storage import db
    from tests.support.data import write_sentiment_csv
    from tests.support.tiny import tiny_classifier

    base = tmp_path_factory.mktemp("drift")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("WORKBENCH_HOME", str(base / "home"))
        env.delenv("WORKBENCH_DB_URL", raising=False)
        db.dispose_all()
        db.upgrade()
        deployment = None
        try:
            model = tiny_classifier(base / "tiny", minilm_dir, 0, init_range=0.5)
            variant = api.add_model(api.ModelRequest(str(model), name="tiny")).variant
            dataset = api.add_dataset(api.DatasetRequest(str(write_sentiment_csv(base / "toy.csv", per_class=1000)),
                                                         name="toy"))
            deployment = api.deploy(variant.id, threads=1, sample_rate=1.0, reference_dataset="toy", wait_s=120)
            assert deployment.status == "ready", deployment.reason
            yield deployment, dataset
        finally:
            if deployment is not None:
                api.stop_deployment(deployment.id)
            db.dispose_all()


def send(url: str, texts: list[str]) -> None:
    for i in range(0, len(texts), 100):
        response = httpx.post(f"{url}/v1/predict", json={"texts": texts[i:i + 100]}, timeout=60)
        assert response.status_code == 200, response.text


def test_sampled_traffic_lands_in_sqlite_and_drift_is_told_from_no_drift(deployed):
    from jobs import api
    from jobs.ml.data import split_examples
    from jobs.serving import drift
    from storage import drift as store
    from storage.orm import utcnow

    deployment, dataset = deployed
    assert deployment.config["sample_rate"] == 1.0 and deployment.config["reference_dataset_id"] == dataset.id
    early = api.deployment_drift(deployment.id)
    assert early.status == "not_enough" and early.message == "not enough samples yet (0 of 50)" and early.length is None

    # in distribution: texts of the same dataset the model never saw in the reference (its train split)
    send(deployment.url, split_examples(dataset, "train", WINDOW).texts)
    wait_for(lambda: store.count(deployment.id) >= WINDOW, 30, what="the samples to be written")
    assert store.count(deployment.id) == WINDOW
    rows = store.window(deployment.id)
    assert all(r.variant_id == deployment.variant_id and r.arm is None and r.tokens > 2 for r in rows)
    assert all(r.unknown_token_rate == 0.0 for r in rows)  # BERT's tokenizer knows every word of these texts

    calm = api.deployment_drift(deployment.id, window=WINDOW)
    assert calm.status in ("ok", "watch") and not calm.alarm, calm.message
    assert calm.length.value < 0.2 and calm.confidence.value < 0.2 and calm.labels.p_value >= 0.01
    # the figures are those of a direct computation on the stored samples and the cached reference
    reference = store.get_reference(api.get_variant(deployment.variant_id).sha256, dataset.id, dataset.sha256, "test")
    assert len(reference["tokens"]) == calm.reference_count == 300
    assert calm.length.value == drift.psi(reference["tokens"], [r.tokens for r in rows], whole=True).value
    assert calm.labels.statistic == drift.label_test(reference["label"], [r.label for r in rows]).statistic
    too_few = api.deployment_drift(deployment.id, window=WINDOW, min_samples=WINDOW + 1)
    assert too_few.status == "not_enough" and too_few.message == f"not enough samples yet ({WINDOW} of {WINDOW + 1})"

    between = utcnow()
    # shifted: long texts, a third of them in a script this tokenizer does not know
    rng = random.Random(5)
    words = ["love", "table", "awful", "street", "great", "monday"]
    shifted = [" ".join(rng.choice(words) for _ in range(rng.randint(40, 80))) for _ in range(WINDOW * 2 // 3)]
    shifted += ["ᚠᚢᚦ ᚨᚱᚲ ᚷᚹ " * rng.randint(5, 15) for _ in range(WINDOW - len(shifted))]
    send(deployment.url, shifted)
    wait_for(lambda: store.count(deployment.id) >= 2 * WINDOW, 30, what="the shifted samples to be written")
    alarmed = api.deployment_drift(deployment.id, window=WINDOW)
    assert alarmed.alarm and alarmed.levels["length"] == "alarm" and alarmed.message.startswith("DRIFT: length PSI")
    assert alarmed.unknown_rate_live > 0.1 and alarmed.unknown_rate_reference == 0.0
    since = api.deployment_drift(deployment.id, window=None, since=between)  # a window by time: the same samples
    assert since.live_count == WINDOW and since.length.value == alarmed.length.value

    metrics = {s.name: s.value for family in text_string_to_metric_families(httpx.get(f"{deployment.url}/metrics").text)
               for s in family.samples if s.name.startswith("workbench_serving_drift_samples")}
    assert metrics["workbench_serving_drift_samples_written_total"] == 2 * WINDOW
    assert metrics["workbench_serving_drift_samples_dropped_total"] == 0

    # the reference ran once and was cached; the Drift view shows the alarm
    from sqlalchemy import func, select

    from storage.db import session_scope
    from storage.orm import SqlDriftReference
    from workbench.tabs.deploy_drift import show_drift

    banner, figures, chart = show_drift(str(deployment.id), "", WINDOW)
    assert "data-level='alarm'" in banner and "DRIFT: length PSI" in banner and "label mix chi-square" in figures
    assert [trace.name for trace in chart.data] == ["reference (test split)", "live window"] * 3
    with session_scope() as s:
        assert s.scalar(select(func.count(SqlDriftReference.id))) == 1

    proc = run_cli("deployments", "drift", str(deployment.id), "--window", str(WINDOW), check=False)
    assert proc.returncode == 1, proc.stderr
    assert "DRIFT: length PSI" in proc.stdout and "label mix chi-square" in proc.stdout and "reference: dataset 'toy'" in proc.stdout
    bad = run_cli("deployments", "drift", str(deployment.id), "--since", "yesterday", check=False)
    assert bad.returncode == 2 and bad.stderr.strip() == "error: --since is a UTC time like 2026-05-01T12:00, not 'yesterday'"
