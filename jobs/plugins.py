"""Named parts registered by the modules that define them (job kinds, runtimes), and WORKBENCH_PLUGINS: modules a
deployment adds, each registering kinds, runtimes or tasks when imported. Every registry imports the built-in
modules and the plugins before it answers, so a plugin is found wherever it is used."""

from __future__ import annotations

import importlib
from typing import Callable, Generic, TypeVar

from storage import settings
from storage.errors import InvalidInput

T = TypeVar("T")


def import_plugins() -> None:
    """Import every module named in WORKBENCH_PLUGINS (Python caches them: registering happens once)."""
    for module in filter(None, (m.strip() for m in settings.get("WORKBENCH_PLUGINS").split(","))):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise InvalidInput(f"WORKBENCH_PLUGINS: cannot import {module!r}: {exc}") from None


class Registry(Generic[T]):
    """One sort of named part (`what`: "job kind", "runtime"), filled by `add` as its modules are imported."""

    def __init__(self, what: str, plural: str, import_builtins: Callable[[], None]):
        self.what, self.plural = what, plural
        self._import_builtins = import_builtins
        self._items: dict[str, T] = {}
        self._module_of: dict[str, str] = {}
        self._loaded = False

    def add(self, name: str, item: T, module: str) -> None:
        """Register `item` (defined in `module`) under `name`; a name registered twice is a programming error."""
        if name in self._items:
            raise ValueError(f"{self.what} {name!r} is registered twice ({self._module_of[name]} and {module})")
        self._items[name] = item
        self._module_of[name] = module

    def copy(self) -> Registry[T]:
        """The same entries in a registry that imports its modules again on first use (for tests that register
        their own entries without leaving them behind)."""
        twin: Registry[T] = Registry(self.what, self.plural, self._import_builtins)
        twin._items, twin._module_of = dict(self._items), dict(self._module_of)
        return twin

    def load(self) -> None:
        """Import the built-in modules and the plugins (once)."""
        if not self._loaded:
            self._import_builtins()
            import_plugins()
            self._loaded = True

    def find(self, name: str) -> T | None:
        self.load()
        return self._items.get(name)

    def get(self, name: str) -> T:
        item = self.find(name)
        if item is None:
            raise InvalidInput(f"unknown {self.what} {name!r}; known {self.plural}: {', '.join(sorted(self._items))}")
        return item

    def all(self) -> list[T]:
        self.load()
        return [self._items[name] for name in sorted(self._items)]
