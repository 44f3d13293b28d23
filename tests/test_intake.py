"""Model and dataset intake: what is accepted is stored and hashed; what is refused leaves nothing behind."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from jobs.intake.datasets import DatasetRequest, add_dataset, load_split
from jobs.intake.models import ModelRequest, add_model
from storage import catalog, files, queue
from storage.errors import InvalidInput
from tests.conftest import stored_files
from tests.support import bombs


def assert_nothing_stored(home: Path):
    assert catalog.list_models() == [] and catalog.list_datasets() == [] and catalog.list_variants() == []
    assert queue.list_jobs() == []
    assert stored_files(home) == []


def _raw(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# ---- models -------------------------------------------------------------------------------------------------


def tiny_hf_dir(root: Path, weights: str = "model.safetensors") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    (root / weights).write_bytes(b"\0" * 64)
    (root / "vocab.txt").write_text("[PAD]\n[UNK]\n")
    return root


def test_builtin_model_is_copied_hashed_and_inspected_later(home, minilm_dir):
    result = add_model(ModelRequest("builtin:minilm-l6"))
    variant = result.variant
    assert result.model.name == "minilm-l6" and variant.runtime == "pytorch"
    stored = Path(variant.artifact_dir)
    assert stored.parent == home / "artifacts" / "models" and stored.name == variant.sha256
    weights = next(f for f in variant.files if f["path"] == "model.safetensors")
    assert weights["sha256"] == files.hash_file(minilm_dir / "model.safetensors")
    assert [j.kind for j in queue.list_jobs()] == ["inspect"]
    assert list((home / "staging").iterdir()) == []


def test_default_names_get_a_suffix_but_explicit_duplicates_are_refused(home, tmp_path):
    src = tiny_hf_dir(tmp_path / "tiny")
    assert add_model(ModelRequest(str(src))).model.name == "tiny"
    assert add_model(ModelRequest(str(src))).model.name == "tiny-2"
    with pytest.raises(InvalidInput, match="already exists"):
        add_model(ModelRequest(str(src), name="tiny"))


def test_pickle_only_checkpoints_are_refused_unless_allowed(home, tmp_path):
    src = tiny_hf_dir(tmp_path / "pickled", weights="pytorch_model.bin")
    with pytest.raises(InvalidInput, match="only pickle checkpoints"):
        add_model(ModelRequest(str(src)))
    assert_nothing_stored(home)
    result = add_model(ModelRequest(str(src), allow_pickle=True))
    assert result.model.allow_pickle and [f["path"] for f in result.variant.files if f["path"].endswith(".bin")]


def test_safetensors_are_preferred_and_code_files_dropped(home, tmp_path):
    src = tiny_hf_dir(tmp_path / "both")
    (src / "pytorch_model.bin").write_bytes(b"pickle")
    (src / "modeling_evil.py").write_text("import os")
    result = add_model(ModelRequest(str(src)))
    paths = {f["path"] for f in result.variant.files}
    assert "model.safetensors" in paths and "pytorch_model.bin" not in paths and "modeling_evil.py" not in paths
    assert any("safetensors preferred" in n for n in result.notes)


def _zip(path: Path, members: dict[str, bytes], symlink: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (0o120777 << 16)
            zf.writestr(info, "/etc/passwd")
    return path


def _tar(path: Path, members: dict[str, bytes], link: tuple[str, str, bytes] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        if link:
            info = tarfile.TarInfo(link[0])
            info.type = link[2]
            info.linkname = link[1]
            tf.addfile(info)
    return path


GOOD = {"m/config.json": json.dumps({"model_type": "bert"}).encode(), "m/model.safetensors": b"\0" * 8}


def onnx_bytes(external: str | None = None) -> bytes:
    """A one-MatMul ONNX graph; with `external`, its weight's data is said to live in that file."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    if external:
        weight.ClearField("raw_data")
        weight.data_location = TensorProto.EXTERNAL
        weight.external_data.add(key="location", value=external)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [weight])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


