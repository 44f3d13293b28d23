"""Compare → Searches: a search's budget, best-so-far, Pareto chart and trials, read-only (viewers included).

Editors launch and follow a search from the Wizard's Search path, a tab viewers do not get; this section lets a
stakeholder with the link read the same figures, without the re-run button or any server path.
"""

from __future__ import annotations

import gradio as gr

from jobs import api
from storage.errors import WorkbenchError
from workbench.tabs.wizard_search import search_choices, views
from workbench.ui import fail

NONE_YET = "No search yet: an editor starts one from the Wizard's **Search** path."


def searches_view(ref: str | None, axis: str = "accuracy"):
    """The picked search (the newest when none is picked): picker, budget line, best sentence, chart, table."""
    choices = search_choices()
    hidden = gr.update(visible=False)
    if not choices:
        return gr.update(choices=[], value=None), NONE_YET, "", hidden, hidden
    values = [value for _, value in choices]
    picked = ref if ref in values else values[0]
    try:
        status = api.search_status(int(picked))
    except WorkbenchError as exc:
        return gr.update(choices=choices, value=picked), fail(str(exc)), "", hidden, hidden
    budget, best, chart, table, _trials = views(status, axis)
    return gr.update(choices=choices, value=picked), budget, best, chart, table


def build() -> None:
    with gr.Accordion("Searches (trials, Pareto front and best so far)", open=False) as section:
        with gr.Row():
            picker = gr.Dropdown(label="Search", choices=[], elem_id="searches-pick", scale=3)
            axis = gr.Radio([("accuracy", "accuracy"), ("points lost", "drop")], value="accuracy",
                            label="Chart's y axis", elem_id="searches-axis", scale=2)
        budget = gr.Markdown(elem_id="searches-budget")
        best = gr.Markdown(elem_id="searches-best")
        chart = gr.Plot(elem_id="searches-chart", show_label=False, visible=False)
        table = gr.Dataframe(label="Trials (★ best so far, ◆ Pareto front)", interactive=False, visible=False,
                             elem_id="searches-table", wrap=True)
    gr.on([section.expand, picker.input, axis.change], searches_view, [picker, axis],
          [picker, budget, best, chart, table], show_progress="hidden")
