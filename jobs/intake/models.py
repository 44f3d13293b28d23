"""Model intake: the built-in catalog, a local Hugging Face directory, an uploaded archive, a single .onnx
file, or a Hugging Face Hub ID.

Safetensors are preferred; pickle checkpoints (.bin / .pt / .ckpt / .pkl) are refused unless the user allows
them, and then only ever loaded with `weights_only=True`. Remote code is never run: `.py` files are not kept.
Every stored file is hashed (sha256). On any refusal nothing is left behind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from jobs.intake.archives import budget, copy_file_limited, extract_archive, is_archive, single_root
from jobs.intake.builtin import builtin_model
from jobs.runner.registry import get_kind
from jobs.tasks import DEFAULT_TASK, task_of_config
from storage import catalog, files, settings, shared_artifacts
from storage.entities import Model, Variant
from storage.errors import InvalidInput
from storage.orm import SqlModel

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
SKIPPED_SUFFIXES = (".py", ".pyc", ".h5", ".msgpack", ".ot")  # remote code; TF / Flax / Rust weights we do not run
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "tokenizer*", "*.onnx"]
HUB_TIMEOUT_S = 15
# Config and tokenizer files: read whole into memory when a model loads, so they are bounded by
# WORKBENCH_MAX_TOKENIZER_MB (names compared in lower case).
TOKENIZER_FILES = re.compile(r"^(config\.json|generation_config\.json|tokenizer.*|vocab.*|merges\.txt|"
                             r"special_tokens_map\.json|added_tokens\.json|preprocessor_config\.json|.*\.model)$")


@dataclass(frozen=True)
class ModelRequest:
    source: str  # builtin:<name> | path to a dir, archive or .onnx | hub:<org/name> | <org/name>
    name: str | None = None
    allow_pickle: bool = False


@dataclass(frozen=True)
class IntakeResult:
    model: Model
    variant: Variant
    notes: list[str]


def _check_size(path: Path) -> None:
    limit_mb = settings.get("WORKBENCH_MAX_UPLOAD_MB")
    size = path.stat().st_size
    if size > limit_mb << 20:
        raise InvalidInput(f"{path.name} is {size / (1 << 20):.0f} MiB; the limit is {limit_mb} MiB (WORKBENCH_MAX_UPLOAD_MB)")


def _mib(n: int) -> str:
    return f"{n / (1 << 20):,.1f} MiB"


def _check_tokenizer_size(path: Path, shown: str) -> None:
    limit_mb = settings.get("WORKBENCH_MAX_TOKENIZER_MB")
    size = path.stat().st_size
    if size > limit_mb << 20:
        raise InvalidInput(
            f"{shown} is {_mib(size)}; config and tokenizer files may be at most {limit_mb} MiB (WORKBENCH_MAX_TOKENIZER_MB)"
        )


def _copy_hf_dir(src: Path, dest: Path, allow_pickle: bool) -> tuple[str, str, list[str]]:
    """Copy a Hugging Face directory's usable files into `dest`. Returns (runtime, task, notes).

    The task is recognised from config.json (jobs.tasks); a model no task can take is refused before anything
    is copied.

    Suffixes are compared in lower case (`pytorch_model.BIN` is a pickle, `MODELING.PY` is code). What is copied
    is bounded by WORKBENCH_MAX_EXTRACTED_MB, counted as it is written; config and tokenizer files by
    WORKBENCH_MAX_TOKENIZER_MB; every .onnx file is checked, its external data included.
    """
    notes: list[str] = []
    if not (src / "config.json").is_file():
        raise InvalidInput(f"{src.name}: no config.json; expected a Hugging Face model directory")
    _check_tokenizer_size(src / "config.json", f"{src.name}/config.json")
    try:
        config = json.loads((src / "config.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{src.name}/config.json is not valid JSON: {exc}") from None
    if not isinstance(config, dict) or "model_type" not in config:
        raise InvalidInput(f"{src.name}/config.json has no model_type; is this a transformers model?")
    task = task_of_config(config, shown=src.name).name
    if config.get("auto_map"):
        notes.append("config declares custom code (auto_map); it is ignored, remote code is never run")

    all_files = [p for p in src.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(src).parts)]
    safetensors = [p for p in all_files if p.suffix.lower() == ".safetensors"]
    onnx_files = [p for p in all_files if p.suffix.lower() == ".onnx"]
    pickles = [p for p in all_files if p.suffix.lower() in PICKLE_SUFFIXES]
    if not safetensors and not onnx_files and not pickles:
        raise InvalidInput(f"{src.name}: no weights found (.safetensors, .onnx)")
    if pickles and (safetensors or onnx_files):
        notes.append(f"safetensors preferred: skipped pickle checkpoint(s) {', '.join(p.name for p in pickles)}")
        pickles = []
    elif pickles and not allow_pickle:
        raise InvalidInput(
            f"{src.name} holds only pickle checkpoints ({', '.join(p.name for p in pickles)}), which can run code "
            f"when loaded; convert to safetensors, or allow pickle explicitly (they are then loaded with weights_only)"
        )
    kept = [p for p in all_files
            if not (p.suffix.lower() in SKIPPED_SUFFIXES or (p.suffix.lower() in PICKLE_SUFFIXES and p not in pickles))]
    for path in kept:
        if TOKENIZER_FILES.match(path.name.lower()):
            _check_tokenizer_size(path, f"{src.name}/{path.relative_to(src)}")
    limit_mb = settings.get("WORKBENCH_MAX_EXTRACTED_MB")
    declared = sum(p.stat().st_size for p in kept)
    if declared > limit_mb << 20:
        raise InvalidInput(f"{src.name} holds {_mib(declared)} of model files; the limit is {limit_mb} MiB "
                           f"(WORKBENCH_MAX_EXTRACTED_MB)")
    written = budget(limit_mb << 20)
    for path in kept:
        # Regular files only, counted as they are written (a file that grows while it is copied is still bounded).
        copy_file_limited(path, dest / path.relative_to(src), written)
    for path in dest.rglob("*"):
        if path.is_file() and path.suffix.lower() == ".onnx":
            _check_onnx_external(path, path.relative_to(dest).as_posix())
            _check_onnx(path, shown=path.relative_to(dest).as_posix())
    if not any((dest / n).exists() for n in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "spiece.model")):
        notes.append("no tokenizer files found; text cannot be fed to this model until one is added")
    return ("onnxruntime" if onnx_files and not safetensors else "pytorch"), task, notes


def _hub_download(repo_id: str, dest: Path) -> None:
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        raise InvalidInput(
            f"cannot download {repo_id!r}: HF_HUB_OFFLINE is set; use builtin:minilm-l6, a local directory or an archive"
        )
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        snapshot_download(repo_id, local_dir=dest, allow_patterns=HUB_PATTERNS, etag_timeout=HUB_TIMEOUT_S)
    except GatedRepoError:
        raise InvalidInput(f"{repo_id!r} is gated on the Hugging Face Hub; log in with a token that has access") from None
    except RepositoryNotFoundError:
        raise InvalidInput(f"{repo_id!r} was not found on the Hugging Face Hub (or is private)") from None
    except Exception as exc:  # connection errors, timeouts, and "offline and not in the local cache"
        name = type(exc).__name__
        raise InvalidInput(
            f"could not download {repo_id!r} from the Hugging Face Hub (offline or unreachable: {name}); "
            f"use builtin:minilm-l6, a local directory or an archive"
        ) from None


def _unique_name(base: str, explicit: bool) -> str:
    base = base.strip()
    if not base:
        raise InvalidInput("the model needs a name")
    if not catalog.name_taken(SqlModel, base):
        return base
    if explicit:
        raise InvalidInput(f"a model named {base!r} already exists; choose another name")
    n = 2
    while catalog.name_taken(SqlModel, f"{base}-{n}"):
        n += 1
    return f"{base}-{n}"


def add_model(request: ModelRequest) -> IntakeResult:
    """Store a model and its root variant, and queue an `inspect` job for it."""
    source = (request.source or "").strip()
    if not source:
        raise InvalidInput("give a model source: builtin:minilm-l6, a directory, an archive, a .onnx file or a hub ID")
    get_kind("inspect")  # fail before anything is stored if the job registry cannot load
    notes: list[str] = []
    with files.staging("model") as stage:
        model_dir = stage / "model"
        model_dir.mkdir()
        if source.startswith("builtin:"):
            builtin = builtin_model(source.removeprefix("builtin:"))
            kind, default_name = "builtin", builtin.name
            runtime, task, notes = _copy_hf_dir(builtin.path(), model_dir, request.allow_pickle)
        elif source.startswith("hub:") or (not Path(source).expanduser().exists() and HUB_ID.match(source) and "/" in source):
            repo_id = source.removeprefix("hub:")
            if not HUB_ID.match(repo_id):
                raise InvalidInput(f"{repo_id!r} is not a Hugging Face Hub ID (org/name)")
            kind, default_name = "hub", repo_id.split("/")[-1]
            download = stage / "download"
            _hub_download(repo_id, download)
            runtime, task, notes = _copy_hf_dir(download, model_dir, request.allow_pickle)
            source = repo_id
        else:
            path = Path(source).expanduser()
            if not path.exists():
                raise InvalidInput(f"{source}: no such file or directory (nor a built-in like builtin:minilm-l6)")
            if path.is_dir():
                kind, default_name = "local", path.name
                runtime, task, notes = _copy_hf_dir(path, model_dir, request.allow_pickle)
            elif path.suffix.lower() == ".onnx":
                _check_size(path)
                kind, default_name, runtime, task = "onnx", path.stem, "onnxruntime", DEFAULT_TASK  # no config to ask
                _check_onnx_external(path, path.name, single=True)
                _check_onnx(path)
                shutil.copyfile(path, model_dir / "model.onnx")
                notes.append("a single ONNX file has no tokenizer or config; it can be inspected and benchmarked")
            elif is_archive(path):
                _check_size(path)
                kind, default_name = "archive", re.sub(r"\.(zip|tar\.gz|tgz|tar)$", "", path.name, flags=re.I)
                extracted = stage / "extracted"
                extracted.mkdir()
                extract_archive(path, extracted)
                runtime, task, notes = _copy_hf_dir(single_root(extracted), model_dir, request.allow_pickle)
            else:
                raise InvalidInput(f"{path.name}: expected a model directory, a .zip / .tar.gz archive or a .onnx file")
            source = str(path.resolve()) if kind == "local" else path.name
        name = _unique_name(request.name or default_name, explicit=bool(request.name))
        entries = files.manifest(model_dir)
        sha = files.manifest_sha256(entries)
        artifact, created = files.commit_dir(model_dir, "models", sha, entries)

    try:
        model, variant = catalog.create_model(
            name=name,
            source_kind=kind,
            source=source,
            allow_pickle=request.allow_pickle,
            task=task,
            variant=dict(
                name=f"{name} (original)",
                artifact_dir=shared_artifacts.key("models", sha),  # found by kind and sha256 on every node
                runtime=runtime,
                precision="fp32",
                recipe={"steps": [{"kind": "intake", "source_kind": kind, "source": source}]},
                files=entries,
                sha256=sha,
                size_bytes=sum(e["size"] for e in entries),
            ),
        )
    except Exception:
        if created:
            files.remove_artifact(artifact)
        raise
    from jobs.runner.submit import submit

    submit("inspect", {}, variant=variant.id)
    return IntakeResult(model, variant, notes)


def _check_onnx(path: Path, shown: str | None = None) -> None:
    import onnx

    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        first = first.replace(str(path.parent), "<model folder>")  # no server paths in messages
        raise InvalidInput(f"{shown or path.name} is not a valid ONNX model: {first}") from None


def _onnx_tensors(graph):
    """Every tensor of a graph, its subgraphs' included (initializers, sparse initializers, attribute tensors)."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _onnx_tensors(attr.g)
            for sub in attr.graphs:
                yield from _onnx_tensors(sub)


def _check_onnx_external(path: Path, shown: str, single: bool = False) -> None:
    """Refuse an ONNX file whose tensors keep their data outside its own folder (or, for a single uploaded
    .onnx, in any other file: only the .onnx itself is stored)."""
    import onnx
    from onnx import TensorProto

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:
        return  # not parseable: the checker that follows says so
    root = path.parent.resolve()
    for tensor in _onnx_tensors(model.graph):
        if tensor.data_location != TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        if single:
            raise InvalidInput(f"{shown} keeps tensor {tensor.name!r} in another file ({location!r}); "
                               f"upload the model folder as a .zip or .tar.gz instead")
        target = (root / location).resolve()
        if (not location or location.startswith(("/", "\\")) or ".." in Path(location.replace("\\", "/")).parts
                or not target.is_relative_to(root)):
            raise InvalidInput(f"{shown} refused: tensor {tensor.name!r} keeps its data in {location!r}, "
                               f"outside the model's folder")
        if not target.is_file():
            raise InvalidInput(f"{shown} refused: tensor {tensor.name!r} keeps its data in {location!r}, "
                               f"which is not in the model")
