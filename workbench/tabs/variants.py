"""Variants tab: every variant as a lineage tree with its evaluation and flag; one variant's recipe and charts."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import gradio as gr

from jobs import api
from storage.errors import WorkbenchError
from workbench import charts, roles
from workbench.choices import variant_choices
from workbench.formatting import NOT_EVALUATED, percent
from workbench.ui import WARNING, Refresh, esc, fail, mb, ok

REFRESH_S = 3.0
COLUMNS = ("id", "variant", "runtime", "precision", "size", "accuracy", "Δ vs parent", "agreement", "flag")


def _points(drop: float | None) -> str:
    """Accuracy change against the parent, signed, with a real minus sign: '−2.50 pts'."""
    if drop is None:
        return ""
    delta = 0.0 - drop
    return f"{delta:+.2f} pts".replace("-", "−")


def _short(points: float) -> str:
    return f"{points:.2f}".rstrip("0").rstrip(".")


def flag_text(drop: float | None) -> str:
    return f"{WARNING} {_short(drop or 0.0)} pts below parent"


def _step_name(s) -> str:
    return s.label


def degenerate_badge(reason: str | None) -> str:
    return f"<span class='flag-badge degenerate-badge' title='{esc(reason or '')}'>⊘ degenerate: {esc(reason or '')}</span>"


def _accuracy_cell(s) -> str:
    if s.accuracy is not None:
        title = f"macro-F1 {s.macro_f1:.4f} on {s.num_examples:,} examples" if s.num_examples else ""
        if s.accuracy_low is not None and s.accuracy_high is not None:
            title += f"; 95% interval {percent(s.accuracy_low)}-{percent(s.accuracy_high)}"
        if s.majority_accuracy is not None:
            title += f"; majority class {percent(s.majority_accuracy)}"
        return f"<span class='accuracy' title='{esc(title)}'>{percent(s.accuracy)}</span>"
    state = s.evaluation.split(":")[0]
    return f"<span class='eval-state eval-{esc(state.replace(' ', '-'))}'>{esc(s.evaluation)}</span>"


def variants_html(tree=None) -> str:
    tree = api.variant_tree() if tree is None else tree
    if not tree:
        return "<p>No variants yet. Add a model in <b>Models</b>; its original is the first variant.</p>"
    rows = []
    for s in tree:
        marker = "└ " if s.depth else ""
        name = f"<span class='tree-marker'>{marker}</span>{esc(_step_name(s))}"
        flag = f"<span class='flag-badge'>{esc(flag_text(s.drop_points))}</span>" if s.flagged else ""
        if s.degenerate:
            flag += degenerate_badge(s.degenerate_reason)
        agreement = percent(s.agreement_with_parent, 1)
        compared = (f" title='parent {percent(s.parent_accuracy)} on the same {s.num_examples:,} examples'"
                    if s.parent_accuracy is not None and s.num_examples else "")
        row_class = " class='flagged'" if s.flagged or s.degenerate else ""
        rows.append(
            f"<tr data-variant-id='{s.id}' data-flagged='{str(s.flagged).lower()}' "
            f"data-degenerate='{str(s.degenerate).lower()}' data-step='{esc(s.step)}' "
            f"data-evaluation='{esc(s.evaluation.split(':')[0])}'{row_class}>"
            f"<td>{s.id}</td>"
            f"<td class='tree' style='padding-left:{0.5 + 1.4 * s.depth:.1f}em' title='{esc(s.name)}'>{name}</td>"
            f"<td>{esc(s.runtime)}</td><td>{esc(s.precision)}</td><td>{mb(s.size_bytes)}</td>"
            f"<td>{_accuracy_cell(s)}</td><td class='delta'{compared}>{_points(s.drop_points)}</td><td>{agreement}</td>"
            f"<td>{flag}</td></tr>"
        )
    head = "".join(f"<th>{h}</th>" for h in COLUMNS)
    return (f"<table class='variants-table' id='variants-table'><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


# ---- one variant ---------------------------------------------------------------------------------------------


def _kind_of(variant) -> str:
    steps = variant.recipe.get("steps") or [{}]
    kind = steps[-1].get("kind", "?")
    return "original" if kind == "intake" else kind


def _defaults(kind: str) -> dict[str, Any]:
    try:
        return api.kind_defaults(kind)
    except WorkbenchError:
        return {}


def _value(v: Any) -> str:
    if isinstance(v, list):
        return ",".join(map(str, v)) or "(none)"
    return json.dumps(v) if isinstance(v, bool) else str(v)


SOURCE_WORDS = {"local": "a local directory", "archive": "an archive", "onnx": "an ONNX file"}  # for viewers


def intake_source(step: dict, paths: bool = True) -> str:
    """Where a model came from; for a viewer (paths=False) a local source is only named by its kind."""
    if paths or step.get("source_kind") in ("builtin", "hub"):
        return str(step.get("source", ""))
    return SOURCE_WORDS.get(step.get("source_kind"), "a local source")


def recipe_markdown(variant, paths: bool = True) -> str:
    lines = ["**Recipe** (parameters that differ from the defaults; the full recipe is in *Facts*)"]
    for i, step in enumerate(variant.recipe.get("steps", []), start=1):
        kind = step.get("kind", "?")
        if kind == "intake":
            lines.append(f"{i}. **intake** — {esc(intake_source(step, paths))}")
            continue
        params = step.get("params", {})
        defaults = _defaults(kind)
        changed = {k: v for k, v in params.items() if k not in defaults or v != _jsonish(defaults[k])}
        args = ", ".join(f"{k}={_value(v)}" for k, v in changed.items()) or "defaults"
        job = f" (job {step['job_id']})" if step.get("job_id") else ""
        lines.append(f"{i}. **{esc(kind)}**{job} — {esc(args)}")
    return "\n".join(lines)


def _jsonish(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def evaluations_markdown(evaluations, summary) -> str:
    if not evaluations:
        state = summary.evaluation if summary is not None else NOT_EVALUATED
        return f"**Evaluation:** {esc(state)}"
    lines = ["**Evaluations**", "",
             "| # | split | examples | accuracy (95% interval) | majority class | macro-F1 | recall per class | "
             "parent accuracy | Δ vs parent | agreement | flag |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for ev in evaluations:
        flag = (f"<span class='flag-badge'>{flag_text(ev.drop_points)}</span> (tolerance {ev.tolerance_points:g})"
                if ev.flagged else ("ok" if ev.parent_accuracy is not None else ""))
        if ev.degenerate:
            flag += " " + degenerate_badge(ev.degenerate_reason)
        interval = (f" ({percent(ev.accuracy_low)}-{percent(ev.accuracy_high)})"
                    if ev.accuracy_low is not None and ev.accuracy_high is not None else "")
        majority = f"{percent(ev.majority_accuracy)} ({esc(ev.majority_label)})" if ev.majority_accuracy is not None else ""
        recall = ", ".join(f"{esc(k)} {percent(v) if v is not None else '-'}" for k, v in (ev.per_class_recall or {}).items())
        lines.append(
            f"| {ev.id} | {ev.split} | {ev.num_examples:,} | {percent(ev.accuracy)}{interval} | {majority} | "
            f"{ev.macro_f1:.4f} | {recall} | {percent(ev.parent_accuracy)} | {_points(ev.drop_points)} | "
            f"{percent(ev.agreement_with_parent, 1)} | {flag} |"
        )
    return "\n".join(lines)


def facts(variant, paths: bool = True) -> dict[str, Any]:
    """What the jobs recorded (quantization, pruning, export parity, training settings), without the curve; for a
    viewer (paths=False) without the server's paths."""
    info = dict(variant.info)
    if isinstance(info.get("training"), dict):
        info["training"] = {k: v for k, v in info["training"].items() if k != "history"}
    out = {
        "info": info,
        "files": [f"{f['path']} ({f['size']:,} bytes)" for f in variant.files],
        "sha256": variant.sha256,
        "recipe": variant.recipe,
    }
    if paths:
        return out
    steps = [{**step, "source": intake_source(step, False)} if step.get("kind") == "intake" else step
             for step in variant.recipe.get("steps", [])]
    return roles.without_paths({**out, "recipe": {**variant.recipe, "steps": steps}})


