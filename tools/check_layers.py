"""Check the import direction of the three layers: service -> dicom_node -> processing.

``processing`` (arrays in, numbers out) imports neither ``dicom_node`` nor
``service`` nor any DICOM library; ``dicom_node`` (everything DICOM) does not
import ``service`` (the composition root). Every import counts: at module
level, inside functions (lazy imports), under ``TYPE_CHECKING``, and
``importlib.import_module("...")`` with a literal name.

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

__all__ = ["FORBIDDEN", "LayerViolation", "imported_modules", "layer_violations", "main"]

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
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
