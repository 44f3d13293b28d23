"""Copy workbench modules into a bundle under a package of its own, with their imports redirected there.

A deployment bundle runs the workbench's own model server (app, batcher, metrics, runtime, input checks) without
the workbench installed. Rather than keep a second copy of that code in the repository, `vendor` copies the
source files at export time: it starts from root modules, follows every module-level import of a workbench
package (`jobs`, `storage`) to the modules it needs, and rewrites each such import (`from jobs.serving.app
import X` becomes `from bundle_server.jobs.serving.app import X`) with the statement's own position in the
parsed source, so nothing else in the file changes.

Imports inside functions (and under `if TYPE_CHECKING:`) are code paths the module may never take (a task's
quality metric, the database): they are rewritten but followed only within `FOLLOWED_LAZILY` (a runtime imports
its helpers lazily). A module that needs the database or the UI (`FORBIDDEN_MODULES`, `FORBIDDEN_LIBRARIES`) is
refused with the chain of imports that reached it, so a change to the server that would make it depend on them
fails the export instead of shipping a bundle that cannot start.

The third-party modules the copied code imports (at any level) are returned, for requirements.txt.
"""

from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from storage.errors import InvalidInput

REPO = Path(__file__).resolve().parents[2]
WORKBENCH_PACKAGES = ("jobs", "storage")  # what gets copied; `workbench` (the UI) never is
FOLLOWED_LAZILY = ("jobs.runtimes",)  # lazy imports of these packages are needed to load a variant
# the database, the UI and the job queue: a server that needs them cannot run from a bundle
FORBIDDEN_MODULES = ("storage.db", "storage.orm", "storage.catalog", "storage.queue", "jobs.api", "workbench")
FORBIDDEN_LIBRARIES = ("sqlalchemy", "alembic", "gradio", "mlflow")


@dataclass
class Vendored:
    package: str
    modules: list[str]  # workbench modules copied, by their original name
    libraries: set[str] = field(default_factory=set)  # top-level names of third-party modules the copies import
    not_followed: list[str] = field(default_factory=list)  # lazily imported workbench modules left out


def _root(name: str) -> str:
    return name.split(".", 1)[0]


def _is_workbench(name: str) -> bool:
    return _root(name) in WORKBENCH_PACKAGES or _root(name) == "workbench"


def source_path(module: str) -> Path | None:
    """The file of a workbench module (`pkg/__init__.py` for a package), or None when there is none."""
    base = REPO.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


@dataclass(frozen=True)
class _Import:
    node: ast.Import | ast.ImportFrom
    modules: tuple[str, ...]  # workbench modules it loads (a `from pkg import submodule` names the submodule)
    lazy: bool  # inside a function


def _type_checking(node: ast.AST) -> bool:
    """`if TYPE_CHECKING:` (or `typing.TYPE_CHECKING`): imports for type checkers only, never run."""
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.Module) -> tuple[list[_Import], set[str]]:
    """The module's imports of workbench modules, and the top-level names of the other (non-stdlib) ones."""
    found: list[_Import] = []
    libraries: set[str] = set()

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) or _type_checking(child)
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
                mine = tuple(n for n in names if _is_workbench(n))
                libraries.update(_root(n) for n in names if not _is_workbench(n))
                if mine:
                    found.append(_Import(child, mine, lazy))
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    raise InvalidInput(f"relative import at line {child.lineno}: the copier handles absolute ones")
                module = child.module or ""
                if _is_workbench(module):
                    subs = tuple(f"{module}.{a.name}" for a in child.names if source_path(f"{module}.{a.name}"))
                    found.append(_Import(child, (module, *subs), lazy))
                else:
                    libraries.add(_root(module))
            else:
                visit(child, inner)

    visit(tree, False)
    return found, {name for name in libraries if name and name not in sys.stdlib_module_names
                   and name != "__future__"}