EMPTY = ("Pick a variant to see its lineage, recipe, evaluations and charts.", "", "",
         gr.update(value=None, visible=False), gr.update(value=None, visible=False), None)


def variant_view(ref: str | None, request: gr.Request = None):
    """The picked variant's header, recipe, evaluations, charts and facts (a viewer's without server paths)."""
    if not ref:
        return EMPTY
    try:
        detail = api.variant_detail(ref)
    except WorkbenchError as exc:
        return (fail(str(exc)), *EMPTY[1:])
    v, summary = detail["variant"], detail["summary"]
    chain = " → ".join(
        (f"**#{a.id} {_kind_of(a)}**" if a.id == v.id else f"#{a.id} {_kind_of(a)}") for a in detail["lineage"]
    )
    dataset = ""
    if v.dataset_id is not None:
        try:
            dataset = f" · trained on **{esc(api.get_dataset(v.dataset_id).name)}** (#{v.dataset_id})"
        except WorkbenchError:
            dataset = f" · dataset #{v.dataset_id}"
    header = [
        f"### #{v.id} {esc(v.name)}",
        f"`{v.runtime}` · `{v.precision}` · {mb(v.size_bytes)}{dataset}",
        f"**Lineage:** {chain}",
    ]
    if summary is not None and summary.flagged:
        header.append(f"<span class='flag-badge'>{flag_text(summary.drop_points)}</span>")
    if summary is not None and summary.degenerate:
        header.append(degenerate_badge(summary.degenerate_reason) + " — never recommended; promotion needs a confirmation")
    evaluations = detail["evaluations"]
    latest = evaluations[-1] if evaluations else None
    confusion = (
        gr.update(value=charts.confusion_matrix(latest.confusion, f"Confusion matrix ({latest.num_examples:,} {latest.split} examples)"),
                  visible=True)
        if latest is not None and latest.confusion.get("matrix") else gr.update(value=None, visible=False)
    )
    history = detail["history"]
    curve = (gr.update(value=charts.training_curve(history, "Training: validation scores and loss per epoch"), visible=True)
             if history else gr.update(value=None, visible=False))
    paths = roles.is_editor(request)
    return ("\n\n".join(header), recipe_markdown(v, paths), evaluations_markdown(evaluations, summary), confusion, curve,
            facts(v, paths))


