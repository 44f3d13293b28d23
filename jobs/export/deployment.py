"""Export one variant as a deployment bundle: a model server that runs without the workbench.

`export_deployment(variant, directory)` writes

    model/               the variant's files, each checked against the sha256 stored when it was made
    deployment.json      the variant as the server describes it, with the file list it verifies at /ready
    bundle_server/       the workbench's own server (jobs/serving: app, batcher, metrics; the runtime; input
                         checks), copied by `vendor` with its imports redirected: `python -m bundle_server`
    requirements.txt     what that code imports and everything those need, pinned to the versions here
    Dockerfile           slim Python, non-root, HEALTHCHECK on /health (written and checked, not built here)
    k8s/                 Deployment (probes on /health and /ready, resources, non-root, the API key from a
                         Secret), Service, HorizontalPodAutoscaler
    README.md            what it is (variant, sha256, labels, runtime, lineage) and how to run it
    SHA256SUMS           every file above: `sha256sum -c SHA256SUMS`

into a staging directory beside the target and renames it into place at the end, so a refusal or a failure
leaves nothing half-written. A non-empty target is refused unless `force` (then only the target is replaced).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from jobs.export import deployment_files as bundle_files
from jobs.export.space import _accuracy_text, _check_target, _step_text, files_in, staged
from jobs.export.vendor import vendor
from jobs.runtimes import get_runtime
from jobs.serving.standalone import MANIFEST, manifest_for
from jobs.tasks import text_classification
from storage import catalog, settings
from storage.entities import Variant
from storage.errors import InvalidInput
from storage.files import CHUNK
from storage.shared_artifacts import ensure_variant

PACKAGE = "bundle_server"
MODEL_DIR = "model"
CHECKSUMS = "SHA256SUMS"
SERVER_ROOT = "jobs.serving.standalone"  # the server's entry; `vendor` follows what it imports
RUNTIME_PACKAGE = "jobs.runtimes."
DISK_MARGIN = 64 << 20  # bytes beyond the model the bundle's other files and a zip of it may need
MAX_REPLICAS = 100  # a bound on a typo, not on Kubernetes
NAME_MAX = 63  # a DNS-1123 label: Kubernetes object names and the image name
HEADER = ("# Part of a deployment bundle exported by the Transformer Deployment Workbench (export-deployment):\n"
          "# a copy of the workbench's source with its imports redirected to this package. Do not edit here.")
MAIN = '''"""Start this bundle's model server: `python -m bundle_server --help`."""

import sys
from pathlib import Path

from bundle_server.jobs.serving.standalone import main

