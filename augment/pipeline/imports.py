"""Which library modules a stage runs: read off the real import graph (``ast``, nothing imported).

``stage_modules(stage)`` starts from the imports inside the stage's adapter function (plus the
adapter module's own top-level imports) and follows every ``augment.*`` import of those modules,
function-local imports included, transitively. DVC's ``deps`` (checked by a test) and the Prefect
cache keys (:mod:`augment.flows.caching`) both come from it, so an edit to any module a stage imports,
however indirectly, re-runs that stage.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable

PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the folder that holds augment/


def module_file(module: str, root: Path = PACKAGE_ROOT) -> Path | None:
    """``augment.core.files`` -> ``<root>/augment/core/files.py`` (or a package's ``__init__.py``)."""
    base = root.joinpath(*module.split("."))
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def _imports(tree: ast.AST, package: str) -> set[str]:
    """Every ``augment.*`` module named by an import anywhere in ``tree``."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "augment")
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:  # relative import
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([mod] if mod else []))
            if mod.split(".")[0] != "augment":
                continue
            found.add(mod)
            for a in node.names:  # `from augment.pipeline import stages` names a module
                found.add(f"{mod}.{a.name}")
    return found


def _parents(module: str) -> Iterable[str]:
    parts = module.split(".")
    return (".".join(parts[:i]) for i in range(1, len(parts)))


@lru_cache(maxsize=None)
def _module_imports(module: str, root: Path) -> frozenset[str]:
    f = module_file(module, root)
    if f is None:
        return frozenset()
    package = module if f.name == "__init__.py" else module.rsplit(".", 1)[0]
    return frozenset(_imports(ast.parse(f.read_text()), package))


def closure(modules: Iterable[str], root: Path = PACKAGE_ROOT) -> set[str]:
    """``modules`` and every ``augment.*`` module they import, transitively (existing files only).

    Importing ``a.b.c`` also runs ``a/__init__.py`` and ``a/b/__init__.py``: those count too."""
    seen: set[str] = set()
    todo = list(modules)
    while todo:
        m = todo.pop()
        if m in seen or module_file(m, root) is None:
            continue
        seen.add(m)
        todo.extend(_module_imports(m, root))
        todo.extend(_parents(m))
    return seen


def function_imports(fn: Callable[..., Any]) -> set[str]:
    """Modules imported by ``fn``'s body and by its module at top level (not the other functions'
    local imports: one adapter module holds every stage)."""
    mod = inspect.getmodule(fn)
    assert mod is not None
    package = mod.__name__.rsplit(".", 1)[0]
    body = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    top = ast.parse(Path(inspect.getfile(fn)).read_text())
    top_level = ast.Module(body=[n for n in top.body if isinstance(n, (ast.Import, ast.ImportFrom))], type_ignores=[])
    return _imports(body, package) | _imports(top_level, package)


def stage_modules(stage: Any, root: Path = PACKAGE_ROOT) -> list[Path]:
    """Files of every library module ``stage`` runs, sorted (relative paths under ``root``)."""
    mods = closure(function_imports(stage.run), root)
    files = {module_file(m, root) for m in mods} | {module_file(stage.run.__module__, root)}
    return sorted(f.relative_to(root) for f in files if f is not None)