# ---- MLflow registry -----------------------------------------------------------------------------------------

REGISTRY_COLUMNS = ("model", "version", "variant", "aliases", "runtime / precision", "accuracy")


def registry_html(state: dict[str, Any]) -> str:
    if not state["models"]:
        return ("<p id='registry-empty'>No registered models yet. Pick a variant above and "
                "<b>Register selected variant</b>.</p>")
    rows = []
    for m in state["models"]:
        for v in reversed(m["versions"]):  # newest version first
            badges = " ".join(f"<span class='registry-alias'>{esc(a)}</span>" for a in v["aliases"])
            variant = f"#{v['variant_id']} {esc(v['variant'])}" if v["variant_id"] is not None else esc(v["variant"])
            rows.append(
                f"<tr data-model='{esc(m['name'])}' data-version='{esc(v['version'])}' "
                f"data-variant-id='{v['variant_id'] or ''}' data-aliases='{esc(','.join(v['aliases']))}'>"
                f"<td>{esc(m['name'])}</td><td>v{esc(v['version'])}</td><td>{variant}</td><td>{badges}</td>"
                f"<td>{esc(v['runtime'])} / {esc(v['precision'])}</td><td>{percent(v['accuracy'])}</td></tr>"
            )
    head = "".join(f"<th>{h}</th>" for h in REGISTRY_COLUMNS)
    undo = [f"{esc(m['name'])} {esc(a)} → v{esc(v)}" for m in state["models"] for a, v in m["rollback_to"].items()]
    note = f"<p class='registry-rollback'>Roll back would move: {'; '.join(undo)}</p>" if undo else ""
    return (f"<table class='variants-table' id='registry-table-rows'><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>{note}")


