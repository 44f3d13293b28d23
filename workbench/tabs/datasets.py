"""Datasets tab: add a built-in or upload CSV / JSONL / Parquet with column mapping; preview; label chart."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from jobs import api
from storage.errors import WorkbenchError
from workbench import charts, roles
from workbench.choices import named_choices
from workbench.ui import Refresh, attempt, builtin_picker, fail

COLUMNS = ["id", "name", "rows", "labels", "split (train/val/test)", "source"]


def datasets_frame() -> pd.DataFrame:
    rows = [
        {
            "id": d.id,
            "name": d.name,
            "rows": d.num_rows,
            "labels": ", ".join(d.labels),
            "split (train/val/test)": "/".join(str(d.split_sizes.get(s, 0)) for s in ("train", "validation", "test")),
            "source": f"{d.source_kind}: {d.source}",
        }
        for d in api.list_datasets()
    ]
    return pd.DataFrame(rows, columns=COLUMNS)


def _choices(selected: str | None = None):
    choices = named_choices(api.list_datasets())
    return gr.update(choices=choices, value=selected) if selected else gr.update(choices=choices)


def show(ref: str | None):
    if not ref:
        return "", None, None
    ds = api.get_dataset(ref)
    summary = (
        f"### {ds.name}\n{ds.num_rows:,} rows · text `{ds.text_column}` · label `{ds.label_column}` · "
        f"split seed {ds.split_seed} · sha256 `{ds.sha256[:16]}…`"
    )
    preview = pd.DataFrame(api.preview_dataset(ds.id, rows=20))
    preview["text"] = preview["text"].str.slice(0, 300)  # whole articles would push the chart off screen
    return summary, preview, charts.label_distribution(api.dataset_distribution(ds.id), f"Labels of {ds.name}")


def _add(source: str, name: str, text_col: str | None, label_col: str | None, seed: float):
    holder: dict = {}

    def action() -> str:
        ds = api.add_dataset(
            api.DatasetRequest(source, name=name or None, text_column=text_col or None,
                               label_column=label_col or None, seed=int(seed if seed is not None else 42))
        )
        holder["id"] = str(ds.id)
        return f"Added dataset **{ds.name}**: {ds.num_rows:,} rows, labels {', '.join(ds.labels)}."

    message = attempt(action)
    selected = holder.get("id")
    return (message, datasets_frame(), _choices(selected), *show(selected))


@roles.editor_only("upload a dataset")
def upload_columns(path: str | None):
    if not path:
        return gr.update(choices=[], value=None), gr.update(choices=[], value=None), ""
    try:
        cols = api.peek_columns(path)
    except WorkbenchError as exc:
        return gr.update(choices=[]), gr.update(choices=[]), fail(str(exc))
    lower = [c.lower() for c in cols]
    guess_text = next((cols[lower.index(g)] for g in ("text", "sentence", "content", "review") if g in lower), None)
    guess_label = next((cols[lower.index(g)] for g in ("label", "sentiment", "category", "class") if g in lower), None)
    return gr.update(choices=cols, value=guess_text), gr.update(choices=cols, value=guess_label), ""


def build() -> Refresh:
    gr.Markdown("Add a dataset. It is checked, then split train / validation / test (stratified, seeded) and stored.")
    with gr.Row():
        with gr.Column():
            builtin, add_builtin = builtin_picker(api.BUILTIN_DATASETS, "dataset", "add-builtin-dataset")
        with gr.Column():
            upload = gr.File(label="Upload CSV / TSV / JSONL / Parquet", file_types=[".csv", ".tsv", ".jsonl", ".json", ".parquet"], elem_id="dataset-upload")
            with gr.Row():
                text_col = gr.Dropdown(label="Text column", choices=[], allow_custom_value=True)
                label_col = gr.Dropdown(label="Label column", choices=[], allow_custom_value=True)
            add_upload = gr.Button("Add upload")
    with gr.Row():
        name = gr.Textbox(label="Name (optional)")
        seed = gr.Number(label="Split seed", value=42, precision=0)
    status = gr.Markdown(elem_id="datasets-status")
    table = gr.Dataframe(value=datasets_frame, label="Datasets", interactive=False, elem_id="datasets-table")
    pick = gr.Dropdown(label="Preview", choices=[], interactive=True)
    summary = gr.Markdown()
    with gr.Row():
        preview = gr.Dataframe(
            value=pd.DataFrame(columns=["text", "label"]), label="First rows of the train split", interactive=False, wrap=True, scale=3
        )
        chart = gr.Plot(label="Label distribution", scale=2, elem_id="label-chart")

    outputs = [status, table, pick, summary, preview, chart]
    # Writes (and reading an uploaded file): refused on the server for viewers (see workbench.roles).
    @roles.editor_only("add a dataset")
    def add_builtin_dataset(source: str, name_: str, seed_: float):
        return _add(source, name_, None, None, seed_)

    @roles.editor_only("upload a dataset")
    def add_uploaded_dataset(upload_: str | None, name_: str, text: str | None, label: str | None, seed_: float):
        if not upload_:
            return (fail("choose a file to upload first"), *[gr.update()] * 5)
        return _add(upload_, name_, text, label, seed_)

    add_builtin.click(add_builtin_dataset, [builtin, name, seed], outputs)
    add_upload.click(add_uploaded_dataset, [upload, name, text_col, label_col, seed], outputs)
    upload.change(upload_columns, upload, [text_col, label_col, status])
    pick.change(show, pick, [summary, preview, chart])
    return Refresh(lambda: (datasets_frame(), _choices()), [table, pick])
