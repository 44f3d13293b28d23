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

from jobs.intake.archives import extract_archive, is_archive, single_root
from jobs.intake.builtin import builtin_model
from jobs.registry import get_kind
from storage import catalog, files, settings
from storage.entities import Model, Variant
from storage.errors import InvalidInput
from storage.orm import SqlModel

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
SKIPPED_SUFFIXES = (".py", ".pyc", ".h5", ".msgpack", ".ot")  # remote code; TF / Flax / Rust weights we do not run
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "tokenizer*", "*.onnx"]
HUB_TIMEOUT_S = 15


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


def _copy_hf_dir(src: Path, dest: Path, allow_pickle: bool) -> tuple[str, list[str]]:
    """Copy a Hugging Face directory's usable files into `dest`. Returns (runtime, notes)."""
    notes: list[str] = []
    if not (src / "config.json").is_file():
        raise InvalidInput(f"{src.name}: no config.json; expected a Hugging Face model directory")
    try:
        config = json.loads((src / "config.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{src.name}/config.json is not valid JSON: {exc}") from None
    if not isinstance(config, dict) or "model_type" not in config:
        raise InvalidInput(f"{src.name}/config.json has no model_type; is this a transformers model?")
    if config.get("auto_map"):
        notes.append("config declares custom code (auto_map); it is ignored, remote code is never run")

    all_files = [p for p in src.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(src).parts)]
    safetensors = [p for p in all_files if p.suffix == ".safetensors"]
    onnx_files = [p for p in all_files if p.suffix == ".onnx"]
    pickles = [p for p in all_files if p.suffix in PICKLE_SUFFIXES]
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
    for path in all_files:
        rel = path.relative_to(src)
        if path.suffix in SKIPPED_SUFFIXES or (path.suffix in PICKLE_SUFFIXES and path not in pickles):
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)  # copyfile follows no metadata and writes regular files only
    if not any((dest / n).exists() for n in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "spiece.model")):
        notes.append("no tokenizer files found; text cannot be fed to this model until one is added")
    return ("onnxruntime" if onnx_files and not safetensors else "pytorch"), notes


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
            runtime, notes = _copy_hf_dir(builtin.path(), model_dir, request.allow_pickle)
        elif source.startswith("hub:") or (not Path(source).expanduser().exists() and HUB_ID.match(source) and "/" in source):
            repo_id = source.removeprefix("hub:")
            if not HUB_ID.match(repo_id):
                raise InvalidInput(f"{repo_id!r} is not a Hugging Face Hub ID (org/name)")
            kind, default_name = "hub", repo_id.split("/")[-1]
            download = stage / "download"
            _hub_download(repo_id, download)
            runtime, notes = _copy_hf_dir(download, model_dir, request.allow_pickle)
            source = repo_id
        else:
            path = Path(source).expanduser()
            if not path.exists():
                raise InvalidInput(f"{source}: no such file or directory (nor a built-in like builtin:minilm-l6)")
            if path.is_dir():
                kind, default_name = "local", path.name
                runtime, notes = _copy_hf_dir(path, model_dir, request.allow_pickle)
            elif path.suffix.lower() == ".onnx":
                _check_size(path)
                kind, default_name, runtime = "onnx", path.stem, "onnxruntime"
                _check_onnx(path)
                shutil.copyfile(path, model_dir / "model.onnx")
                notes.append("a single ONNX file has no tokenizer or config; it can be inspected and benchmarked")
            elif is_archive(path):
                _check_size(path)
                kind, default_name = "archive", re.sub(r"\.(zip|tar\.gz|tgz|tar)$", "", path.name, flags=re.I)
                extracted = stage / "extracted"
                extracted.mkdir()
                extract_archive(path, extracted)
                runtime, notes = _copy_hf_dir(single_root(extracted), model_dir, request.allow_pickle)
            else:
                raise InvalidInput(f"{path.name}: expected a model directory, a .zip / .tar.gz archive or a .onnx file")
            source = str(path.resolve()) if kind == "local" else path.name
        name = _unique_name(request.name or default_name, explicit=bool(request.name))
        entries = files.manifest(model_dir)
        sha = files.manifest_sha256(entries)
        artifact, created = files.commit_dir(model_dir, "models", sha)

    try:
        model, variant = catalog.create_model(
            name=name,
            source_kind=kind,
            source=source,
            allow_pickle=request.allow_pickle,
            variant=dict(
                name=f"{name} (original)",
                artifact_dir=str(artifact),
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
    from jobs.submit import submit

    submit("inspect", {}, variant=variant.id)
    return IntakeResult(model, variant, notes)


def _check_onnx(path: Path) -> None:
    import onnx

    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidInput(f"{path.name} is not a valid ONNX model: {first}") from None