def _version_choices(state: dict[str, Any]) -> list[tuple[str, str]]:
    return [(f"{m['name']} v{v['version']}" + (f" (variant #{v['variant_id']})" if v["variant_id"] is not None else ""),
             f"{m['name']}:{v['version']}") for m in state["models"] for v in reversed(m["versions"])]


def registry_view(selected: str | None = None, paths: bool = True):
    """The registry table, the version dropdown and the tracking line (for a viewer, paths=False, without the
    tracking store's address)."""
    try:
        state = api.registry_state()
    except Exception as exc:  # noqa: BLE001 - an unreachable tracking server must not break the tab
        uri = api.mlflow_uri()
        reason = str(exc).splitlines()[0] if str(exc) and paths else type(exc).__name__
        return (fail(f"MLflow registry unavailable: {reason}"), gr.update(choices=[]),
                f"Tracking: `{uri['tracking_uri']}`" if paths else "Tracking: MLflow (its address is shown to editors)")
    choices = _version_choices(state)
    values = {value for _, value in choices}
    value = selected if selected in values else (choices[0][1] if choices else None)
    line = (f"Tracking: `{state['tracking_uri']}` · open MLflow: `{state['ui_command']}`" if paths
            else "Tracking: MLflow (its address is shown to editors)")
    return registry_html(state), gr.update(choices=choices, value=value), line


def _split_version(value: str | None) -> tuple[str, str]:
    if not value or ":" not in value:
        raise WorkbenchError("pick a registered model version first (register a variant to make one)")
    name, _, version = value.rpartition(":")
    return name, version


def _registry_action(action, selected: str | None):
    try:
        message = ok(action())
    except WorkbenchError as exc:
        message = fail(str(exc))
    return (message, *registry_view(selected))


@roles.editor_only("register models")
def register_selected(ref: str | None, name: str | None):
    def act() -> str:
        if not ref:
            raise WorkbenchError("pick a variant above first")
        mv = api.register_variant(ref, (name or "").strip() or None)
        return f"Registered variant #{mv['variant_id']} as {mv['model']} v{mv['version']}"

    return _registry_action(act, None)


@roles.editor_only("promote models")
def promote_selected(selected: str | None, alias: str | None, force: bool = False):
    def act() -> str:
        name, version = _split_version(selected)
        try:
            move = api.promote(name, version, (alias or "").strip() or "production", force=bool(force))
        except WorkbenchError as exc:
            if "degenerate" in str(exc):
                raise type(exc)(f"{exc}: tick 'Promote even if degenerate' to confirm") from None
            raise
        warning = f" {WARNING} promoted although degenerate: {move['degenerate']}" if move.get("degenerate") \
            else ""
        if not move["changed"]:
            return f"{name} {move['alias']} already points at v{version}{warning}"
        was = f" (was v{move['previous']})" if move["previous"] else ""
        return f"{name} {move['alias']} → v{version}{was}{warning}"

    return _registry_action(act, selected)


@roles.editor_only("roll back models")
def rollback_selected(selected: str | None, alias: str | None):
    def act() -> str:
        name, _ = _split_version(selected)
        move = api.rollback(name, (alias or "").strip() or "production")
        return f"{name} {move['alias']} rolled back to v{move['version']} (was v{move['previous']})"

    return _registry_action(act, selected)


