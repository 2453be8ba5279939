"""Check the import direction of the three layers: service -> dicom_node -> processing.

``processing`` (arrays in, numbers out) imports neither ``dicom_node`` nor
``service`` nor any DICOM library; ``dicom_node`` (everything DICOM) does not
import ``service`` (the composition root); ``service`` does not import
pynetdicom (every association, as requestor or acceptor, is ``dicom_node``'s).
Every import counts: at module level, inside functions (lazy imports), under
``TYPE_CHECKING``, and ``importlib.import_module("...")`` with a literal name.

Inside each package, its direct members (modules and subpackages) must not
import each other in a cycle (``service.completion`` -> ``service.corrections``
-> ``service.completion``): a cycle, lazy or not, means two modules are one
concern split in two, or a third module is missing. The same imports count.

Run by ``make lint``::

    python tools/check_layers.py [ROOT]

Exit status 1 with one line per forbidden import (``path:line: ...``), else 0.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "FORBIDDEN",
    "KNOWN_CYCLES",
    "ImportCycle",
    "LayerViolation",
    "import_cycles",
    "imported_modules",
    "layer_violations",
    "main",
]

#: For each layer, the top-level packages it must not import, and why.
FORBIDDEN: dict[str, dict[str, str]] = {
    "processing": {
        "dicom_node": "processing is below dicom_node",
        "service": "processing is below service",
        "pydicom": "processing never reads DICOM",
        "highdicom": "processing never writes DICOM",
        "pynetdicom": "processing never talks DICOM",
    },
    "dicom_node": {
        "service": "dicom_node is below service",
    },
    "service": {
        "pynetdicom": "service holds no DICOM networking of its own: it goes through "
        "dicom_node (scu, receive, simulator)",
    },
}


@dataclass(frozen=True, slots=True)
class LayerViolation:
    """One import that runs against the layering."""

    path: Path
    line: int
    layer: str
    imported: str
    why: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.layer} imports {self.imported} ({self.why})"


def imported_modules(
    source: str, module: str, *, is_package: bool = False
) -> Iterator[tuple[int, str]]:
    """``(line, absolute module name)`` of every import in ``source`` of ``module``.

    Parameters
    ----------
    source
        The module's text.
    module
        Its dotted name (``dicom_node.receive.ul.pdu``), to resolve relative imports.
    is_package
        ``module`` is a package's ``__init__``.
    """
    package = module if is_package or "." not in module else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                yield node.lineno, f"{base}.{node.module}" if node.module else base
            elif node.module is not None:
                yield node.lineno, node.module
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.lineno, node.args[0].value


def layer_violations(root: Path) -> list[LayerViolation]:
    """Every forbidden import in the layers' packages under ``root``."""
    violations = []
    for layer, forbidden in FORBIDDEN.items():
        for path in sorted((root / layer).rglob("*.py")):
            relative = path.relative_to(root)
            module = ".".join(relative.with_suffix("").parts).removesuffix(".__init__")
            source = path.read_text(encoding="utf-8")
            is_package = path.name == "__init__.py"
            for line, imported in imported_modules(source, module, is_package=is_package):
                top = imported.split(".")[0]
                if top in forbidden:
                    violations.append(
                        LayerViolation(relative, line, layer, imported, forbidden[top])
                    )
    return violations


#: Cycles that exist today and are tolerated until they are broken, and why
#: (tests/unit/test_layers.py fails when one of them is gone, so that it is
#: removed from here too).
KNOWN_CYCLES: dict[tuple[str, ...], str] = {
    ("dicom_node.readers", "dicom_node.writers"): (
        "readers.report_reader uses writers.common (MANUFACTURER) and writers.sr uses "
        "readers.report_codes: the codes and the node's identity belong in a module both import"
    ),
}


@dataclass(frozen=True, slots=True)
class ImportCycle:
    """Members of one package that import each other in a cycle."""

    package: str
    members: tuple[str, ...]
    #: One import of each edge inside the cycle: ``path:line: a imports b``.
    edges: tuple[str, ...]

    def __str__(self) -> str:
        names = ", ".join(self.members)
        return f"import cycle in {self.package}: {names} ({'; '.join(self.edges)})"


