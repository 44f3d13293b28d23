"""Predictor tab: one text (or many) through a variant's cached predictor; label probabilities, latency, tokens.

The tab only calls `jobs.api` (which validates every input and runs the model) and renders what comes back.
"""

from __future__ import annotations

import tempfile

import gradio as gr
import pandas as pd

from jobs import api
from storage.errors import WorkbenchError
from workbench import playground_charts
from workbench.choices import named_choices, variant_choices
from workbench.ui import WARNING, Refresh, esc, fail, mb, ok

EXAMPLES = 20  # examples offered per dataset
EXAMPLE_LABEL_CHARS = 110
TABLE_ROWS = 500  # rows of a batch shown in the page; the CSV download has every row
PRIVATE = dict(api_visibility="private")  # UI events are not API endpoints (those are in workbench.http_endpoints)
NO_VARIANT = "pick a variant first (add a model in Models; its original is the first variant)"
FILE_TYPES = [".csv", ".tsv", ".jsonl", ".parquet"]
BATCH_COLUMNS = ["text", "label", "confidence", "tokens", "truncated"]  # the table's header before a batch has run


# ---- shared with the A/B tab ------------------------------------------------------------------------------------


def default_variant(tree) -> str | None:
    """The newest evaluated variant, else the newest one."""
    scored = [s.id for s in tree if s.accuracy is not None]
    ids = scored or [s.id for s in tree]
    return str(max(ids)) if ids else None


def keep(value: str | None, values: list[str], default: str | None):
    """The dropdown's value if it is still a choice, else the default (an update only when it changes)."""
    if value in values:
        return gr.skip()
    return gr.update(value=default if default in values else (values[0] if values else None))


def alias_choices() -> list[tuple[str, str]]:
    """Registry aliases that point at a variant, after the variants: 'tiny@production → #3' -> 'tiny@production'."""
    try:
        state = api.registry_state()
    except Exception:  # noqa: BLE001 - an unreachable tracking server must not break the playground
        return []
    out = []
    for m in state["models"]:
        variant_of = {v["version"]: v["variant_id"] for v in m["versions"]}
        for alias, version in m["aliases"].items():
            if variant_of.get(version) is not None:
                out.append((f"{m['name']}@{alias} → #{variant_of[version]} (v{version})", f"{m['name']}@{alias}"))
    return out


def ref_label(ref: str) -> str:
    """'#3' for a variant id, the alias itself for 'tiny@production'."""
    return f"#{ref}" if str(ref).isdigit() else str(ref)


def known_choices() -> dict:
    """Variant and dataset choices with their defaults, for a tab's refresh and the value fix-up that follows it.

    The variant choices end with the registry's aliases (`NAME@ALIAS`), which the core resolves when called."""
    tree = api.variant_tree()
    datasets = api.list_datasets()
    return {
        "variants": variant_choices(tree) + alias_choices(),
        "variant_default": default_variant(tree),
        "datasets": named_choices(datasets),
        "dataset_default": str(datasets[0].id) if datasets else None,
        "parents": {str(s.id): str(s.parent_id) for s in tree if s.parent_id is not None},
    }


def values(choices) -> list[str]:
    return [v for _, v in choices]


def prediction_markdown(p) -> str:
    """'**positive** 86.1 % · 4.3 ms · 12 tokens', and a warning line when the text was truncated."""
    line = f"**{esc(p.label)}** {p.confidence * 100:.1f} % · {p.latency_ms:.1f} ms · {p.tokens} tokens"
    if p.truncated:
        line += f"\n\n<span class='truncation-warning'>{WARNING} {esc(p.truncation_note)}</span>"
    return line


def loaded_line() -> str:
    cached = api.loaded_predictors()
    if not cached:
        return "Loaded in memory: none yet (the first prediction with a variant loads it)"
    items = ", ".join(f"#{c.variant_id} ({mb(c.bytes)}{'' if c.device == 'cpu' else ', ' + c.device})" for c in cached)
    return f"Loaded in memory: {items}"


def split_for_examples(dataset) -> str:
    return "test" if "test" in dataset.split_sizes else next(iter(dataset.split_sizes), "test")


# ---- handlers ---------------------------------------------------------------------------------------------------


def predict(variant: str | None, text: str | None):
    if not variant:
        return fail(NO_VARIANT), None, gr.skip()
    try:
        p = api.predict(variant, text or "")
    except WorkbenchError as exc:
        return fail(str(exc)), None, loaded_line()
    chart = playground_charts.probabilities(p.probabilities, p.label, f"Variant {ref_label(variant)}: label probabilities")
    return prediction_markdown(p), chart, loaded_line()


def examples(dataset: str | None):
    if not dataset:
        return gr.update(choices=[], value=None)
    try:
        data = api.get_dataset(dataset)
        pairs = api.example_texts(data.id, split_for_examples(data), EXAMPLES)
    except WorkbenchError as exc:
        return gr.update(choices=[(fail(str(exc)), "")], value=None)
    choices = []
    for text, gold in pairs:
        label = f"[{gold}] {text}"
        if len(label) > EXAMPLE_LABEL_CHARS:
            label = label[: EXAMPLE_LABEL_CHARS - 1] + "…"
        choices.append((label, text))
    return gr.update(choices=choices, value=None)


