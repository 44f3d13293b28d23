"""Models tab: add a built-in, a local directory, a hub ID or an upload; list models; show details and hashes."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from jobs import api
from workbench import roles
from workbench.choices import named_choices
from workbench.ui import Refresh, attempt, builtin_picker, fail, mb

COLUMNS = ["id", "name", "architecture", "parameters", "task", "size", "source"]


def models_frame() -> pd.DataFrame:
    rows = []
    for m in api.list_models():
        info = m.info
        rows.append(
            {
                "id": m.id,
                "name": m.name,
                "architecture": info.get("architecture", "inspecting…"),
                "parameters": f"{info['num_parameters'] / 1e6:.1f}M" if info.get("num_parameters") else "",
                "task": info.get("task", ""),
                "size": mb(info.get("size_bytes")),
                "source": f"{m.source_kind}: {m.source}",
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def model_details(ref: str | None) -> str:
    if not ref:
        return "Pick a model to see its details."
    model = api.get_model(ref)
    lines = [f"### {model.name}", f"**Source:** {model.source_kind} `{model.source}`"]
    if not model.info:
        lines.append("*Inspection pending: the `inspect` job fills this in.*")
    for key in ("architecture", "model_type", "num_parameters", "num_layers", "hidden_size", "task", "task_note",
                "labels", "tokenizer", "vocab_size", "model_max_length", "opset"):
        if model.info.get(key) not in (None, "", []):
            lines.append(f"- **{key.replace('_', ' ')}:** {model.info[key]}")
    for v in api.list_variants(model.id):
        lines.append(f"\n**Variant {v.id}** `{v.runtime}/{v.precision}`, {mb(v.size_bytes)}, sha256 `{v.sha256}`\n")
        lines.append("| file | size | sha256 |\n|---|---|---|")
        lines += [f"| `{f['path']}` | {f['size']:,} | `{f['sha256']}` |" for f in v.files]
    return "\n".join(lines)


def _choices():
    return gr.update(choices=named_choices(api.list_models()))


def _add(source: str, name: str, allow_pickle: bool) -> str:
    def action() -> str:
        result = api.add_model(api.ModelRequest(source, name=name or None, allow_pickle=allow_pickle))
        notes = "".join(f"\n\nnote: {n}" for n in result.notes)
        return (
            f"Added model **{result.model.name}** (sha256 `{result.variant.sha256[:16]}…`); "
            f"an inspect job was queued.{notes}"
        )

    return attempt(action)


def build() -> Refresh:
    gr.Markdown("Add a model, then watch its `inspect` job in **Jobs**. Only safetensors load by default; remote code never runs.")
    with gr.Row():
        with gr.Column():
            builtin, add_builtin = builtin_picker(api.BUILTIN_MODELS, "model", "add-builtin-model")
        with gr.Column():
            path = gr.Textbox(label="Local directory or Hugging Face Hub ID", placeholder="/path/to/model or org/name")
            add_path = gr.Button("Add from path / hub")
        with gr.Column():
            upload = gr.File(label="Upload .zip / .tar.gz of a model directory, or a .onnx file",
                             file_types=[".zip", ".gz", ".tgz", ".onnx"], elem_id="model-upload")
            add_upload = gr.Button("Add upload")
    with gr.Row():
        name = gr.Textbox(label="Name (optional)")
        allow_pickle = gr.Checkbox(label="Allow pickle checkpoints (.bin/.pt), loaded with weights_only", value=False)
    status = gr.Markdown(elem_id="models-status")
    table = gr.Dataframe(value=models_frame, label="Models", interactive=False, elem_id="models-table")
    with gr.Row():
        pick = gr.Dropdown(label="Details of", choices=[], interactive=True)
        refresh = gr.Button("Refresh", size="sm")
    details = gr.Markdown()

    def after_add(message: str):
        return message, models_frame(), _choices()

    # Writes: refused on the server for viewers (see workbench.roles), whatever calls them.
    @roles.editor_only("add a model")
    def add_builtin_model(source: str, name_: str, pickle: bool):
        return after_add(_add(source, name_, pickle))

    @roles.editor_only("add a model")
    def add_model_from_path(source: str, name_: str, pickle: bool):
        return after_add(_add(source, name_, pickle))

    @roles.editor_only("upload a model")
    def add_uploaded_model(upload_: str | None, name_: str, pickle: bool):
        return after_add(_add(upload_, name_, pickle) if upload_ else fail("choose a file to upload first"))

    add_builtin.click(add_builtin_model, [builtin, name, allow_pickle], [status, table, pick])
    add_path.click(add_model_from_path, [path, name, allow_pickle], [status, table, pick])
    add_upload.click(add_uploaded_model, [upload, name, allow_pickle], [status, table, pick])
    refresh.click(lambda: (models_frame(), _choices()), None, [table, pick])
    pick.change(model_details, pick, details)
    return Refresh(lambda: (models_frame(), _choices()), [table, pick])