ONNX_CONFIG = {"m/config.json": GOOD["m/config.json"]}


def test_a_well_formed_archive_is_accepted(home, tmp_path):
    result = add_model(ModelRequest(str(_tar(tmp_path / "good.tar.gz", GOOD))))
    assert result.model.source_kind == "archive" and result.model.name == "good"
    assert {f["path"] for f in result.variant.files} == {"config.json", "model.safetensors"}


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda d: _zip(d / "abs.zip", {**GOOD, "/etc/cron.d/x": b"x"}), "absolute path"),
        (lambda d: _zip(d / "up.zip", {**GOOD, "m/../../escape.txt": b"x"}), r"climbs out"),
        (lambda d: _zip(d / "link.zip", GOOD, symlink="m/tokenizer.json"), "symbolic link"),
        (lambda d: _tar(d / "abs.tar.gz", {**GOOD, "/tmp/evil": b"x"}), "absolute path"),
        (lambda d: _tar(d / "up.tar.gz", {**GOOD, "../evil": b"x"}), "climbs out"),
        (lambda d: _tar(d / "sym.tar.gz", GOOD, link=("m/vocab.txt", "/etc/passwd", tarfile.SYMTYPE)), "is a link"),
        (lambda d: _tar(d / "hard.tar.gz", GOOD, link=("m/vocab.txt", "m/config.json", tarfile.LNKTYPE)), "is a link"),
        (lambda d: _tar(d / "dev.tar.gz", GOOD, link=("m/dev", "", tarfile.CHRTYPE)), "not a regular file"),
        (lambda d: _raw(d / "junk.zip", b"not a zip"), "not a valid zip"),
        (lambda d: _raw(d / "cut.tar.gz", _tar(d / "whole.tar.gz", GOOD).read_bytes()[:60]), "damaged tar|not a valid tar"),
        # a 300-character name: a clear refusal (it was "damaged zip" with a server path)
        (lambda d: _zip(d / "long.zip", {**GOOD, "m/" + "n" * 300 + ".txt": b"x"}), "a file or folder name of 304 characters"),
        (lambda d: _tar(d / "long.tar.gz", {**GOOD, "m/" + "n" * 300: b"x"}), "a file or folder name of 300 characters"),
        # bombs: refused before their expansion is written (ratio) or as they are read (a gzip'd tar)
        (lambda d: bombs.zip_of_zeros(d / "zeros.zip"), "'m/model.safetensors' expands more than 200 times"),
        (lambda d: bombs.tar_gz_of_zeros(d / "zeros.tar.gz"), "it expands more than 200 times"),
        (lambda d: bombs.tar_gz_of_zeros(d / "zeros.tar", compression="bz2"), "it expands more than 200 times"),
        (lambda d: bombs.overlapping_zip(d / "overlap.zip"), "members overlap"),
        (lambda d: bombs.zip_of_zeros(d / "liar.zip", 16 << 20, declared=1000), "damaged or unsupported zip"),
        # ONNX external data outside the model's folder is refused in an archive too (as for a single .onnx)
        (lambda d: _zip(d / "ext.zip", {**ONNX_CONFIG, "m/model.onnx": onnx_bytes("../../../../etc/hostname")}),
         "model.onnx refused: tensor 'w' keeps its data in '../../../../etc/hostname', outside the model's folder"),
        (lambda d: _tar(d / "abs-ext.tar.gz", {**ONNX_CONFIG, "m/onnx/model.onnx": onnx_bytes("/etc/hostname")}),
         "onnx/model.onnx refused: .* outside the model's folder"),
        (lambda d: _zip(d / "gone.zip", {**ONNX_CONFIG, "m/model.onnx": onnx_bytes("model.onnx_data")}),
         "keeps its data in 'model.onnx_data', which is not in the model"),
    ],
)
def test_hostile_archives_are_refused_and_leave_nothing(home, tmp_path, make, reason):
    archive = make(tmp_path)
    with pytest.raises(InvalidInput, match=reason) as refused:
        add_model(ModelRequest(str(archive)))
    message = str(refused.value)
    assert "\n" not in message and str(home) not in message and str(tmp_path) not in message  # one line, no paths
    assert_nothing_stored(home)
    assert not (tmp_path / "escape.txt").exists()


