"""Deploy tab, "Ship it": the picked variant as a deployment bundle (.zip) that runs without the workbench.

Editors only, like the variant's own download: the bundle holds the model files. The core writes and zips the
bundle (`jobs.api.zip_deployment`); this section only asks and shows what came back.
"""

from __future__ import annotations

import gradio as gr

from jobs import api
from storage.errors import WorkbenchError
from workbench import roles
from workbench.ui import fail, ok

PRIVATE = dict(api_visibility="private")  # a UI event, not an API endpoint


@roles.editor_only("export a deployment bundle")
def export_deployment_zip(variant: str | None):
    """The variant in the Deploy form (an id or NAME@ALIAS) as a bundle: server, Dockerfile, k8s, README."""
    hidden = gr.update(value=None, visible=False)
    ref = (variant or "").strip()
    if not ref:
        return fail("pick a variant (or type NAME@ALIAS) to export"), hidden
    try:
        archive = api.zip_deployment(ref)
    except WorkbenchError as exc:
        return fail(str(exc)), hidden
    return (ok(f"`{archive.name}`: unzip, then `pip install -r requirements.txt && python -m bundle_server`, "
               "or `docker build` (the Dockerfile was not built here) and `kubectl apply -f k8s/`; "
               "`sha256sum -c SHA256SUMS` checks every file. The README says the rest."),
            gr.update(value=str(archive), visible=True))


def build(variant: gr.components.Component) -> None:
    """The section, under the Deploy form; `variant` is the form's variant picker."""
    with gr.Accordion("Ship it: a deployment bundle (.zip) that runs without the workbench", open=False,
                      elem_id="deploy-export-section") as section:
        gr.Markdown("The variant picked above with the workbench's own model server (offline, `python -m "
                    "bundle_server`), its files and `SHA256SUMS`, pinned `requirements.txt`, a `Dockerfile` "
                    "(non-root, health check), Kubernetes manifests (Deployment with probes, Service, autoscaler) "
                    "and a README.")
        button = gr.Button("Export deployment bundle (.zip)", elem_id="deploy-export-button")
        status = gr.Markdown(elem_id="deploy-export-status")
        bundle = gr.File(label="Deployment bundle (.zip)", interactive=False, visible=False,
                         elem_id="deploy-export-zip")
    roles.editor_control(section)  # viewers do not see it; the handler refuses them anyway
    button.click(export_deployment_zip, variant, [status, bundle], **PRIVATE)