def _offset(lines: list[str], lineno: int, col: int) -> int:
    """A character offset in the source from ast's (line, UTF-8 byte column)."""
    before = sum(len(line) for line in lines[: lineno - 1])
    return before + len(lines[lineno - 1].encode("utf-8")[:col].decode("utf-8"))


def _rewritten(statement: _Import, segment: str, package: str) -> str:
    node = statement.node
    if isinstance(node, ast.ImportFrom):
        return re.sub(rf"^from\s+{re.escape(node.module or '')}\b", f"from {package}.{node.module}", segment)
    if any(_is_workbench(alias.name) and alias.asname is None for alias in node.names):
        # `import jobs.x` binds the name `jobs`; redirected, it would bind the bundle's package instead
        names = ", ".join(alias.name for alias in node.names)
        raise InvalidInput(f"'import {names}' at line {node.lineno} needs an 'as' name to be copied into a bundle")
    parts = [f"{package}.{a.name}" if _is_workbench(a.name) else a.name for a in node.names]
    return "import " + ", ".join(f"{name} as {a.asname}" if a.asname else name
                                 for name, a in zip(parts, node.names, strict=True))


def redirect_imports(source: str, package: str) -> tuple[str, list[_Import], set[str]]:
    """`source` with each import of a workbench module redirected under `package`; its imports; its libraries."""
    tree = ast.parse(source)
    statements, libraries = _imports(tree)
    lines = source.splitlines(keepends=True)
    out = source
    for statement in sorted(statements, key=lambda s: (s.node.lineno, s.node.col_offset), reverse=True):
        node = statement.node
        start = _offset(lines, node.lineno, node.col_offset)
        end = _offset(lines, node.end_lineno or node.lineno, node.end_col_offset or 0)
        out = out[:start] + _rewritten(statement, out[start:end], package) + out[end:]
    return out, statements, libraries


def _forbidden(module: str) -> bool:
    return any(module == f or module.startswith(f + ".") for f in FORBIDDEN_MODULES)


def vendor(roots: list[str], target: Path, package: str, *, header: str) -> Vendored:
    """Copy `roots` and every workbench module they need into `target/<package>/...` (the original layout
    under the new package), imports redirected. `header` (comment lines) goes on top of each copy."""
    result = Vendored(package, [])
    wanted: list[tuple[str, tuple[str, ...]]] = [(root, (root,)) for root in roots]
    seen: set[str] = set()
    not_followed: set[str] = set()
    while wanted:
        module, chain = wanted.pop(0)
        if module in seen:
            continue
        if _forbidden(module):
            raise InvalidInput(f"the model server needs {module} ({' -> '.join(chain)}), which a bundle cannot "
                               "carry (the database or the UI); not exported")
        path = source_path(module)
        if path is None:
            raise InvalidInput(f"cannot find the source of {module} ({' -> '.join(chain)}) to copy into the bundle")
        seen.add(module)
        # the packages above a module run first on import, so they are copied (and followed) too
        parts = module.split(".")
        wanted += [(".".join(parts[:i]), chain) for i in range(1, len(parts))]
        text, statements, libraries = redirect_imports(path.read_text(encoding="utf-8"), package)
        banned = sorted(libraries & set(FORBIDDEN_LIBRARIES))
        if banned:
            raise InvalidInput(f"the model server's {module} ({' -> '.join(chain)}) imports {', '.join(banned)}, "
                               "which a bundle does not carry; not exported")
        result.libraries |= libraries
        for statement in statements:
            for name in statement.modules:
                follow = not statement.lazy or any(name == p or name.startswith(p + ".") for p in FOLLOWED_LAZILY)
                if follow:
                    wanted.append((name, (*chain, name)))
                else:
                    not_followed.add(name)
        relative = path.relative_to(REPO)
        out = target / package / relative
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(f"{header}\n# Copied from {relative.as_posix()}.\n{text}", encoding="utf-8")
        result.modules.append(module)
    result.not_followed = sorted(not_followed - seen)
    return result
