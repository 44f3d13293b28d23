"""A variant's files as a plain zip: every file (ONNX graphs included) checked against its recorded sha256, a
missing or changed file refused with nothing written; from the core, the Variants tab and the CLI."""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from pathlib import Path

import pytest

from tests.conftest import run_cli


@pytest.fixture
def variant(home, tmp_path, minilm_dir):
    """A tiny classifier's original variant, and a copy of its directory with an ONNX graph as a second variant."""
    from jobs import api
    from storage import catalog, files
    from tests.support.tiny import tiny_classifier

    root = api.add_model(api.ModelRequest(str(tiny_classifier(tmp_path / "tiny", minilm_dir)), name="tiny")).variant
    onnx_dir = home / "artifacts" / "variants" / "onnx-copy"
    shutil.copytree(root.artifact_dir, onnx_dir)
    (onnx_dir / "model.safetensors").unlink()
    (onnx_dir / "onnx").mkdir()
    (onnx_dir / "onnx" / "model.onnx").write_bytes(b"\x08\x07graph bytes" * 1000)
    entries = files.manifest(onnx_dir)
    onnx = catalog.create_variant(model_id=root.model_id, parent_id=root.id, name="tiny > onnx",
                                  artifact_dir=str(onnx_dir), runtime="onnxruntime", precision="fp32",
                                  recipe={"steps": []}, files=entries, sha256=files.manifest_sha256(entries),
                                  size_bytes=sum(e["size"] for e in entries))
    return root, onnx


def zipped_hashes(path: Path) -> dict[str, str]:
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
        return {name: hashlib.sha256(archive.read(name)).hexdigest() for name in archive.namelist()}


def test_the_zip_holds_every_file_with_its_recorded_hash(variant, tmp_path):
    from jobs import api

    for v in variant:
        result = api.zip_variant(v.id, tmp_path / f"v{v.id}.zip")
        assert result.path == tmp_path / f"v{v.id}.zip" and result.variant_id == v.id
        hashes = zipped_hashes(result.path)
        assert {name: h for name, h in hashes.items() if name != "SHA256SUMS"} == {f["path"]: f["sha256"] for f in v.files}
        with zipfile.ZipFile(result.path) as archive:
            sums = archive.read("SHA256SUMS").decode()
        assert sums.splitlines() == [f"{f['sha256']}  {f['path']}" for f in v.files]
        assert result.bytes == sum(f["size"] for f in v.files) == v.size_bytes
    onnx_zip = zipped_hashes(tmp_path / f"v{variant[1].id}.zip")
    assert "onnx/model.onnx" in onnx_zip and "config.json" in onnx_zip and "model.safetensors" not in onnx_zip


def test_a_missing_or_changed_file_is_refused_and_nothing_is_written(variant, tmp_path):
    from jobs import api
    from storage.errors import InvalidInput

    _, onnx = variant
    graph = Path(onnx.artifact_dir) / "onnx" / "model.onnx"
    original = graph.read_bytes()
    graph.write_bytes(original[:-1] + b"X")  # same size, other bytes
    with pytest.raises(InvalidInput, match=r"onnx/model.onnx changed since the variant was made \(sha256"):
        api.zip_variant(onnx.id, tmp_path / "changed.zip")
    graph.write_bytes(original + b"more")
    with pytest.raises(InvalidInput, match=r"onnx/model.onnx changed since the variant was made \(size"):
        api.zip_variant(onnx.id, tmp_path / "grown.zip")
    graph.unlink()
    with pytest.raises(InvalidInput, match="onnx/model.onnx is missing"):
        api.zip_variant(onnx.id)
    assert list(tmp_path.glob("*.zip*")) == [] and not list(tmp_path.glob(".*partial"))
    graph.write_bytes(original)  # put back: the download works again
    assert api.zip_variant(onnx.id, tmp_path / "ok.zip").path.is_file()
    with pytest.raises(InvalidInput, match="already exists"):
        api.zip_variant(onnx.id, tmp_path / "ok.zip")


def test_download_from_the_variants_tab_and_the_cli(variant, tmp_path, home):
    from workbench.tabs.variants import download_variant_zip

    root, onnx = variant
    status, download = download_variant_zip(str(onnx.id))
    assert status.startswith("✓") and download["visible"], status
    assert "onnx/model.onnx" in zipped_hashes(Path(download["value"]))
    assert download_variant_zip(None)[0].startswith("✗")
    Path(onnx.artifact_dir, "config.json").unlink()
    status, download = download_variant_zip(str(onnx.id))
    assert status.startswith("✗") and "config.json is missing" in status and not download["visible"]

    out = tmp_path / "root.zip"
    written = json.loads(run_cli("variants", "download", str(root.id), str(out), "--json").stdout)
    assert written["zip"] == str(out) and written["variant"] == root.id
    assert zipped_hashes(out)["model.safetensors"] == next(f["sha256"] for f in root.files if f["path"] == "model.safetensors")
    refused = run_cli("variants", "download", str(onnx.id), str(tmp_path / "onnx.zip"), check=False)
    assert refused.returncode == 2 and "config.json is missing" in refused.stderr and not (tmp_path / "onnx.zip").exists()
