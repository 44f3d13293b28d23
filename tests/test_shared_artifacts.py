"""Artifacts shared by the nodes of a cluster, addressed by kind and sha256 (storage/shared_artifacts.py).

A "node" here is a data directory of its own (WORKBENCH_HOME: job folders, cache) with real `workbench worker
--burst` processes and real job processes, all nodes sharing one SQLite database file and one artifact root: a
directory (on another filesystem than the data directories where the machine has one, as a shared mount is), or a
`file://` URL served by fsspec's real local filesystem. Models are the tiny classifier of tests/support/tiny.py.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import update

from storage.files import hash_file, manifest, manifest_sha256
from storage.orm import JobStatus
from tests.conftest import run_cli
from tests.support.ray_cluster import RayCluster, ray_available
from tests.support.tiny import tiny_classifier

pytestmark = pytest.mark.slow
SHA = 64


@contextmanager
def on_node(home: Path, db_file: Path, root: str):
    """This test process as the node whose data directory is `home` and whose artifact root is `root`."""
    from storage import db

    with pytest.MonkeyPatch.context() as mp:
        for name, value in node_env(home, db_file, root).items():
            mp.setenv(name, value)
        db.dispose_all()
        yield
        db.dispose_all()


def node_env(home: Path, db_file: Path, root: str) -> dict[str, str]:
    return {"WORKBENCH_HOME": str(home), "WORKBENCH_DB_URL": f"sqlite:///{db_file}", "WORKBENCH_ARTIFACT_ROOT": root}


def run_worker(home: Path, db_file: Path, root: str) -> None:
    """A real burst worker of that node: it runs every queued job in real job processes, then exits."""
    run_cli("worker", "--burst", env=node_env(home, db_file, root))


def other_filesystem_dir() -> Path:
    """A fresh directory on another filesystem than the test's temporary folders where there is one (/dev/shm), as
    a shared mount would be: committing there cannot be one rename."""
    shm = Path("/dev/shm")
    base = Path(tempfile.gettempdir())
    if shm.is_dir() and os.access(shm, os.W_OK) and shm.stat().st_dev != base.stat().st_dev:
        return Path(tempfile.mkdtemp(prefix="wb-shared-root-", dir=shm))
    return Path(tempfile.mkdtemp(prefix="wb-shared-root-"))


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.exists() else []


def stored_artifact_dirs(db_file: Path) -> dict[int, str]:
    """The `artifact_dir` column as stored (what every node resolves), read with plain sqlite3."""
    with sqlite3.connect(db_file) as conn:
        return dict(conn.execute("SELECT id, artifact_dir FROM variants"))


# ---- a shared directory ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_dir(tmp_path_factory, minilm_dir):
    """Node A takes in the tiny model and quantizes it (bf16) with its worker; the root is a shared directory."""
    from jobs import api
    from storage import db

    tmp = tmp_path_factory.mktemp("shared-dir")
    root = other_filesystem_dir()
    node_a, db_file = tmp / "node-a", tmp / "shared.db"
    try:
        with on_node(node_a, db_file, str(root)):
            db.upgrade()
            original = api.add_model(api.ModelRequest(str(tiny_classifier(tmp / "tiny", minilm_dir)), name="tiny")).variant
            quantize = api.submit("quantize", {"method": "bf16"}, variant=original.id)
        run_worker(node_a, db_file, str(root))  # the intake's inspect, then the quantize
        with on_node(node_a, db_file, str(root)):
            done = api.get_job(quantize.id)
            assert done.status is JobStatus.SUCCEEDED, api.job_log(done.id)[-3000:]
            made = api.get_variant(done.produced_variant_id)
        yield {"tmp": tmp, "root": root, "db": db_file, "node_a": node_a, "original": original, "made": made}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_rows_store_keys_that_resolve_under_each_nodes_root(shared_dir):
    original, made, root = shared_dir["original"], shared_dir["made"], shared_dir["root"]
    assert stored_artifact_dirs(shared_dir["db"]) == {original.id: f"models/{original.sha256}",
                                                       made.id: f"variants/{made.sha256}"}
    assert made.artifact_dir == str(root / "variants" / made.sha256)
    assert manifest(Path(made.artifact_dir)) == made.files  # committed whole, across filesystems where there are two
    assert not [p for p in (root / "variants").iterdir() if p.name != made.sha256]  # no partial copy left beside
    assert not (shared_dir["node_a"] / "artifacts").exists()  # nothing went to the node's own folder


def test_a_variant_made_on_node_a_is_used_by_a_job_on_node_b(shared_dir):
    from jobs import api

    node_b = shared_dir["tmp"] / "node-b"
    root, db_file, made = str(shared_dir["root"]), shared_dir["db"], shared_dir["made"]
    with on_node(node_b, db_file, root):
        job = api.submit("inspect", {}, variant=made.id)
    run_worker(node_b, db_file, root)
    with on_node(node_b, db_file, root):
        done = api.get_job(job.id)
        assert done.status is JobStatus.SUCCEEDED, api.job_log(done.id)[-3000:]
        assert done.result  # it read the variant's config and weights
    assert (node_b / "jobs").is_dir() and not (node_b / "artifacts").exists()  # ran there, from the shared root


def test_a_node_whose_root_lacks_the_artifact_fails_the_job_saying_why(shared_dir):
    from jobs import api

    node_c = shared_dir["tmp"] / "node-c"
    unmounted = node_c / "mnt" / "artifacts"  # the shared root is not mounted on this node
    db_file, made = shared_dir["db"], shared_dir["made"]
    with on_node(node_c, db_file, str(unmounted)):
        job = api.submit("inspect", {}, variant=made.id)
    run_worker(node_c, db_file, str(unmounted))
    with on_node(node_c, db_file, str(unmounted)):
        failed = api.get_job(job.id)
    assert failed.status is JobStatus.FAILED
    assert failed.error == (
        f"variant {made.id} {made.name!r} (model {made.model_id}) (sha256 {made.sha256}) is not on node "
        f"{socket.gethostname()}: variants/{made.sha256} is missing under the artifact root {unmounted}; mount the "
        "shared artifact root at that path on this node (or set WORKBENCH_ARTIFACT_ROOT to where it is mounted, or "
        "to a URL every node can fetch from), or copy the artifact there, then try again")
    assert "Traceback" not in (failed.error or "")
    assert not (node_c / "mnt").exists()  # nothing made in the missing root's place
    assert files_under(node_c / "staging") == [] and not (node_c / "artifact-cache").exists()


def test_rows_from_before_keys_keep_working(shared_dir):
    """An absolute path that exists is used as it is; one that does not (another machine's data directory)
    resolves by its <kind>/<sha256> tail under this node's root."""
    from storage import catalog
    from storage.db import session_scope
    from storage.orm import SqlVariant

    root, db_file, made = shared_dir["root"], shared_dir["db"], shared_dir["made"]
    elsewhere = f"/home/someone/.workbench/artifacts/variants/{made.sha256}"
    copy = shared_dir["tmp"] / "old-home" / "artifacts" / "variants" / made.sha256
    shutil.copytree(made.artifact_dir, copy)
    with on_node(shared_dir["node_a"], db_file, str(root)):
        try:
            for stored, expected in ((elsewhere, root / "variants" / made.sha256), (str(copy), copy)):
                with session_scope() as s:
                    s.execute(update(SqlVariant).where(SqlVariant.id == made.id).values(artifact_dir=stored))
                assert catalog.get_variant(made.id).artifact_dir == str(expected)
        finally:
            with session_scope() as s:
                s.execute(update(SqlVariant).where(SqlVariant.id == made.id)
                          .values(artifact_dir=f"variants/{made.sha256}"))


def test_a_partly_copied_artifact_is_refused_naming_the_missing_file(shared_dir, tmp_path):
    from storage.shared_artifacts import ArtifactUnavailable, ensure_variant

    made = shared_dir["made"]
    half = tmp_path / "root" / "variants" / made.sha256
    shutil.copytree(made.artifact_dir, half)
    victim = max(made.files, key=lambda e: e["size"])["path"]
    (half / victim).unlink()
    with on_node(tmp_path / "node", shared_dir["db"], str(tmp_path / "root")):
        from storage import catalog

        with pytest.raises(ArtifactUnavailable, match=rf"is incomplete under the artifact root .* {victim} is missing"):
            ensure_variant(catalog.get_variant(made.id))


def test_a_server_on_a_node_without_the_artifact_refuses_to_start_saying_why(shared_dir, tmp_path):
    from jobs.serving.server import served_variant
    from storage.shared_artifacts import ArtifactUnavailable

    made = shared_dir["made"]
    with on_node(tmp_path / "node", shared_dir["db"], str(tmp_path / "unmounted")):
        with pytest.raises(ArtifactUnavailable, match=rf"variant {made.id} .* is not on node .* under the artifact "
                                                      rf"root {tmp_path / 'unmounted'}; mount the shared"):
            served_variant(made.id)
    with on_node(tmp_path / "node", shared_dir["db"], str(shared_dir["root"])):
        assert served_variant(made.id).artifact_dir == str(shared_dir["root"] / "variants" / made.sha256)


# ---- an fsspec URL -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def url_root(tmp_path_factory, minilm_dir):
    """Node D takes in the tiny model (uploaded to a file:// URL root); node E's worker runs the intake's inspect
    and a quantize on it: E fetches the original into its cache and uploads the variant it makes."""
    from jobs import api
    from storage import db

    tmp = tmp_path_factory.mktemp("url-root")
    remote = tmp / "remote"
    url = remote.as_uri()  # file:///...
    node_d, node_e, db_file = tmp / "node-d", tmp / "node-e", tmp / "shared.db"
    with on_node(node_d, db_file, url):
        db.upgrade()
        original = api.add_model(api.ModelRequest(str(tiny_classifier(tmp / "tiny", minilm_dir)), name="tiny")).variant
        [inspect_job] = [job for job in api.list_jobs() if job.kind == "inspect"]
        quantize = api.submit("quantize", {"method": "bf16"}, variant=original.id)
    run_worker(node_e, db_file, url)
    with on_node(node_e, db_file, url):
        jobs = [api.get_job(inspect_job.id), api.get_job(quantize.id)]
        for job in jobs:
            assert job.status is JobStatus.SUCCEEDED, api.job_log(job.id)[-3000:]
        made = api.get_variant(jobs[1].produced_variant_id)
    return {"tmp": tmp, "remote": remote, "url": url, "db": db_file, "node_e": node_e, "original": original,
            "made": made}


def test_a_node_fetches_from_a_url_root_into_its_cache_verified(url_root):
    original, made, remote, node_e = url_root["original"], url_root["made"], url_root["remote"], url_root["node_e"]
    cached = node_e / "artifact-cache" / "models" / original.sha256
    assert {e["path"]: e["sha256"] for e in original.files} == \
        {p.relative_to(cached).as_posix(): hash_file(p) for p in files_under(cached)}
    assert not [p for p in (node_e / "artifact-cache" / "models").iterdir() if p.name != original.sha256]
    # the variant E made was uploaded whole: its files, then the marker holding its manifest; no temporary left
    uploaded = remote / "variants" / made.sha256
    marker = json.loads((uploaded / ".complete").read_text())
    assert marker == {"kind": "variants", "sha256": made.sha256, "files": made.files}
    assert manifest_sha256(marker["files"]) == made.sha256
    assert sorted(p.name for p in uploaded.iterdir() if p.name.startswith(".")) == [".complete"]
    assert stored_artifact_dirs(url_root["db"])[made.id] == f"variants/{made.sha256}"


def test_another_node_fetches_what_a_job_uploaded(url_root, tmp_path):
    from storage import catalog
    from storage.shared_artifacts import ensure_variant

    made = url_root["made"]
    with on_node(tmp_path / "node-f", url_root["db"], url_root["url"]):
        variant = catalog.get_variant(made.id)
        assert variant.artifact_dir == str(tmp_path / "node-f" / "artifact-cache" / "variants" / made.sha256)
        fetched = ensure_variant(variant)
    assert manifest(fetched) == made.files


def test_a_predictor_or_a_download_on_another_node_fetches_the_variant_first(url_root, tmp_path):
    from jobs import api
    from jobs.runtimes import load_predictor
    from storage import catalog

    made = url_root["made"]
    with on_node(tmp_path / "node-j", url_root["db"], url_root["url"]):
        predictor = load_predictor(catalog.get_variant(made.id))
        assert len(predictor.predict(["a fine day"])) == 1
        zipped = api.zip_variant(made.id, tmp_path / "made.zip")
    assert sorted(zipped.files) == sorted(e["path"] for e in made.files)
    assert manifest(tmp_path / "node-j" / "artifact-cache" / "variants" / made.sha256) == made.files


def test_a_corrupt_remote_file_is_refused_and_nothing_is_kept(url_root, tmp_path):
    from storage import catalog
    from storage.shared_artifacts import ArtifactUnavailable, ensure_variant

    original = url_root["original"]
    config = url_root["remote"] / "models" / original.sha256 / "config.json"
    good = config.read_bytes()
    config.write_bytes(good.replace(b'"hidden_size": 32', b'"hidden_size": 33'))
    node = tmp_path / "node-g"
    try:
        with on_node(node, url_root["db"], url_root["url"]):
            with pytest.raises(ArtifactUnavailable) as refused:
                ensure_variant(catalog.get_variant(original.id))
    finally:
        config.write_bytes(good)
    assert str(refused.value) == (
        f"variant {original.id} {original.name!r} (model {original.model_id}) (sha256 {original.sha256}) fetched from "
        f"{url_root['url']} by node {socket.gethostname()} is corrupt: config.json (1 of {len(original.files)} files) "
        "differs from its sha256 in the stored manifest; refused, nothing kept; upload "
        f"models/{original.sha256} again from a node that has a good copy")
    assert files_under(node / "artifact-cache") == []  # neither the artifact nor its staging folder


def test_a_half_written_upload_is_never_used_and_a_later_upload_completes_it(url_root, tmp_path, minilm_dir):
    """An upload cut short left files but no commit marker (or half a marker): no node takes it; publishing the
    artifact again writes the marker last, and then another node fetches and verifies it."""
    from storage import files
    from storage.shared_artifacts import ArtifactUnavailable, ensure, local_dir

    made = tiny_classifier(tmp_path / "another", minilm_dir, seed=7)
    entries = manifest(made)
    sha = manifest_sha256(entries)
    remote = url_root["remote"] / "variants" / sha
    shutil.copytree(made, remote)  # every file there, and no marker: the uploader died before committing
    reader, writer, db_file, url = tmp_path / "node-h", tmp_path / "node-i", url_root["db"], url_root["url"]
    with on_node(reader, db_file, url):
        where = local_dir(f"variants/{sha}")
        with pytest.raises(ArtifactUnavailable, match=r"is not complete at the artifact root .* \(no \.complete marker"):
            ensure(where, what="variant 99 'half'", files=entries)
        (remote / ".complete").write_text('{"kind": "variants", "files": [')  # half a marker (a non-atomic writer)
        with pytest.raises(ArtifactUnavailable, match=r"no \.complete marker: its upload has not finished"):
            ensure(where, what="variant 99 'half'")
        assert files_under(reader / "artifact-cache") == []
    (remote / ".complete").unlink()
    with on_node(writer, db_file, url):
        staged = tmp_path / "staged"
        shutil.copytree(made, staged)
        _, uploaded = files.commit_dir(staged, "variants", sha, entries)
        assert uploaded and not files.commit_dir(made, "variants", sha, entries)[1]  # stored once
    with on_node(reader, db_file, url):
        assert manifest(ensure(where, what="variant 99 'half'")) == entries


def test_a_url_root_this_machine_cannot_open_is_refused_in_one_line(url_root, tmp_path):
    from storage import catalog
    from storage.errors import InvalidInput
    from storage.shared_artifacts import ensure_variant

    with on_node(tmp_path / "node-k", url_root["db"], "nosuch://bucket/artifacts"):
        with pytest.raises(InvalidInput, match=r"^WORKBENCH_ARTIFACT_ROOT='nosuch://bucket/artifacts' cannot be used "
                                               r"here: Protocol not known: nosuch$"):
            ensure_variant(catalog.get_variant(url_root["made"].id))


# ---- through a real two-node Ray cluster -------------------------------------------------------------------------


@pytest.mark.skipif(ray_available() is not None, reason=str(ray_available()))
def test_on_a_ray_cluster_the_node_without_the_artifact_fails_the_job_saying_why(shared_dir):
    """node_a's Ray processes see the shared root, node_b's a root that lacks the artifact (their own
    WORKBENCH_ARTIFACT_ROOT; the worker sets none, so none is forwarded in the tasks' runtime environment)."""
    from jobs import api
    from jobs.runner.params import RAN_ON

    tmp, made, db_file = shared_dir["tmp"], shared_dir["made"], shared_dir["db"]
    empty_root = tmp / "ray-node-b-root"
    empty_root.mkdir()
    worker_home = tmp / "ray-worker"
    with on_node(worker_home, db_file, str(shared_dir["root"])):
        jobs = {cls: api.submit("inspect", {"hardware_class": cls}, variant=made.id) for cls in ("node_a", "node_b")}
    cluster = RayCluster(cpus_per_node=1)
    try:
        with pytest.MonkeyPatch.context() as mp:  # each `ray start` (and the processes of its node) gets its root
            mp.setenv("WORKBENCH_ARTIFACT_ROOT", str(shared_dir["root"]))
            cluster.start(node_a=1)
            mp.setenv("WORKBENCH_ARTIFACT_ROOT", str(empty_root))
            cluster.add_node(node_b=1)
            cluster.wait_for_nodes(2)
            mp.delenv("WORKBENCH_ARTIFACT_ROOT")
            run_cli("worker", "--executor", "ray", "--burst", "--concurrency", "2",
                    env={"WORKBENCH_HOME": str(worker_home), "WORKBENCH_DB_URL": f"sqlite:///{db_file}",
                         "RAY_ADDRESS": cluster.address, "WORKBENCH_HEARTBEAT_S": "0.5"})
    finally:
        cluster.stop()
    with on_node(worker_home, db_file, str(shared_dir["root"])):
        ran, failed = api.get_job(jobs["node_a"].id), api.get_job(jobs["node_b"].id)
    assert ran.status is JobStatus.SUCCEEDED and ran.params[RAN_ON]["hardware_class"] == "node_a", ran.error
    assert failed.status is JobStatus.FAILED and failed.params[RAN_ON]["hardware_class"] == "node_b"
    assert failed.error.startswith(f"variant {made.id} {made.name!r} (model {made.model_id}) (sha256 {made.sha256}) "
                                   f"is not on node {failed.params[RAN_ON]['hostname']}: variants/{made.sha256} is "
                                   f"missing under the artifact root {empty_root}; mount the shared artifact root")
    assert files_under(empty_root) == []
