"""Export one variant as a runnable demo: a Gradio app in the layout of a Hugging Face Space.

`export_space(variant, directory)` writes `app.py` (the template `jobs/export/space_app.py`, offline, text in → label
probabilities out), `requirements.txt` (pinned to what is installed here), `README.md` (Space metadata front
matter, the variant's recipe and accuracy, file hashes) and `model/` (the variant's files, checked against
their stored sha256). Everything is written into a staging directory beside the target and moved into place
at the end, and the staged app is loaded and asked for one prediction first, so a failure leaves nothing
half-written behind.

Which runtimes can be exported, and what their app installs, is declared in the runtime registry
(`jobs/runtimes/`): PyTorch, ONNX Runtime and OpenVINO variants are exported; the app redoes what the workbench's
loader does with `workbench.json` (max length, dtype, dynamic int8 at load, pruned heads, OpenVINO's inference
precision). TensorRT engines are refused:
they are built for one GPU and TensorRT version.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import re
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from jobs.runner.params import describe
from jobs.runner.registry import get_kind
from jobs.runtimes import get_runtime
from jobs.runtimes.base import VARIANT_META, read_variant_meta
from jobs.tasks import text_classification
from storage import catalog, files, settings
from storage.entities import Variant
from storage.errors import InvalidInput, WorkbenchError
from storage.shared_artifacts import ensure_variant

TEMPLATE = Path(__file__).with_name("space_app.py")
TORCH_LOAD_STEPS = {None, "torch-dynamic-int8"}  # what `quantization` in workbench.json may ask a PyTorch loader to redo
DTYPES = {"float32", "bfloat16", "float16"}
CHECK_TEXT = "This is a short test sentence."
DEFAULT_LICENSE = "other"
SHORT_DESCRIPTION_MAX = 60  # Hugging Face's limit for short_description
SOURCE_WORDS = {"local": "a local directory", "archive": "an archive", "onnx": "an ONNX file"}  # intake source kinds


@dataclass(frozen=True)
class SpaceExport:
    directory: Path
    variant_id: int
    runtime: str
    files: list[str]  # written, relative to `directory`
    model_bytes: int
    requirements: list[str]
    notes: list[str] = field(default_factory=list)
    check: dict[str, float] | None = None  # the staged app's answer to CHECK_TEXT


# ---- what can be exported ------------------------------------------------------------------------------------


def plan(variant: Variant) -> list[str]:
    """Refuse what the exported app could not run (InvalidInput with the reason); else notes for the README."""
    from transformers import AutoConfig

    runtime = get_runtime(variant.runtime)
    if not runtime.exportable:
        raise InvalidInput(f"variant {variant.id} ({runtime.display_name}) cannot be exported: {runtime.not_exportable}")
    source = Path(variant.artifact_dir)
    if not source.is_dir():
        raise InvalidInput(f"variant {variant.id}'s files are missing ({source})")
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=False, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"variant {variant.id} has no readable config.json ({exc}); cannot name its labels") from None
    if not text_classification.has_head(config):
        raise InvalidInput(f"variant {variant.id} has no classification head (a bare encoder would answer nonsense): "
                           "fine-tune it first and export the fine-tuned variant")
    if not runtime.finds_files(source):
        raise InvalidInput(f"variant {variant.id} ({runtime.display_name}) has no {' or '.join(runtime.files)}")
    meta = read_variant_meta(source)
    notes = []
    if variant.runtime == "openvino" and meta.get("inference_precision") == "bf16":
        notes.append("bf16: app.py runs the fp32 IR with OpenVINO's bf16 inference hint, which needs a CPU with AMX or "
                     "AVX-512 BF16; on any other CPU it refuses to start (export the fp32 variant for those).")
    if variant.runtime != "pytorch":
        return notes  # what follows is what the app's own PyTorch loader can redo; an ONNX graph holds its steps
    if not (source / "model.safetensors").exists() and not any(source.glob("*.safetensors")):
        raise InvalidInput(f"variant {variant.id} has no safetensors weights; the exported app loads only safetensors")
    if meta.get("quantization") not in TORCH_LOAD_STEPS:
        raise InvalidInput(f"variant {variant.id} asks its loader for {meta['quantization']!r}, which the exported app "
                           "does not know how to redo")
    if meta.get("dtype", "float32") not in DTYPES:
        raise InvalidInput(f"variant {variant.id} has weights in {meta['dtype']!r}, which the exported app cannot load")
    if meta.get("quantization") == "torch-dynamic-int8":
        notes.append("Dynamic int8: the files hold fp32 weights; app.py packs the Linear layers to int8 when it loads "
                     "them, as the workbench does.")
    if meta.get("dtype", "float32") != "float32":
        notes.append(f"Weights are {meta['dtype']}; app.py loads them as such (fp16 is slow on most CPUs).")
    if meta.get("kept_heads"):
        notes.append(f"Structured pruning: {len(meta['kept_heads'])} layers keep only some attention heads; app.py rebuilds that "
                     "smaller structure before loading the weights (listed in model/workbench.json).")
    return notes


# ---- the files -------------------------------------------------------------------------------------------------


def _installed(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _pin(dist: str, *alternatives: str) -> str:
    """`dist==version` of what runs here (a local tag like +cpu dropped), or the bare name when not installed."""
    for name in (dist, *alternatives):
        version = _installed(name)
        if version:
            return f"{dist}=={version.split('+')[0]}"
    return dist


def requirements(variant: Variant) -> list[str]:
    reqs = [_pin("gradio"), _pin("transformers"), _pin("tokenizers"), _pin("numpy")]
    reqs += [_pin(r.dist, *r.same_as) for r in get_runtime(variant.runtime).export_requires or ()]
    if any(Path(variant.artifact_dir).glob("*.model")):  # a SentencePiece tokenizer
        reqs.append(_pin("sentencepiece"))
    return reqs


def _step_text(step: dict[str, Any], model) -> str:
    kind = step.get("kind", "?")
    if kind == "intake":
        # a local path says nothing to a reader of the Space (and may say too much): name the source kind only
        kind_of_source = step.get("source_kind", "local")
        where = step.get("source") if kind_of_source in ("builtin", "hub") else SOURCE_WORDS.get(kind_of_source, kind_of_source)
        return f"**intake** of {model.name} ({where})"
    params = step.get("params", {})
    try:
        defaults = {f.name: f.default for f in describe(get_kind(kind).params_cls)}
    except WorkbenchError:
        defaults = {}
    changed = {k: v for k, v in params.items() if k not in defaults or v != (list(defaults[k]) if isinstance(defaults[k], tuple) else defaults[k])}
    args = ", ".join(f"{k}={json.dumps(v) if isinstance(v, (bool, list, dict)) else v}" for k, v in changed.items())
    return f"**{kind}**" + (f" ({args})" if args else " (defaults)")


def _accuracy_text(variant: Variant) -> str:
    evaluations = catalog.list_evaluations(variant.id)
    if not evaluations:
        return "Not evaluated in the workbench yet."
    ev = evaluations[-1]
    try:
        dataset = f"**{catalog.get_dataset(ev.dataset_id).name}**"
    except WorkbenchError:
        dataset = f"dataset #{ev.dataset_id}"
    text = (f"**{ev.accuracy:.2%}** accuracy, macro-F1 {ev.macro_f1:.4f}, on {ev.num_examples:,} {ev.split} examples "
            f"of {dataset}")
    if ev.parent_accuracy is not None:
        text += f" (its parent: {ev.parent_accuracy:.2%} on the same examples)"
    return text + "."


def _front_matter(values: dict[str, Any]) -> str:
    # JSON strings are valid YAML scalars, so titles with colons or quotes stay one value
    lines = [f"{k}: {json.dumps(v, ensure_ascii=False) if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else v}"
             for k, v in values.items()]
    return "---\n" + "\n".join(lines) + "\n---\n"


def readme(variant: Variant, title: str, license_: str, labels: list[str], notes: list[str],
           model_files: list[dict[str, Any]], reqs: list[str]) -> str:
    model = catalog.get_model(variant.model_id)
    gradio_version = _installed("gradio") or "6.0.0"
    short = f"{len(labels)}-label text classifier ({variant.runtime}, {variant.precision})"[:SHORT_DESCRIPTION_MAX]
    head = _front_matter({
        "title": title, "emoji": "🔎", "colorFrom": "blue", "colorTo": "indigo", "sdk": "gradio",
        "sdk_version": gradio_version.split("+")[0], "app_file": "app.py", "pinned": False, "license": license_,
        "short_description": short,
    })
    steps = variant.recipe.get("steps", [])
    size = sum(f["size"] for f in model_files)
    body = [
        f"# {title}",
        "",
        f"A text classifier exported from the Transformer Deployment Workbench: variant #{variant.id} "
        f"**{variant.name}** of model **{model.name}**, {variant.runtime} {variant.precision}, {size / 1e6:.1f} MB.",
        "Type a text and see every label's probability. It runs offline: the model is in `model/`, nothing is "
        "downloaded and no remote code runs.",
        "",
        f"**Labels:** {', '.join(labels)}",
        "",
        "## Accuracy",
        "",
        _accuracy_text(variant),
        "",
        "## Recipe",
        "",
        *[f"{i}. {_step_text(s, model)}" for i, s in enumerate(steps, start=1)],
        "",
    ]
    if notes:
        body += ["## Loading", "", *[f"- {n}" for n in notes], ""]
    body += [
        "## Run it",
        "",
        "```bash",
        "pip install -r requirements.txt",
        "python app.py              # http://127.0.0.1:7860; PORT=8080 python app.py for another port",
        "```",
        "",
        "The same prediction as an API:",
        "",
        "```python",
        "from gradio_client import Client",
        'Client("http://127.0.0.1:7860/").predict("what a lovely day", api_name="/predict")',
        "```",
        "",
        f"Requirements are pinned to the versions the workbench ran: {', '.join(f'`{r}`' for r in reqs)}.",
        f"Set `license` above to the original model's license (it is `{license_}` now).",
        "",
        "## Files",
        "",
        "| file | bytes | sha256 |",
        "|---|---|---|",
        *[f"| `model/{f['path']}` | {f['size']:,} | `{f['sha256']}` |" for f in model_files],
        "",
    ]
    return head + "\n" + "\n".join(body)


def app_source(title: str, description: str) -> str:
    """The template with its constants filled in (as Python literals, so any title is safe)."""
    text = TEMPLATE.read_text()
    for name, value in (("TITLE", title), ("DESCRIPTION", description)):
        text, count = re.subn(rf"^{name} = .*$", lambda _m, n=name, v=value: f"{n} = {v!r}", text, count=1,
                              flags=re.MULTILINE)
        if count != 1:
            raise RuntimeError(f"the Space template {TEMPLATE} has no {name} line")
    return text


def _copy_model(variant: Variant, target: Path) -> list[dict[str, Any]]:
    """The variant's top-level files (weights, config, tokenizer, workbench.json), each checked against the
    sha256 stored when the variant was made. Sub-folders (a kept LoRA adapter) are not needed to predict."""
    source = Path(variant.artifact_dir)
    target.mkdir(parents=True)
    copied = []
    for entry in variant.files:
        path = entry["path"]
        if "/" in path or path.endswith(".py"):
            continue
        shutil.copy2(source / path, target / path)
        if files.hash_file(target / path) != entry["sha256"]:
            raise InvalidInput(f"variant {variant.id}'s file {path} changed on disk since it was stored "
                               "(sha256 differs); not exported")
        copied.append(entry)
    meta = source / VARIANT_META
    if meta.exists() and not (target / VARIANT_META).exists():
        shutil.copy2(meta, target / VARIANT_META)
        copied.append({"path": VARIANT_META, "size": meta.stat().st_size, "sha256": files.hash_file(meta)})
    return copied


def _check_app(app: Path) -> dict[str, float]:
    """Load the staged app's classifier (not its web page) and ask it for one prediction."""
    spec = importlib.util.spec_from_file_location(f"exported_space_{uuid.uuid4().hex}", app)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    try:
        probabilities = module.Classifier(app.parent / "model").predict(CHECK_TEXT)
    except Exception as exc:  # whatever breaks, the export must not be kept
        raise InvalidInput(f"the exported app could not predict: {type(exc).__name__}: {exc}") from None
    if abs(sum(probabilities.values()) - 1.0) > 1e-3:
        raise InvalidInput(f"the exported app's probabilities do not sum to 1: {probabilities}")
    return probabilities


