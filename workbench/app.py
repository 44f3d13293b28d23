"""The Gradio app: one Blocks, one module per tab."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from workbench import http_endpoints, roles
from workbench.tabs import ab, compare, datasets, deploy, jobs, models, optimize, predictor, variants, wizard

TABS = [
    ("Models", models), ("Datasets", datasets), ("Wizard", wizard), ("Optimize", optimize), ("Variants", variants),
    ("Compare", compare), ("Predictor", predictor), ("A/B", ab), ("Deploy", deploy),
    ("Jobs", jobs),
]

# With accounts configured these start hidden and the page load shows them to editors only (cosmetic: every
# write handler in them refuses viewers on the server; see workbench.roles).
EDITOR_TABS = ("Models", "Datasets", "Optimize", "Jobs", "Wizard")
VIEWER_LANDING = "compare"  # the tab a viewer starts on

ASSETS = Path(__file__).resolve().parent / "assets"
CSS = (ASSETS / "style.css").read_text() if (ASSETS / "style.css").exists() else ""


def build_app() -> gr.Blocks:
    # every event checks the caller's role before it runs (viewers: only what roles.VIEWER_READABLE lists)
    with roles.GuardedBlocks(title="Transformer Deployment Workbench") as app:
        http_endpoints.register()  # first, so the public endpoints keep their names whatever the tabs call theirs
        gr.Markdown("# Transformer Deployment Workbench\nFrom a trained Transformer to a deployable one, with every result kept.")
        banner = gr.Markdown(visible=False, elem_id="role-banner")
        editor_tabs = []
        with gr.Tabs() as tabs:
            for title, module in TABS:
                with gr.Tab(title, id=title.lower()) as tab:
                    refresh = module.build()
                if title in EDITOR_TABS:
                    editor_tabs.append(tab)
                # What other tabs (or the worker) changed shows when a tab is opened or the page loads.
                tab.select(refresh.fn, None, refresh.outputs, api_visibility="private")
                app.load(refresh.fn, None, refresh.outputs, api_visibility="private")
        roles.show_for_role(app, banner, tabs, editor_tabs, landing=VIEWER_LANDING)
    return app
