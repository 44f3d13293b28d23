"""The Gradio app: one Blocks, one module per tab."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from workbench.tabs import datasets, jobs, models

ASSETS = Path(__file__).resolve().parent / "assets"
CSS = (ASSETS / "style.css").read_text() if (ASSETS / "style.css").exists() else ""


def build_app() -> gr.Blocks:
    with gr.Blocks(title="Transformer Deployment Workbench") as app:
        gr.Markdown("# Transformer Deployment Workbench\nFrom a trained Transformer to a deployable one, with every result kept.")
        with gr.Tabs():
            with gr.Tab("Models", id="models"):
                models.build()
            with gr.Tab("Datasets", id="datasets"):
                datasets.build()
            with gr.Tab("Jobs", id="jobs") as jobs_tab:
                refresh_choices, choice_outputs = jobs.build()
        # Models and datasets added in other tabs appear in the Jobs dropdowns when the tab is opened.
        jobs_tab.select(refresh_choices, None, choice_outputs)
        app.load(refresh_choices, None, choice_outputs)
    return app
