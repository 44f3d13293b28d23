"""The runtime registry: runtime name -> how a variant of it is loaded, where it runs and what an export needs.

Each runtime module (`jobs/runtimes/*_runtime.py`) registers itself with `@register_runtime(...)` on the function
that loads one of its variants. Registering imports nothing heavy: the module imports its library (torch,
onnxruntime, tensorrt) inside that function, so listing runtimes, naming them for people or choosing a device
works on any machine. Everything that differs by runtime asks here instead of testing `variant.runtime`.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from jobs.plugins import Registry

if TYPE_CHECKING:
    from jobs.runtimes.base import Predictor

# load(model_dir, device, max_length, threads) -> a Predictor; `threads` caps CPU threads where the runtime can
Loader = Callable[[Path, str, "int | None", "int | None"], "Predictor"]
MODULE_SUFFIX = "_runtime"  # every module of this package named so is a runtime and is imported to register it


@dataclass(frozen=True)
class Requirement:
    """A distribution an exported app installs, pinned to the version installed here. `same_as` names other
    builds of the same library (onnxruntime-gpu for onnxruntime) whose installed version pins it just as well."""

    dist: str
    same_as: tuple[str, ...] = ()


@dataclass(frozen=True)
class Runtime:
    name: str  # what a variant stores as its runtime
    display_name: str  # for people: "ONNX Runtime"
    files: tuple[str, ...]  # glob patterns: a variant directory holding any of them has something this runtime loads
    devices: tuple[str, ...]  # device types it runs on, its default first
    load: Loader
    # what an exported app (a Space) must install to run it; None when it cannot be exported (see not_exportable)
    export_requires: tuple[Requirement, ...] | None
    not_exportable: str = ""  # why not, for the user, when export_requires is None

    @property
    def default_device(self) -> str:
        """Where its jobs run when nothing asks otherwise (cuda for a GPU-only runtime)."""
        return self.devices[0]

    @property
    def exportable(self) -> bool:
        return self.export_requires is not None

    def device_for(self, wanted: str) -> str:
        """`wanted` ("cpu", "cuda", "cuda:1") if this runtime runs there. "cpu" is every caller's default, so a
        runtime without CPU support runs on its own default device instead; any other device is refused."""
        if wanted.split(":", 1)[0] in self.devices:
            return wanted
        if wanted == "cpu":
            return self.default_device
        raise ValueError(f"{self.display_name} runs on {' or '.join(self.devices)}, not {wanted!r}")

    def finds_files(self, model_dir: Path | str) -> bool:
        """Whether a variant directory holds a file this runtime loads (model.onnx for ONNX Runtime, ...)."""
        directory = Path(model_dir)
        return any(next(directory.glob(pattern), None) is not None for pattern in self.files)


def _import_runtime_modules() -> None:
    import jobs.runtimes as package

    for module in pkgutil.iter_modules(package.__path__):
        if module.name.endswith(MODULE_SUFFIX):
            importlib.import_module(f"{package.__name__}.{module.name}")


_RUNTIMES: Registry[Runtime] = Registry("runtime", "runtimes", _import_runtime_modules)


def register_runtime(
    name: str,
    *,
    display_name: str,
    files: tuple[str, ...],
    devices: tuple[str, ...],
    export_requires: tuple[str | Requirement, ...] | None = None,
    not_exportable: str = "",
) -> Callable[[Loader], Loader]:
    """Register the decorated loader as runtime `name` (see `Runtime` for what each argument declares)."""
    if not devices:
        raise ValueError(f"runtime {name!r} must run on at least one device")
    if not files:
        raise ValueError(f"runtime {name!r} must name the files that identify its variants")
    if (export_requires is None) == (not not_exportable):
        raise ValueError(f"runtime {name!r}: give either export_requires or not_exportable (why it cannot be exported)")
    requires = None if export_requires is None else tuple(
        r if isinstance(r, Requirement) else Requirement(r) for r in export_requires
    )

    def decorate(load: Loader) -> Loader:
        _RUNTIMES.add(name, Runtime(name, display_name, tuple(files), tuple(devices), load, requires, not_exportable),
                      load.__module__)
        return load

    return decorate


def load_runtimes() -> None:
    """Import the built-in runtime modules and any WORKBENCH_PLUGINS modules (each registers on import)."""
    _RUNTIMES.load()


def get_runtime(name: str) -> Runtime:
    return _RUNTIMES.get(name)


def all_runtimes() -> list[Runtime]:
    return _RUNTIMES.all()


def display_name(name: str) -> str:
    """A runtime's name for people ("ONNX Runtime"); the stored name itself for one not registered here."""
    runtime = _RUNTIMES.find(name)
    return runtime.display_name if runtime else name
