"""No module reads or writes a private name of another package's object (checked with ``ast``).

The rule, as checked here, for every module under ``src/tether`` outside
``tether.protocol`` (the core owns its own privates and imports no other
package of tether but the speedups):

- An attribute access ``x._name`` (one leading underscore, not a dunder) is
  allowed only when ``x`` is ``self`` or ``cls``, or when ``_name`` is
  defined in the module's own package: the directory the module is in
  (``tether.asyncio``, ``tether.hub``, ``tether.hub.brokers`` ... and the
  top-level ``tether``). "Defined" means assigned as ``self._name`` or
  ``cls._name``, declared in ``__slots__``, or bound by a ``def``, a
  ``class`` or an assignment in one of that package's modules: the object
  belongs to the package. (A name defined in both packages would pass;
  the test is a tripwire for reaching into another package, not a type
  checker.)
- ``from module import _name`` of a module in another package is refused
  the same way, unless ``_name`` is itself a module (tether's private
  modules, say ``tether._native``, are internal to the distribution and
  are imported whole).
- Type annotations are not checked: they name a type for the checker and
  read or write nothing at run time (``argparse._SubParsersAction`` has no
  public name).

Nothing is exempt.
"""

from __future__ import annotations

import ast
from pathlib import Path

import tether

SRC = Path(tether.__file__).parent
PROTOCOL = SRC / "protocol"


# namedtuple's documented public methods carry an underscore only to stay out
# of the field names' way (e.g. urllib's SplitResult._replace).
NAMEDTUPLE_API = frozenset({"_replace", "_asdict", "_fields", "_make", "_field_defaults"})


def _private(name: str) -> bool:
    if name in NAMEDTUPLE_API:
        return False
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _package(path: Path) -> str:
    return ".".join(("tether", *path.parent.relative_to(SRC).parts))


def _modules() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def _defined_private_names(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__slots__" for t in node.targets
        ):
            for element in ast.walk(node.value):
                if isinstance(element, ast.Constant) and isinstance(element.value, str):
                    names.add(element.value)
    return {name for name in names if _private(name)}


def _annotation_nodes(tree: ast.AST) -> set[int]:
    """ids of every node inside a type annotation."""
    inside: set[int] = set()
    roots: list[ast.AST] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.arg) and node.annotation is not None:
            roots.append(node.annotation)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.returns is not None:
            roots.append(node.returns)
        elif isinstance(node, ast.AnnAssign):
            roots.append(node.annotation)
    for root in roots:
        inside.update(id(n) for n in ast.walk(root))
    return inside


def _is_module(name: str) -> bool:
    parts = name.split(".")
    base = SRC.joinpath(*parts[1:])
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


def _violations() -> list[str]:
    trees = {path: ast.parse(path.read_text(encoding="utf-8")) for path in _modules()}
    defined: dict[str, set[str]] = {}
    for path, tree in trees.items():
        defined.setdefault(_package(path), set()).update(_defined_private_names(tree))
    found = []
    for path, tree in trees.items():
        if PROTOCOL in path.parents:
            continue
        own = defined[_package(path)]
        annotations = _annotation_nodes(tree)
        where = path.relative_to(SRC.parent)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and _private(node.attr):
                if id(node) in annotations or node.attr in own:
                    continue
                if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                    continue
                found.append(f"{where}:{node.lineno}: {ast.unparse(node)}")
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if not node.module.startswith("tether"):
                    continue
                for alias in node.names:
                    if not _private(alias.name) or _is_module(f"{node.module}.{alias.name}"):
                        continue
                    source_package = (
                        node.module if _is_package(node.module) else node.module.rpartition(".")[0]
                    )
                    if source_package != _package(path):
                        found.append(
                            f"{where}:{node.lineno}: from {node.module} import {alias.name}"
                        )
    return found


def _is_package(name: str) -> bool:
    return (SRC.joinpath(*name.split(".")[1:]) / "__init__.py").exists()


def test_no_private_access_across_packages() -> None:
    assert _violations() == []


def test_the_check_catches_what_it_should(tmp_path: Path) -> None:
    """The detector itself: a cross-package access is found, the allowed forms are not."""
    tree = ast.parse(
        "def f(conn: argparse._SubParsersAction) -> None:\n"
        "    self._mine = 1\n"
        "    conn.protocol._buf\n"
        "    conn._mine\n"
    )
    annotations = _annotation_nodes(tree)
    defined = _defined_private_names(tree)
    assert defined == {"_mine"}
    flagged = [
        ast.unparse(node)
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and _private(node.attr)
        and id(node) not in annotations
        and node.attr not in defined
    ]
    assert flagged == ["conn.protocol._buf"]
    assert _is_module("tether._native") and not _is_module("tether._no_such_module")


def _runtime_imports(path: Path) -> set[str]:
    """tether modules that ``path`` imports when it runs (anywhere but under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in (
            "TYPE_CHECKING",
            "typing.TYPE_CHECKING",
        ):
            for inner in node.body:
                typing_only.update(id(n) for n in ast.walk(inner))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("tether"))
        elif (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.level == 0
            and node.module.startswith("tether")
        ):
            found.add(node.module)
            found.update(
                f"{node.module}.{a.name}"
                for a in node.names
                if _is_module(f"{node.module}.{a.name}")
            )
    return found


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_import_cycles_in_the_hub() -> None:
    """Hub modules import each other without cycles, also through function-level imports."""
    # A module's own ancestor packages are imported before it anyway: no edge.
    graph = {
        name: {
            m
            for m in _runtime_imports(path)
            if m.startswith("tether.hub") and not name.startswith(m + ".")
        }
        for path in sorted((SRC / "hub").rglob("*.py"))
        for name in [_module_name(path)]
    }
    cycles = []
    for start in graph:
        stack = [(start, [start])]
        seen = set()
        while stack:
            module, trail = stack.pop()
            for target in graph.get(module, ()):
                if target == start:
                    cycles.append(" -> ".join([*trail, target]))
                elif target not in seen:
                    seen.add(target)
                    stack.append((target, [*trail, target]))
    assert cycles == []
