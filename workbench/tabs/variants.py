"""Variants tab: every variant as a lineage tree with its evaluation and flag; one variant's recipe and charts."""

from __future__ import annotations

import json
from typing import Any

import gradio as gr

from jobs import api
from storage.errors import WorkbenchError
from workbench import charts
from workbench.ui import Refresh, esc, fail, mb

REFRESH_S = 3.0
COLUMNS = ("id", "variant", "runtime", "precision", "size", "accuracy", "Δ vs parent", "agreement", "flag")


def _pct(x: float | None, digits: int = 2) -> str:
    return "" if x is None else f"{x:.{digits}%}"


def _points(drop: float | None) -> str:
    """Accuracy change against the parent, signed, with a real minus sign: '−2.50 pts'."""
    if drop is None:
        return ""
    delta = 0.0 - drop
    return f"{delta:+.2f} pts".replace("-", "−")


def _short(points: float) -> str:
    return f"{points:.2f}".rstrip("0").rstrip(".")


def flag_text(drop: float | None) -> str:
    return f"⚠ {_short(drop or 0.0)} pts below parent"


def _step_name(s) -> str:
    return s.label


def _accuracy_cell(s) -> str:
    if s.accuracy is not None:
        title = f"macro-F1 {s.macro_f1:.4f} on {s.num_examples:,} examples" if s.num_examples else ""
        return f"<span class='accuracy' title='{title}'>{_pct(s.accuracy)}</span>"
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
        agreement = _pct(s.agreement_with_parent, 1)
        compared = (f" title='parent {_pct(s.parent_accuracy)} on the same {s.num_examples:,} examples'"
                    if s.parent_accuracy is not None and s.num_examples else "")
        row_class = " class='flagged'" if s.flagged else ""
        rows.append(
            f"<tr data-variant-id='{s.id}' data-flagged='{str(s.flagged).lower()}' data-step='{esc(s.step)}' "
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


def _choices(tree) -> list[tuple[str, str]]:
    return [(f"#{s.id} {s.name} ({s.runtime} {s.precision})", str(s.id)) for s in tree]


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


def recipe_markdown(variant) -> str:
    lines = ["**Recipe** (parameters that differ from the defaults; the full recipe is in *Facts*)"]
    for i, step in enumerate(variant.recipe.get("steps", []), start=1):
        kind = step.get("kind", "?")
        if kind == "intake":
            lines.append(f"{i}. **intake** — {esc(step.get('source', ''))}")
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
        state = summary.evaluation if summary is not None else "not evaluated"
        return f"**Evaluation:** {esc(state)}"
    lines = ["**Evaluations**", "",
             "| # | split | examples | accuracy | macro-F1 | parent accuracy | Δ vs parent | agreement | flag |",
             "|---|---|---|---|---|---|---|---|---|"]
    for ev in evaluations:
        flag = (f"<span class='flag-badge'>{flag_text(ev.drop_points)}</span> (tolerance {ev.tolerance_points:g})"
                if ev.flagged else ("ok" if ev.parent_accuracy is not None else ""))
        lines.append(
            f"| {ev.id} | {ev.split} | {ev.num_examples:,} | {_pct(ev.accuracy)} | {ev.macro_f1:.4f} | "
            f"{_pct(ev.parent_accuracy)} | {_points(ev.drop_points)} | {_pct(ev.agreement_with_parent, 1)} | {flag} |"
        )
    return "\n".join(lines)


def facts(variant) -> dict[str, Any]:
    """What the jobs recorded (quantization, pruning, export parity, training settings), without the curve."""
    info = dict(variant.info)
    if isinstance(info.get("training"), dict):
        info["training"] = {k: v for k, v in info["training"].items() if k != "history"}
    return {
        "info": info,
        "files": [f"{f['path']} ({f['size']:,} bytes)" for f in variant.files],
        "sha256": variant.sha256,
        "recipe": variant.recipe,
    }


EMPTY = ("Pick a variant to see its lineage, recipe, evaluations and charts.", "", "",
         gr.update(value=None, visible=False), gr.update(value=None, visible=False), None)


def variant_view(ref: str | None):
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
    return ("\n\n".join(header), recipe_markdown(v), evaluations_markdown(evaluations, summary), confusion, curve, facts(v))


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
    seen = gr.State("")

    detail_outputs = [summary, recipe, evaluations, confusion, curve, info]

    def tick(ref: str | None, last: str):
        """Redraw only what changed: the table, the dropdown when variants appear, the detail when re-evaluated."""
        tree = api.variant_tree()
        html = variants_html(tree)
        if html == last:
            return (gr.skip(), gr.skip(), last, *[gr.skip()] * len(detail_outputs))
        detail = variant_view(ref) if ref else [gr.skip()] * len(detail_outputs)
        return (html, gr.update(choices=_choices(tree)), html, *detail)

    gr.Timer(REFRESH_S).tick(tick, [pick, seen], [table, pick, seen, *detail_outputs], show_progress="hidden")
    pick.change(variant_view, pick, detail_outputs)

    def refresh():
        tree = api.variant_tree()
        html = variants_html(tree)
        return html, gr.update(choices=_choices(tree)), html

    return Refresh(refresh, [table, pick, seen])