def _check_target(target: Path, variant: Variant, force: bool) -> None:
    if target.exists() and not target.is_dir():
        raise InvalidInput(f"{target} is a file, not a directory")
    if target.exists() and any(target.iterdir()) and not force:
        raise InvalidInput(f"{target} is not empty: pick a new directory, or choose to replace its contents",
                           inputs=("force",))
    protected = [Path("/"), Path.home(), settings.home(), Path(variant.artifact_dir).resolve()]
    for p in protected:
        if target == p or target in p.parents:
            raise InvalidInput(f"refusing to write over {target}: it holds {p}")


def move_into_place(staging: Path, target: Path) -> None:
    """Rename a finished staging directory (a sibling of `target`) to `target`. An existing `target` (checked by
    `_check_target`) is renamed aside first and removed only once the new one is in place; if that fails, it is
    put back. Only `target` itself is ever removed, never anything beside it."""
    if target.exists():
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        target.rename(old)
        try:
            staging.rename(target)
        except OSError:
            old.rename(target)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(target)


@contextmanager
def staged(target: Path) -> Iterator[Path]:
    """A private folder beside `target` to write an export into. When the block ends it becomes `target`
    (`move_into_place`); if the block fails, it is removed, so nothing half-written is ever left."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.staging-", dir=target.parent))
    try:
        yield staging
        staging.chmod(0o755)  # mkdtemp made it private; the export is an ordinary directory
        move_into_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def files_in(directory: Path) -> list[str]:
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file())


def export_space(variant_ref: int | str, directory: str | Path, *, force: bool = False, title: str | None = None,
                 license_: str = DEFAULT_LICENSE, check: bool = True) -> SpaceExport:
    variant = catalog.get_variant(variant_ref)
    ensure_variant(variant, check_files=False)  # here (fetched from a URL root) or why not; files: checked below
    notes = plan(variant)
    target = Path(directory).expanduser().resolve()
    _check_target(target, variant, force)
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(variant.artifact_dir, trust_remote_code=False, local_files_only=True)
    labels = text_classification.labels(config)
    model = catalog.get_model(variant.model_id)
    title = (title or f"{model.name} #{variant.id} ({variant.runtime} {variant.precision})").strip()
    description = (f"Variant #{variant.id} ({variant.name}) from the Transformer Deployment Workbench: "
                   f"{variant.runtime} {variant.precision}. {_accuracy_text(variant)} Labels: {', '.join(labels)}.")
    description = description.replace("**", "")
    reqs = requirements(variant)

    with staged(target) as staging:
        model_files = _copy_model(variant, staging / "model")
        (staging / "app.py").write_text(app_source(title, description))
        (staging / "requirements.txt").write_text("\n".join(reqs) + "\n")
        (staging / "README.md").write_text(readme(variant, title, license_, labels, notes, model_files, reqs))
        answer = _check_app(staging / "app.py") if check else None
        written = files_in(staging)
    return SpaceExport(directory=target, variant_id=variant.id, runtime=variant.runtime, files=written,
                       model_bytes=sum(f["size"] for f in model_files), requirements=reqs, notes=notes, check=answer)
