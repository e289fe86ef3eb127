"""The import rules of ARCHITECTURE.md ("What each room may import"), checked on the source.

An AST walk over every module of the package (each folder that ``[tool.setuptools] package-dir`` maps,
imports inside functions and under ``TYPE_CHECKING`` included, relative imports resolved). Each rule
lists every import that breaks it as ``file:line: import`` so a failure says what to move.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DIR: dict[str, str] = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))[
    "tool"]["setuptools"]["package-dir"]
#: the rooms: ``omniret.embed`` -> ``embed``; the core is ``omniret`` itself
ROOMS = {pkg.split(".", 1)[1] for pkg in PACKAGE_DIR if pkg != "omniret"}

#: imports known to break a rule, each with the reason it must stay; empty: every violation fails the test.
#: Entries: (file, imported module or ``module.name``).
IN_FLIGHT: set[tuple[str, str]] = set()


@dataclass(frozen=True)
class Import:
    """One imported module (``name`` None) or one name from a module, where it is written."""

    file: str  # relative to the repository root
    line: int
    module: str  # the importing module, e.g. omniret.index.ray_ingest
    target: str  # the imported module, absolute
    name: str | None = None

    def room(self) -> str | None:
        """The importing module's room (None: the core)."""
        return _room(self.module)

    def target_room(self) -> str | None:
        return _room(self.target)

    def __str__(self) -> str:
        what = f"from {self.target} import {self.name}" if self.name else f"import {self.target}"
        return f"{self.file}:{self.line}: {what}"


def _room(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ROOMS else None


def _modules() -> list[tuple[Path, str]]:
    """Every source file of the package with its module name."""
    out: list[tuple[Path, str]] = []
    for pkg, folder in sorted(PACKAGE_DIR.items()):
        base = ROOT / folder
        for path in sorted(base.rglob("*.py")):
            rel = path.relative_to(base).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            # a folder of the core that another mapping owns (none today) would be walked twice: skip it
            if pkg == "omniret" and parts and f"omniret.{parts[0]}" in PACKAGE_DIR:
                continue
            out.append((path, ".".join([pkg, *parts])))
    return out


def _absolute(package: str, level: int, module: str | None) -> str:
    """The module a ``from`` import names: ``from ..x import y`` in package ``a.b.c`` is ``a.b.x``."""
    if not level:
        return module or ""
    base = package.split(".")[: len(package.split(".")) - level + 1]
    return ".".join([*base, module] if module else base)


def _imports() -> list[Import]:
    found: list[Import] = []
    for path, module in _modules():
        rel = path.relative_to(ROOT).as_posix()
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=rel)):
            if isinstance(node, ast.Import):
                found += [Import(rel, node.lineno, module, a.name) for a in node.names if a.name.startswith("omniret")]
            elif isinstance(node, ast.ImportFrom):
                target = _absolute(package, node.level, node.module)
                if target.startswith("omniret"):
                    found += [Import(rel, node.lineno, module, target, a.name) for a in node.names]
    return found


IMPORTS = _imports()


def _report(broken: list[Import]) -> str:
    return "\n".join(str(i) for i in broken)


def _check(broken: list[Import]) -> None:
    left = [i for i in broken if (i.file, i.target if i.name is None else f"{i.target}.{i.name}") not in IN_FLIGHT]
    assert not left, "\n" + _report(left)


def test_the_walk_sees_every_room_and_its_imports() -> None:
    """The checks below are only as good as the walk: every room has modules and imports the core."""
    rooms = {_room(m) for _, m in _modules()}
    assert rooms == ROOMS | {None}
    assert any(i.file == "cli/index.py" and i.target_room() == "index" for i in IMPORTS)
    assert any(i.module == "omniret.api.routers.collections" and i.target == "omniret.index.collection"
               for i in IMPORTS)
    assert [i.target for i in IMPORTS if i.file == "omniret/__main__.py"] == ["omniret.cli"]
    # lazy imports inside functions count too
    assert any(i.file == "cli/index.py" and i.target == "omniret.index" for i in IMPORTS)


@pytest.mark.parametrize(("package", "level", "module", "absolute"), [
    ("omniret.api.routers", 1, "embeddings", "omniret.api.routers.embeddings"),
    ("omniret.api.routers", 2, "schemas", "omniret.api.schemas"),
    ("omniret.api.routers", 2, None, "omniret.api"),
    ("omniret.index", 0, "omniret.index.ingest", "omniret.index.ingest"),
])
def test_relative_imports_resolve_against_their_package(package: str, level: int, module: str | None,
                                                        absolute: str) -> None:
    assert _absolute(package, level, module) == absolute


def test_the_core_imports_no_room() -> None:
    """``omniret/`` is the ground: only ``omniret/__main__.py``, the entry point that runs the CLI, names one."""
    _check([i for i in IMPORTS if i.room() is None and i.target_room() is not None
            and i.file != "omniret/__main__.py"])


def test_only_the_cli_and_the_entry_point_import_the_cli() -> None:
    _check([i for i in IMPORTS if i.target_room() == "cli" and i.room() != "cli"
            and i.file != "omniret/__main__.py"])


def test_only_the_cli_imports_the_api() -> None:
    _check([i for i in IMPORTS if i.target_room() == "api" and i.room() not in ("api", "cli")])


def test_base_imports_only_the_core() -> None:
    _check([i for i in IMPORTS if i.room() == "base" and i.target_room() not in (None, "base")])


def test_embed_and_rerank_do_not_import_each_other() -> None:
    _check([i for i in IMPORTS if {i.room(), i.target_room()} == {"embed", "rerank"}])


def test_index_imports_no_room_above_it() -> None:
    _check([i for i in IMPORTS if i.room() == "index" and i.target_room() in ("api", "training", "evaluation", "cli")])


def _private(imp: Import) -> bool:
    """Another module's underscore name: ``from omniret.x import _y`` (a name, not a submodule of the
    importer's own package), or a ``_private`` module outside the package that holds it."""
    parts = imp.target.split(".")
    for i, part in enumerate(parts):
        if part.startswith("_") and not part.startswith("__"):
            owner = ".".join(parts[:i])
            if not (imp.module == owner or imp.module.startswith(owner + ".")):
                return True
    name = imp.name
    if name is None or not name.startswith("_") or name.startswith("__") or imp.target == imp.module:
        return False
    # ``from omniret.training import _meta`` inside omniret.training names its own private module
    return not imp.module.startswith(imp.target + ".")


def test_no_module_imports_another_modules_private_names() -> None:
    _check([i for i in IMPORTS if _private(i)])


@pytest.mark.parametrize(("module", "target", "name", "private"), [
    ("omniret.index.ray_ingest", "omniret.index.ingest", "_Writer", True),
    ("omniret.cli.index", "omniret.cli._app", "app", False),  # the package's own private module
    ("omniret.api.app", "omniret.cli._app", "app", True),
    ("omniret.training.anchored", "omniret.training._meta", "write_meta", False),
    ("omniret.index.collection", "omniret.index", "__version__", False),
    ("omniret.training.anchored", "omniret.training", "_meta", False),
])
def test_the_private_rule_on_known_cases(module: str, target: str, name: str, private: bool) -> None:
    assert _private(Import("x.py", 1, module, target, name)) is private