# ---- export as a Space --------------------------------------------------------------------------------------


@roles.editor_only("export a Space")
def export_space_zip(ref: str | None, license_: str | None):
    """The picked variant as a runnable Gradio demo (Hugging Face Space layout), zipped for download."""
    hidden = gr.update(value=None, visible=False)
    if not ref:
        return fail("pick a variant first"), hidden
    out = Path(tempfile.mkdtemp(prefix="workbench-space-"))
    try:
        result = api.export_space(ref, out / f"space-variant-{ref}", license_=(license_ or "").strip() or "other")
        archive = shutil.make_archive(str(out / f"space-variant-{ref}"), "zip", result.directory)
    except WorkbenchError as exc:
        shutil.rmtree(out, ignore_errors=True)
        return fail(str(exc)), hidden
    shutil.rmtree(result.directory, ignore_errors=True)  # the zip is what goes to the browser
    notes = "".join(f"\n\n{esc(n)}" for n in result.notes)
    return (ok(f"variant #{result.variant_id} as a Space: {len(result.files)} files, model {mb(result.model_bytes)}. "
               f"Unzip, `pip install -r requirements.txt`, `python app.py`; or push it to a Hugging Face Space.{notes}"),
            gr.update(value=archive, visible=True))


# ---- the variant's own files ------------------------------------------------------------------------------


@roles.editor_only("download a variant's files")
def download_variant_zip(ref: str | None):
    """The picked variant's directory as a zip (weights, ONNX graphs, tokenizer), each file checked against its hash."""
    hidden = gr.update(value=None, visible=False)
    if not ref:
        return fail("pick a variant first"), hidden
    try:
        result = api.zip_variant(ref)
    except WorkbenchError as exc:
        return fail(str(exc)), hidden
    return (ok(f"variant #{result.variant_id}: {len(result.files)} files, {mb(result.bytes)} before compression, "
               "each matching its recorded sha256 (`SHA256SUMS` in the zip checks an unzipped copy)"),
            gr.update(value=str(result.path), visible=True))