def test_onnx_files_in_an_archive_are_checked_and_kept_when_sound(home, tmp_path):
    weights = onnx_bytes()
    result = add_model(ModelRequest(str(_zip(tmp_path / "onnx.zip", {**ONNX_CONFIG, "m/model.onnx": weights}))))
    assert result.variant.runtime == "onnxruntime" and {f["path"] for f in result.variant.files} == {"config.json", "model.onnx"}
    # a single .onnx whose data lives in another file is refused: only the .onnx itself would be stored
    single = _raw(tmp_path / "split.onnx", onnx_bytes("split.onnx.data"))
    with pytest.raises(InvalidInput, match="keeps tensor 'w' in another file"):
        add_model(ModelRequest(str(single)))


def test_suffixes_are_compared_in_any_case(home, tmp_path):
    src = tiny_hf_dir(tmp_path / "shouty", weights="MODEL.SAFETENSORS")
    (src / "pytorch_model.BIN").write_bytes(b"pickle")
    (src / "MODELING_EVIL.PY").write_text("import os")
    (src / "Helper.Py").write_text("import os")
    result = add_model(ModelRequest(str(src)))
    assert {f["path"] for f in result.variant.files} == {"config.json", "MODEL.SAFETENSORS", "vocab.txt"}
    assert any("skipped pickle checkpoint(s) pytorch_model.BIN" in n for n in result.notes)
    pickled = tiny_hf_dir(tmp_path / "pickled", weights="pytorch_model.BIN")
    with pytest.raises(InvalidInput, match=r"only pickle checkpoints \(pytorch_model.BIN\)"):
        add_model(ModelRequest(str(pickled)))


def test_model_directories_and_tokenizers_are_bounded_in_size(home, tmp_path, monkeypatch):
    src = tiny_hf_dir(tmp_path / "big")
    (src / "model.safetensors").write_bytes(b"\0" * (2 << 20))
    monkeypatch.setenv("WORKBENCH_MAX_EXTRACTED_MB", "1")
    with pytest.raises(InvalidInput, match=r"big holds 2.0 MiB of model files; the limit is 1 MiB \(WORKBENCH_MAX_EXTRACTED_MB\)"):
        add_model(ModelRequest(str(src)))
    monkeypatch.delenv("WORKBENCH_MAX_EXTRACTED_MB")
    (src / "tokenizer.json").write_bytes(b" " * (2 << 20))
    monkeypatch.setenv("WORKBENCH_MAX_TOKENIZER_MB", "1")
    with pytest.raises(InvalidInput, match=r"big/tokenizer.json is 2.0 MiB; .* at most 1 MiB \(WORKBENCH_MAX_TOKENIZER_MB\)"):
        add_model(ModelRequest(str(src)))
    (src / "tokenizer.json").unlink()
    (src / "config.json").write_bytes(json.dumps({"model_type": "bert", "pad": " " * (2 << 20)}).encode())
    with pytest.raises(InvalidInput, match=r"big/config.json is 2.0 MiB"):
        add_model(ModelRequest(str(src)))
    assert_nothing_stored(home)


def test_archives_over_the_size_limits_are_refused(home, tmp_path, monkeypatch):
    big = {**GOOD, "m/big.safetensors": b"\0" * (2 << 20)}
    monkeypatch.setenv("WORKBENCH_MAX_EXTRACTED_MB", "1")
    with pytest.raises(InvalidInput, match="expands to more than 1 MiB"):
        add_model(ModelRequest(str(_zip(tmp_path / "bomb.zip", big))))
    monkeypatch.setenv("WORKBENCH_MAX_UPLOAD_MB", "0")
    with pytest.raises(InvalidInput, match="the limit is 0 MiB"):
        add_model(ModelRequest(str(_zip(tmp_path / "small.zip", GOOD))))
    assert_nothing_stored(home)


