"""Runtimes: how a variant is loaded and called. `load_predictor` asks the registry for the variant's runtime.

The registry (`jobs/runtimes/registry.py`) knows each runtime's name, its name for people, the files that identify
its variants, the devices it runs on, how to load a `Predictor` and what an exported app needs to run it. The
Space export, the wizard and the evaluate kind ask it rather than keeping their own lists.

How to add a runtime: write one module named `jobs/runtimes/<name>_runtime.py` (modules so named are found and
imported by the registry; a plugin module named in WORKBENCH_PLUGINS registers the same way). Follow
`jobs/runtimes/ort_runtime.py`: a `Predictor` subclass (`jobs/runtimes/base.py`) that implements `_forward`, and a
loader function decorated with `@register_runtime(name, display_name=..., files=..., devices=...,
export_requires=... or not_exportable=...)`. Import the runtime's library inside the loader and the Predictor,
never at the top of the module, so the registry stays importable on machines without it. A runtime that declares
`export_requires` must also be runnable by the exported app's own loader (`jobs/export/space_app.py`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jobs.runtimes.base import Predictor
from jobs.runtimes.registry import Runtime, all_runtimes, display_name, get_runtime, register_runtime

__all__ = ["Predictor", "Runtime", "all_runtimes", "display_name", "get_runtime", "load_predictor", "register_runtime"]


def load_predictor(variant: Any, device: str = "cpu", max_length: int | None = None, threads: int | None = None) -> Predictor:
    """A Predictor for a variant entity (uses `.runtime` and `.artifact_dir`) on `device` (cpu or cuda).

    `threads` caps CPU threads (torch intra-op threads for the whole process; the ONNX Runtime session's own).
    A runtime that cannot run on the CPU (TensorRT) runs on its own device when `device` is the default cpu.
    """
    # A stored variant fetches its files onto this node first (or says why it cannot); a deployment bundle's
    # variant is already local. Asked by duck type, because a bundle carries this module but not `storage`.
    if hasattr(variant, "ensure_local"):
        variant.ensure_local()
    runtime = get_runtime(variant.runtime)
    return runtime.load(Path(variant.artifact_dir), runtime.device_for(device), max_length, threads)