def predict_many(variant: str | None, lines: str | None, upload: str | None, column: str | None,
                 progress=gr.Progress()):
    """The uploaded file's texts if there is one, else the pasted lines."""
    empty = (pd.DataFrame(columns=BATCH_COLUMNS), gr.update(value=None, visible=False))
    if not variant:
        return (fail(NO_VARIANT), *empty, gr.skip())
    try:
        texts = api.texts_from_file(upload, (column or "").strip() or None) if upload else api.texts_from_lines(lines or "")
        batch = api.predict_batch(variant, texts,
                                  progress=lambda done, total: progress(done / total, desc=f"{done}/{total}"))
    except WorkbenchError as exc:
        return (fail(str(exc)), *empty, loaded_line())
    n = len(batch.predictions)
    truncated = sum(p.truncated for p in batch.predictions)
    status = f"{n} texts in {batch.total_ms:.0f} ms ({batch.total_ms / n:.1f} ms per text)"
    if truncated:
        status += f"; {truncated} truncated"
    frame = batch.frame()
    if n > TABLE_ROWS:
        status += f". The table shows the first {TABLE_ROWS}; the CSV has all {n}"
    path = batch.write_csv(tempfile.mkdtemp(prefix="workbench-predictions-"))
    return ok(status), frame.head(TABLE_ROWS), gr.update(value=str(path), visible=True), loaded_line()


# ---- layout -----------------------------------------------------------------------------------------------------


def build() -> Refresh:
    gr.Markdown("Type a text, or pick an example, and see what a variant predicts: every label's probability, the "
                "latency and the tokens it read. Predictors stay loaded between calls, so only the first one waits.")
    with gr.Row():
        variant = gr.Dropdown(label="Variant", choices=[], elem_id="predict-variant", scale=3)
        dataset = gr.Dropdown(label="Examples from dataset", choices=[], elem_id="predict-dataset", scale=1)
        example = gr.Dropdown(label="Example ([gold label] text)", choices=[], elem_id="predict-example", scale=3)
    text = gr.Textbox(label="Text", placeholder="Type a sentence, then Enter or Predict", lines=1, max_lines=8,
                      elem_id="predict-text")
    button = gr.Button("Predict", variant="primary", elem_id="predict-button")
    with gr.Row(equal_height=False):
        with gr.Column(scale=2):
            result = gr.Markdown(elem_id="predict-result")
            loaded = gr.Markdown(elem_id="predict-loaded", elem_classes=["loaded-line"])
        with gr.Column(scale=3):
            chart = gr.Plot(label="Probabilities", elem_id="predict-chart")

    with gr.Accordion("Batch: many lines or a CSV", open=True):
        with gr.Row(equal_height=False):
            lines = gr.Textbox(label="One text per line", lines=6, scale=3, elem_id="batch-lines",
                               placeholder="what a wonderful day\nthe meeting is at noon\nworst service ever")
            with gr.Column(scale=2):
                upload = gr.File(label="…or a file (CSV / TSV / JSONL / Parquet); used instead of the lines",
                                 file_types=FILE_TYPES, type="filepath", height=150, elem_id="batch-upload")
                column = gr.Textbox(label="Text column (blank: text / sentence / content / review / tweet)",
                                    elem_id="batch-column")
        batch_button = gr.Button("Predict all", variant="primary", elem_id="batch-button")
        batch_status = gr.Markdown(elem_id="batch-status")
        table = gr.Dataframe(pd.DataFrame(columns=BATCH_COLUMNS), label="Predictions", interactive=False, wrap=True,
                             max_height=420, elem_id="batch-table")
        download = gr.File(label="Predictions (CSV, every row)", interactive=False, visible=False,
                           elem_id="batch-download")
    known = gr.State({})

    button.click(predict, [variant, text], [result, chart, loaded], **PRIVATE)
    text.submit(predict, [variant, text], [result, chart, loaded], **PRIVATE)
    dataset.change(examples, dataset, example, **PRIVATE)
    def pick_example(picked: str | None):
        return picked or gr.skip()

    example.input(pick_example, example, text, **PRIVATE)
    batch_button.click(predict_many, [variant, lines, upload, column], [batch_status, table, download, loaded], **PRIVATE)

    def fix_values(choices: dict, current_variant: str | None, current_dataset: str | None):
        """After a refresh: keep what is picked while it still exists, else pick the defaults."""
        if not choices:
            return gr.skip(), gr.skip()
        return (keep(current_variant, values(choices["variants"]), choices["variant_default"]),
                keep(current_dataset, values(choices["datasets"]), choices["dataset_default"]))

    known.change(fix_values, [known, variant, dataset], [variant, dataset], **PRIVATE)

    def refresh():
        choices = known_choices()
        return (gr.update(choices=choices["variants"]), gr.update(choices=choices["datasets"]), loaded_line(), choices)

    return Refresh(refresh, [variant, dataset, loaded, known])