def test_directories_without_a_config_or_weights_are_refused(home, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInput, match="no config.json"):
        add_model(ModelRequest(str(tmp_path / "empty")))
    cfg_only = tmp_path / "cfg"
    cfg_only.mkdir()
    (cfg_only / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(InvalidInput, match="no weights"):
        add_model(ModelRequest(str(cfg_only)))
    assert_nothing_stored(home)


def test_hub_ids_fail_clearly_offline(home):
    with pytest.raises(InvalidInput, match="HF_HUB_OFFLINE"):
        add_model(ModelRequest("hub:google-bert/bert-base-uncased"))
    assert_nothing_stored(home)


def test_a_broken_onnx_file_is_refused(home, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"definitely not protobuf")
    with pytest.raises(InvalidInput, match="not a valid ONNX model"):
        add_model(ModelRequest(str(bad)))
    assert_nothing_stored(home)


# ---- datasets -----------------------------------------------------------------------------------------------


def sample_frame(n_per_class: int = 20, labels=("pos", "neg")) -> pd.DataFrame:
    rows = [{"sentence": f"example {i} of {label}", "polarity": label} for label in labels for i in range(n_per_class)]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("suffix", ["csv", "jsonl", "parquet"])
def test_uploads_are_read_mapped_and_split_deterministically(home, tmp_path, suffix):
    path = tmp_path / f"reviews.{suffix}"
    frame = sample_frame(30, ("pos", "neg", "neutral"))
    {"csv": lambda: frame.to_csv(path, index=False), "jsonl": lambda: frame.to_json(path, orient="records", lines=True),
     "parquet": lambda: frame.to_parquet(path)}[suffix]()
    ds = add_dataset(DatasetRequest(str(path), text_column="sentence", label_column="polarity", seed=7))
    assert ds.num_rows == 90 and ds.labels == ["neg", "neutral", "pos"] and ds.split_seed == 7
    assert ds.split_sizes == {"train": 72, "validation": 9, "test": 9}
    test_split = load_split(ds, "test")
    assert sorted(test_split["label"].value_counts().to_dict().values()) == [3, 3, 3]  # stratified
    again = add_dataset(DatasetRequest(str(path), name="again", text_column="sentence", label_column="polarity", seed=7))
    assert again.sha256 == ds.sha256  # same seed, same split, same stored bytes
    other = add_dataset(DatasetRequest(str(path), name="other", text_column="sentence", label_column="polarity", seed=8))
    assert other.sha256 != ds.sha256


def test_columns_are_guessed_when_not_given(home, tmp_path):
    path = tmp_path / "guess.csv"
    sample_frame().rename(columns={"sentence": "text", "polarity": "label"}).to_csv(path, index=False)
    ds = add_dataset(DatasetRequest(str(path)))
    assert (ds.text_column, ds.label_column) == ("text", "label")


def _write(path: Path, frame: pd.DataFrame) -> Path:
    frame.to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    "make, columns, reason",
    [
        (lambda d: _write(d / "f.csv", sample_frame()), ("body", "polarity"), "text column 'body' not found; the file has: sentence, polarity"),
        (lambda d: _write(d / "f.csv", sample_frame().assign(sentence="")), ("sentence", "polarity"), "text column 'sentence' is empty"),
        (lambda d: _write(d / "f.csv", sample_frame().assign(polarity="")), ("sentence", "polarity"), "label column 'polarity' is empty"),
        (lambda d: _write(d / "f.csv", pd.concat([sample_frame(), pd.DataFrame([{"sentence": "  ", "polarity": "pos"}])])),
         ("sentence", "polarity"), "1 row.* empty text"),
        (lambda d: _write(d / "f.csv", sample_frame(labels=("pos",))), ("sentence", "polarity"), "single class"),
        (lambda d: _write(d / "f.csv", pd.concat([sample_frame(), sample_frame(3, ("rare",))])), ("sentence", "polarity"), "'rare' \\(3\\)"),
        (lambda d: _write(d / "f.csv", pd.DataFrame({"sentence": [f"t{i}" for i in range(300)], "polarity": [f"l{i}" for i in range(300)]})),
         ("sentence", "polarity"), "300 distinct values"),
        (lambda d: _raw(d / "f.csv", "sentence,polarity\ncaf\xe9,pos\n".encode("latin-1")),
         ("sentence", "polarity"), "not UTF-8 text \\(byte 0xe9 on line 2\\)"),
        (lambda d: _raw(d / "f.csv", b""), ("sentence", "polarity"), "is empty"),
        (lambda d: _raw(d / "f.xlsx", b"x"), ("sentence", "polarity"), "unsupported file type"),
        (lambda d: _raw(d / "f.jsonl", b'{"sentence": "a"\n'), ("sentence", "polarity"), "could not be read as jsonl"),
        # Parquet text that is not UTF-8 (binary, or a string column holding other bytes): one line, not a traceback
        (lambda d: _parquet(d / "f.parquet", binary=True), ("sentence", "polarity"),
         "text column 'sentence' holds bytes that are not UTF-8 text \\(40 row\\(s\\), the first is data row 1\\)"),
        (lambda d: _parquet(d / "f.parquet", binary=False), ("sentence", "polarity"), "holds bytes that are not UTF-8"),
        # bombs and bounds
        (lambda d: bombs.parquet_bomb(d / "f.parquet"), ("text", "label"),
         "f.parquet decodes to more than 200 MiB \\(WORKBENCH_MAX_DATASET_MB\\)"),
        (lambda d: bombs.parquet_bomb(d / "f.parquet", rows=20_000, value_chars=50_000), ("text", "label"),
         "decodes to more than 200 MiB"),
        (lambda d: _raw(d / "f.jsonl", "\n".join(json.dumps({"sentence": "s" * (150_000 if i == 4 else 5), "polarity": i % 2})
                                                  for i in range(40)).encode()), ("sentence", "polarity"),
         "f.jsonl: data row 5, column 'sentence', holds 150,000 characters; a cell may hold at most 100,000 "
         "\\(WORKBENCH_MAX_TEXT_FIELD_CHARS\\)"),
    ],
)
def test_malformed_datasets_are_refused_clearly_and_leave_nothing(home, tmp_path, make, columns, reason):
    path = make(tmp_path)
    with pytest.raises(InvalidInput, match=reason) as refused:
        add_dataset(DatasetRequest(str(path), text_column=columns[0], label_column=columns[1]))
    assert "\n" not in str(refused.value)
    assert_nothing_stored(home)