sys.exit(main(manifest=Path(__file__).resolve().parent.parent / "deployment.json"))
'''


@dataclass(frozen=True)
class DeploymentExport:
    directory: Path
    variant_id: int
    runtime: str
    name: str  # of the Kubernetes objects and the image
    files: list[str]  # written, relative to `directory`
    model_bytes: int
    requirements: list[str]
    vendored: list[str] = field(default_factory=list)  # workbench modules copied into bundle_server/


# ---- checks ------------------------------------------------------------------------------------------------


def object_name(text: str, variant_id: int) -> str:
    """A DNS-1123 label from a name (lower case letters, digits, '-'; at most 63), ending in the variant id."""
    suffix = f"-v{variant_id}"
    base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[: NAME_MAX - len(suffix)].strip("-")
    return f"{base or 'variant'}{suffix}"


def _checked_name(name: str | None, default: str) -> str:
    if name is None or not name.strip():
        return default
    name = name.strip()
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", name):
        raise InvalidInput(f"name {name!r} is not a Kubernetes name: lower case letters, digits and '-', "
                           "at most 63, starting and ending with a letter or digit", inputs=("name",))
    return name


def _runtime_module(variant: Variant) -> str:
    runtime = get_runtime(variant.runtime)
    if not runtime.exportable:
        raise InvalidInput(f"variant {variant.id} ({runtime.display_name}) cannot be exported: {runtime.not_exportable}")
    module = runtime.load.__module__
    if not module.startswith(RUNTIME_PACKAGE):
        raise InvalidInput(f"variant {variant.id}'s runtime {variant.runtime!r} comes from the plugin {module}; "
                           "a bundle carries only the workbench's own runtimes")
    return module


def _labels(variant: Variant) -> list[str]:
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(variant.artifact_dir, trust_remote_code=False, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"variant {variant.id} has no readable config.json ({exc}); cannot name its labels") from None
    if not text_classification.has_head(config):
        raise InvalidInput(f"variant {variant.id} has no classification head: fine-tune it first and export the "
                           "fine-tuned variant")
    return text_classification.labels(config)


def _check_size(variant: Variant, target: Path) -> int:
    """The model's bytes; refused beyond WORKBENCH_MAX_EXTRACTED_MB (what intake lets a model take on disk) or
    beyond the free space where the bundle goes."""
    if not variant.files:
        raise InvalidInput(f"variant {variant.id} has no recorded files to export")
    size = sum(int(entry["size"]) for entry in variant.files)
    limit_mb = settings.get("WORKBENCH_MAX_EXTRACTED_MB")
    if size > limit_mb * (1 << 20):
        raise InvalidInput(f"variant {variant.id} is {size / (1 << 20):,.0f} MiB; a bundle holds at most "
                           f"{limit_mb:,} MiB of model files (WORKBENCH_MAX_EXTRACTED_MB)")
    free = shutil.disk_usage(target.parent).free
    if size + DISK_MARGIN > free:
        raise InvalidInput(f"{target.parent} has {free / (1 << 20):,.0f} MiB free; the bundle needs about "
                           f"{(size + DISK_MARGIN) / (1 << 20):,.0f} MiB")
    return size


# ---- the files ---------------------------------------------------------------------------------------------


def _copy_model(variant: Variant, target: Path) -> None:
    """Every stored file of the variant (what /ready verifies), each read once: hashed while it is copied and
    refused when it is not what was stored. Symlinks and paths leaving the variant's directory are refused."""
    root = Path(variant.artifact_dir)
    resolved_root = root.resolve()
    for entry in variant.files:
        relative = PurePosixPath(entry["path"])
        if relative.is_absolute() or ".." in relative.parts:
            raise InvalidInput(f"variant {variant.id}: its file list names {entry['path']!r}, outside its directory")
        source = root / relative
        if source.is_symlink() or resolved_root not in source.resolve().parents:
            raise InvalidInput(f"variant {variant.id}: {entry['path']} is a symlink or leads outside its directory; "
                               "a bundle copies regular files only")
        try:
            info = source.lstat()
        except FileNotFoundError:
            raise InvalidInput(f"variant {variant.id}: {entry['path']} is missing from its directory") from None
        if not stat.S_ISREG(info.st_mode):
            raise InvalidInput(f"variant {variant.id}: {entry['path']} is not a regular file")
        changed = f"variant {variant.id}: {entry['path']} changed since the variant was made; not exported"
        if info.st_size != entry["size"]:
            raise InvalidInput(f"{changed} (size {info.st_size:,} bytes, recorded {entry['size']:,})")
        out = target / relative
        out.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        with open(source, "rb") as src, open(out, "xb") as dst:
            for block in iter(lambda: src.read(CHUNK), b""):
                digest.update(block)
                dst.write(block)
        if digest.hexdigest() != entry["sha256"]:
            raise InvalidInput(f"{changed} (sha256 differs from the recorded one)")


def _compile_all(directory: Path) -> None:
    """Every copied module parses: a copy that does not is a bug of the copier, found here and not in production."""
    for path in sorted(directory.rglob("*.py")):
        compile(path.read_text(encoding="utf-8"), str(path), "exec")


def _checksums(directory: Path) -> str:
    lines = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        name = path.relative_to(directory).as_posix()
        if name == CHECKSUMS:
            continue
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(CHUNK), b""):
                digest.update(block)
        lines.append(f"{digest.hexdigest()}  {name}\n")
    return "".join(lines)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _requirements(libraries: set[str], runtime_name: str, model_dir: Path) -> tuple[list[str], str, bool]:
    dists = bundle_files.distributions(libraries)
    for requirement in get_runtime(runtime_name).export_requires or ():  # what the registry declares, as installed
        dists.update([d for d in (requirement.dist, *requirement.same_as) if bundle_files.installed(d)][:1])
    if any(model_dir.glob("*.model")):  # a SentencePiece tokenizer: transformers imports it only when needed
        dists.add("sentencepiece")
    pins = bundle_files.locked(dists)
    uses_torch = any(name.lower() == "torch" for name in pins)
    text = bundle_files.requirements_text(pins, uses_torch)
    lines = [line for line in text.splitlines() if line and not line.startswith(("#", "--"))]
    return lines, text, uses_torch


def _check_replicas(replicas: int, max_replicas: int) -> None:
    for label, value in (("replicas", replicas), ("max_replicas", max_replicas)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_REPLICAS:
            raise InvalidInput(f"{label} must be a whole number from 1 to {MAX_REPLICAS}, not {value!r}",
                               inputs=[label])
    if max_replicas < replicas:
        raise InvalidInput(f"max_replicas ({max_replicas}) must be at least replicas ({replicas})",
                           inputs=["max_replicas"])


def _bundle(variant: Variant, staging: Path, name: str, labels: list[str], model_bytes: int,
            replicas: int = 1, max_replicas: int = bundle_files.HPA_MAX_REPLICAS) -> tuple[list[str], list[str]]:
    """Write the whole bundle into `staging`; returns (requirements, vendored modules)."""
    from jobs.serving.server import served_variant

    _copy_model(variant, staging / MODEL_DIR)
    served = served_variant(variant.id)  # as the workbench's server describes it: lineage, model, recipe
    manifest = manifest_for(served, MODEL_DIR, labels=labels, name=name)
    _write(staging / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")

    code = vendor([SERVER_ROOT, _runtime_module(variant)], staging, PACKAGE, header=HEADER)
    _write(staging / PACKAGE / "__init__.py", '"""The model server of this bundle (see README.md)."""\n')
    _write(staging / PACKAGE / "__main__.py", MAIN)
    _compile_all(staging / PACKAGE)

    requirements, requirements_text, uses_torch = _requirements(code.libraries, variant.runtime,
                                                                staging / MODEL_DIR)
    _write(staging / "requirements.txt", requirements_text)
    model = catalog.get_model(variant.model_id)
    facts = bundle_files.BundleFacts(
        name=name, variant=manifest["variant"], labels=labels, model_bytes=model_bytes,
        accuracy=_accuracy_text(variant),
        recipe=[_step_text(step, model) for step in (variant.recipe or {}).get("steps", [])],
        requirements=requirements, uses_torch=uses_torch, replicas=replicas, max_replicas=max_replicas)
    _write(staging / "Dockerfile", bundle_files.dockerfile(facts))
    _write(staging / ".dockerignore", ".venv\n**/__pycache__\n")  # a local run's virtualenv stays out of the image
    for file_name, obj in bundle_files.kubernetes_manifests(facts).items():
        _write(staging / "k8s" / file_name, bundle_files.yaml_text(obj))
    _write(staging / "README.md", bundle_files.readme(facts))
    _write(staging / CHECKSUMS, _checksums(staging))
    return requirements, code.modules


def export_deployment(variant_ref: int | str, directory: str | Path, *, force: bool = False,
                      name: str | None = None, replicas: int = 1,
                      max_replicas: int = bundle_files.HPA_MAX_REPLICAS) -> DeploymentExport:
    """The variant (an id, a name or NAME@ALIAS) as a deployment bundle in `directory` (see the module doc);
    `replicas` start in Kubernetes and the autoscaler adds up to `max_replicas`."""
    from jobs.tracking.variant_refs import resolve_variant

    _check_replicas(replicas, max_replicas)
    variant = resolve_variant(variant_ref)
    ensure_variant(variant, check_files=False)  # here (fetched from a URL root) or why not; files: checked below
    _runtime_module(variant)
    labels = _labels(variant)
    target = Path(directory).expanduser().resolve()
    _check_target(target, variant, force)
    target.parent.mkdir(parents=True, exist_ok=True)
    model_bytes = _check_size(variant, target)
    name = _checked_name(name, object_name(catalog.get_model(variant.model_id).name, variant.id))

    with staged(target) as staging:
        requirements, vendored = _bundle(variant, staging, name, labels, model_bytes, replicas, max_replicas)
        written = files_in(staging)
    return DeploymentExport(directory=target, variant_id=variant.id, runtime=variant.runtime, name=name,
                            files=written, model_bytes=model_bytes, requirements=requirements, vendored=vendored)


def zip_deployment(variant_ref: int | str, name: str | None = None) -> Path:
    """The bundle as one zip in a fresh temporary directory (for a download); the unzipped bundle is not kept."""
    scratch = Path(tempfile.mkdtemp(prefix="workbench-deployment-"))
    try:
        result = export_deployment(variant_ref, scratch / "bundle", name=name)
        archive = Path(shutil.make_archive(str(scratch / f"deployment-{result.name}"), "zip", result.directory))
        shutil.rmtree(result.directory)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    os.chmod(archive, 0o644)
    return archive