def _import_targets(source: str, module: str, *, is_package: bool) -> Iterator[tuple[int, str]]:
    """:func:`imported_modules`, plus ``package.name`` for ``from package import name``.

    ``from . import pdu`` imports the module ``pdu`` when there is one; the
    caller keeps the names that are members of the package it looks at.
    """
    names: dict[int, list[str]] = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            names.setdefault(node.lineno, []).extend(alias.name for alias in node.names)
    for line, imported in imported_modules(source, module, is_package=is_package):
        yield line, imported
        for name in names.get(line, []):
            yield line, f"{imported}.{name}"


def _module_name(root: Path, path: Path) -> str:
    return ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")


def _members(package_dir: Path) -> list[Path]:
    """The direct members of a package: its modules and its subpackages."""
    modules = [p for p in package_dir.glob("*.py") if p.name != "__init__.py"]
    packages = [p for p in package_dir.iterdir() if (p / "__init__.py").is_file()]
    return sorted(modules + packages)


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """Every node a path of one or more edges leads to from ``start``."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        for successor in graph[todo.pop()]:
            if successor not in seen:
                seen.add(successor)
                todo.append(successor)
    return seen


def _cycles(graph: dict[str, set[str]]) -> list[tuple[str, ...]]:
    """The strongly connected components with more than one node, each sorted.

    The graphs are a package's members (tens of nodes): reachability from each
    node is cheap, and two nodes are in one component when each reaches the other.
    """
    reach = {node: _reachable(graph, node) for node in graph}
    components = {
        tuple(sorted(other for other in graph if other in reach[node] and node in reach[other]))
        for node in graph
        if node in reach[node]
    }
    return sorted(component for component in components if len(component) > 1)


def import_cycles(
    root: Path, layers: tuple[str, ...] = ("service", "dicom_node", "processing")
) -> list[ImportCycle]:
    """Every import cycle between the direct members of a package under ``root``."""
    cycles = []
    package_dirs = [
        init.parent for layer in layers for init in sorted((root / layer).rglob("__init__.py"))
    ]
    for package_dir in package_dirs:
        package = _module_name(root, package_dir / "__init__.py")
        members = {_module_name(root, m): m for m in _members(package_dir)}
        graph: dict[str, set[str]] = {name: set() for name in members}
        first_import: dict[tuple[str, str], str] = {}
        for name, member in members.items():
            files = sorted(member.rglob("*.py")) if member.is_dir() else [member]
            for path in files:
                source = path.read_text(encoding="utf-8")
                module = _module_name(root, path)
                is_package = path.name == "__init__.py"
                for line, imported in _import_targets(source, module, is_package=is_package):
                    target = next(
                        (m for m in members if imported == m or imported.startswith(m + ".")),
                        None,
                    )
                    if target is None or target == name:
                        continue
                    graph[name].add(target)
                    where = f"{path.relative_to(root)}:{line}: {module} imports {imported}"
                    first_import.setdefault((name, target), where)
        for component in _cycles(graph):
            edges = tuple(
                first_import[(a, b)] for a in component for b in sorted(graph[a]) if b in component
            )
            cycles.append(ImportCycle(package, component, edges))
    return cycles


def main(argv: list[str] | None = None) -> int:
    """Print the violations under the root (default: this repository); 1 when there are any."""
    args = sys.argv[1:] if argv is None else argv
    root = Path(args[0]) if args else Path(__file__).resolve().parents[1]
    missing = [layer for layer in FORBIDDEN if not (root / layer).is_dir()]
    if missing:
        print(f"check_layers: no {', '.join(missing)} under {root}", file=sys.stderr)
        return 2
    violations = layer_violations(root)
    for violation in violations:
        print(violation)
    if violations:
        print("layers: service -> dicom_node -> processing", file=sys.stderr)
    cycles = [cycle for cycle in import_cycles(root) if cycle.members not in KNOWN_CYCLES]
    for cycle in cycles:
        print(cycle)
    return 1 if violations or cycles else 0


if __name__ == "__main__":
    sys.exit(main())