def _parquet(path: Path, binary: bool) -> Path:
    """40 rows whose text is not UTF-8: a binary column, or a string column holding other bytes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    text = pa.array([b"\xff\xfe caf\xe9 %d" % i for i in range(40)], pa.binary())
    pq.write_table(pa.table({"sentence": text if binary else text.view(pa.string()), "polarity": ["a", "b"] * 20}), path)
    return path


@pytest.mark.parametrize("suffix", ["csv", "jsonl", "parquet"])
def test_rows_and_cells_are_bounded_before_the_table_is_held(home, tmp_path, monkeypatch, suffix):
    path = tmp_path / f"f.{suffix}"
    frame = sample_frame(30)  # 60 rows
    frame.loc[2, "sentence"] = "x" * 150
    {"csv": lambda: frame.to_csv(path, index=False), "jsonl": lambda: frame.to_json(path, orient="records", lines=True),
     "parquet": lambda: frame.to_parquet(path)}[suffix]()
    monkeypatch.setenv("WORKBENCH_MAX_DATASET_ROWS", "59")
    with pytest.raises(InvalidInput, match=f"f.{suffix} has more than 59 rows \\(WORKBENCH_MAX_DATASET_ROWS\\)"):
        add_dataset(DatasetRequest(str(path)))
    monkeypatch.setenv("WORKBENCH_MAX_DATASET_ROWS", "60")
    monkeypatch.setenv("WORKBENCH_MAX_TEXT_FIELD_CHARS", "100")
    with pytest.raises(InvalidInput, match="data row 3, column 'sentence', holds 150 characters; a cell may hold at most 100"):
        add_dataset(DatasetRequest(str(path)))
    assert_nothing_stored(home)
    monkeypatch.setenv("WORKBENCH_MAX_TEXT_FIELD_CHARS", "150")
    assert add_dataset(DatasetRequest(str(path), label_column="polarity")).num_rows == 60


def test_a_parquet_footer_over_the_limits_is_refused_before_any_data_is_read(home, tmp_path, monkeypatch):
    from jobs.intake.datasets import peek_columns

    path = tmp_path / "plain.parquet"
    frame = sample_frame(30).assign(sentence=lambda f: f["sentence"] + " " + "z" * 40_000)  # 2.4 MB, compresses well
    frame.to_parquet(path, compression="zstd", use_dictionary=False)
    assert path.stat().st_size < 100_000
    assert peek_columns(path) == ["sentence", "polarity"]
    monkeypatch.setenv("WORKBENCH_MAX_DATASET_MB", "1")
    for call in (lambda: peek_columns(path), lambda: add_dataset(DatasetRequest(str(path)))):
        with pytest.raises(InvalidInput, match="plain.parquet decodes to more than 1 MiB"):
            call()
    monkeypatch.setenv("WORKBENCH_MAX_DATASET_MB", "200")
    monkeypatch.setenv("WORKBENCH_MAX_DATASET_ROWS", "10")
    with pytest.raises(InvalidInput, match="more than 10 rows"):
        peek_columns(path)
    assert_nothing_stored(home)


def test_columns_are_peeked_from_the_head_of_a_text_file(home, tmp_path):
    from jobs.intake.datasets import peek_columns

    csv_path = _write(tmp_path / "f.csv", sample_frame())
    assert peek_columns(csv_path) == ["sentence", "polarity"]
    jsonl = _raw(tmp_path / "f.jsonl", b'{"a": 1, "b": "x"}\n{"a": 2, "c": "y"}\n')
    assert peek_columns(jsonl) == ["a", "b", "c"]
    with pytest.raises(InvalidInput, match="not UTF-8 text \\(byte 0xe9 on line 2\\)"):
        peek_columns(_raw(tmp_path / "l.csv", "text,label\ncaf\xe9,pos\n".encode("latin-1")))
    with pytest.raises(InvalidInput, match="first line is longer than 1 MiB"):
        peek_columns(_raw(tmp_path / "wide.jsonl", b'{"text": "' + b"w" * (2 << 20) + b'"}\n'))


def test_split_seed_must_be_in_range(home, tmp_path):
    path = _write(tmp_path / "f.csv", sample_frame())
    with pytest.raises(InvalidInput, match="split seed must be between 0"):
        add_dataset(DatasetRequest(str(path), seed=-1))
    assert_nothing_stored(home)


def test_oversize_dataset_files_are_refused(home, tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_MAX_DATASET_MB", "0")
    path = _write(tmp_path / "f.csv", sample_frame())
    with pytest.raises(InvalidInput, match="the limit is 0 MiB"):
        add_dataset(DatasetRequest(str(path)))
    assert_nothing_stored(home)


@pytest.mark.parametrize("name, n_labels", [("tweet-sentiment", 3), ("bbc-topics", 5)])
def test_builtin_datasets_load_offline(home, name, n_labels):
    ds = add_dataset(DatasetRequest(f"builtin:{name}"))
    assert len(ds.labels) == n_labels and ds.num_rows > 2000
    assert sum(ds.split_sizes.values()) == ds.num_rows