def build() -> Refresh:
    gr.Markdown(
        "Every variant, as a tree from each model's original. Each one a job yields is evaluated against its parent "
        "on the same examples; a drop larger than the tolerance is **flagged**."
    )
    table = gr.HTML(variants_html, elem_id="variants-html")
    pick = gr.Dropdown(label="Variant", choices=[], interactive=True, elem_id="variant-pick")
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            summary = gr.Markdown("Pick a variant to see its lineage, recipe, evaluations and charts.",
                                  elem_id="variant-summary")
            recipe = gr.Markdown(elem_id="variant-recipe")
        with gr.Column(scale=2):
            confusion = gr.Plot(label="Confusion matrix", visible=False, elem_id="confusion-matrix")
    evaluations = gr.Markdown(elem_id="variant-evaluations")
    with gr.Row(equal_height=False):
        curve = gr.Plot(label="Training curve", visible=False, elem_id="training-curve", scale=3)
        with gr.Column(scale=2):
            with gr.Accordion("Facts (quantization, pruning, export parity, training settings, files)", open=True):
                info = gr.JSON(elem_id="variant-info", open=False)
    with gr.Accordion("Export as a Space (runnable demo app)", open=False, elem_id="space-section") as space_section:
        gr.Markdown("The selected variant as a Gradio app in a Hugging Face Space's layout: `app.py` (offline), "
                    "`requirements.txt`, `README.md` with the Space metadata, recipe and accuracy, and the model files.")
        with gr.Row(equal_height=True):
            space_license = gr.Textbox(value="other", label="License of the original model (Space metadata)",
                                       elem_id="space-license", scale=2)
            space_btn = gr.Button("Export as Space (.zip)", elem_id="space-export", scale=1)
        space_status = gr.Markdown(elem_id="space-status")
        space_file = gr.File(label="Space (.zip)", interactive=False, visible=False, elem_id="space-zip")
    roles.editor_control(space_section)  # viewers do not see it; the handler refuses them anyway
    with gr.Accordion("Download files (.zip)", open=False, elem_id="files-section") as files_section:
        gr.Markdown("The selected variant's own files as they are stored (weights or ONNX graphs, tokenizer, "
                    "config), each checked against the sha256 recorded when the variant was made.")
        files_btn = gr.Button("Download files (.zip)", elem_id="files-download")
        files_status = gr.Markdown(elem_id="files-status")
        files_zip = gr.File(label="Variant files (.zip)", interactive=False, visible=False, elem_id="files-zip")
    roles.editor_control(files_section)  # viewers do not see it; the handler refuses them anyway
    with gr.Accordion("Registry (MLflow)", open=True, elem_id="registry-section"):
        gr.Markdown("Register a variant as a model version; point aliases (staging, production) at versions, and "
                    "roll an alias back to where it was before the last promote.")
        registry_table = gr.HTML(elem_id="registry-table")
        with gr.Row(equal_height=True):
            register_name = gr.Textbox(label="Registered model name (empty: the variant's model name)",
                                       elem_id="registry-name", scale=3)
            register_btn = gr.Button("Register selected variant", variant="primary", elem_id="registry-register", scale=1)
        with gr.Row(equal_height=True):
            version = gr.Dropdown(label="Model version", choices=[], interactive=True, elem_id="registry-version", scale=3)
            alias = gr.Textbox(value="production", label="Alias", elem_id="registry-alias", scale=1)
            force = gr.Checkbox(label="Promote even if degenerate", value=False, elem_id="registry-force", scale=1,
                                info="a degenerate variant is refused with the reason; tick to confirm anyway")
            promote_btn = gr.Button("Promote", elem_id="registry-promote", scale=1)
            rollback_btn = gr.Button("Roll back", elem_id="registry-rollback", scale=1)
        registry_status = gr.Markdown(elem_id="registry-status")
        tracking_line = gr.Markdown(elem_id="registry-uri")
    seen = gr.State("")

    detail_outputs = [summary, recipe, evaluations, confusion, curve, info]

    def tick(ref: str | None, last: str, request: gr.Request = None):
        """Redraw only what changed: the table, the dropdown when variants appear, the detail when re-evaluated."""
        tree = api.variant_tree()
        html = variants_html(tree)
        if html == last:
            return (gr.skip(), gr.skip(), last, *[gr.skip()] * len(detail_outputs))
        detail = variant_view(ref, request) if ref else [gr.skip()] * len(detail_outputs)
        return (html, gr.update(choices=variant_choices(tree)), html, *detail)

    gr.Timer(REFRESH_S).tick(tick, [pick, seen], [table, pick, seen, *detail_outputs], show_progress="hidden")
    pick.change(variant_view, pick, detail_outputs)
    space_btn.click(export_space_zip, [pick, space_license], [space_status, space_file], api_visibility="private")
    files_btn.click(download_variant_zip, pick, [files_status, files_zip], api_visibility="private")

    registry_outputs = [registry_status, registry_table, version, tracking_line]
    private = dict(api_visibility="private")
    register_btn.click(register_selected, [pick, register_name], registry_outputs, **private)
    promote_btn.click(promote_selected, [version, alias, force], registry_outputs, **private)
    rollback_btn.click(rollback_selected, [version, alias], registry_outputs, **private)

    def refresh(request: gr.Request = None):
        tree = api.variant_tree()
        html = variants_html(tree)
        return (html, gr.update(choices=variant_choices(tree)), html, *registry_view(paths=roles.is_editor(request)))

    return Refresh(refresh, [table, pick, seen, registry_table, version, tracking_line])
