"""The layering service -> dicom_node -> processing holds, no package's members import each
other in a cycle, and the checker sees every import."""

from __future__ import annotations

from pathlib import Path

from tools.check_layers import (
    KNOWN_CYCLES,
    import_cycles,
    imported_modules,
    layer_violations,
    main,
)

REPO = Path(__file__).resolve().parents[2]


def test_the_repository_keeps_its_layers() -> None:
    assert [str(violation) for violation in layer_violations(REPO)] == []


def _write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def test_every_kind_of_backward_import_is_found(tmp_path: Path) -> None:
    _write(tmp_path, "processing/__init__.py", "")
    _write(
        tmp_path,
        "processing/sub/fit.py",
        "import importlib\n"
        "import numpy\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from dicom_node.errors import DicomNodeError\n"
        "def lazy() -> None:\n"
        "    import pydicom\n"
        "    importlib.import_module('service.cli')\n"
        "from .. import exam\n",
    )
    _write(tmp_path, "dicom_node/__init__.py", "from service.settings import Settings\n")
    _write(tmp_path, "dicom_node/ok.py", "from processing.exam import DwiExam\nimport pydicom\n")
    _write(tmp_path, "service/ok.py", "import dicom_node\nimport processing\nimport pydicom\n")
    _write(tmp_path, "service/demo.py", "def pacs() -> None:\n    from pynetdicom import AE\n")
    found = {(str(v.path), v.line, v.imported) for v in layer_violations(tmp_path)}
    assert found == {
        ("processing/sub/fit.py", 5, "dicom_node.errors"),
        ("processing/sub/fit.py", 7, "pydicom"),
        ("processing/sub/fit.py", 8, "service.cli"),
        ("dicom_node/__init__.py", 1, "service.settings"),
        ("service/demo.py", 2, "pynetdicom"),
    }
    assert main([str(tmp_path)]) == 1
    assert main([str(tmp_path / "nowhere")]) == 2


def test_relative_imports_resolve_against_their_package() -> None:
    source = "from . import pdu\nfrom .. import errors\nfrom .dimse import x\n"
    assert list(imported_modules(source, "dicom_node.ul.association")) == [
        (1, "dicom_node.ul"),
        (2, "dicom_node"),
        (3, "dicom_node.ul.dimse"),
    ]
    assert list(imported_modules(source, "dicom_node.ul", is_package=True)) == [
        (1, "dicom_node.ul"),
        (2, "dicom_node"),
        (3, "dicom_node.ul.dimse"),
    ]


def test_the_repository_has_no_new_import_cycle() -> None:
    cycles = {cycle.members: str(cycle) for cycle in import_cycles(REPO)}
    assert [text for members, text in cycles.items() if members not in KNOWN_CYCLES] == []
    # A known cycle that is gone must leave KNOWN_CYCLES too.
    assert set(KNOWN_CYCLES) <= set(cycles)


def test_import_cycles_between_members_of_one_package_are_found(tmp_path: Path) -> None:
    _write(tmp_path, "service/__init__.py", "")
    # The cycle of issue 16, through a lazy import.
    _write(tmp_path, "service/completion.py", "from service.corrections import apply\n")
    _write(
        tmp_path,
        "service/corrections.py",
        "def apply() -> None:\n    from service import completion\n",
    )
    # No cycle: one direction only, and imports from outside the package.
    _write(tmp_path, "service/cli.py", "import service.completion\nimport dicom_node.x\n")
    # Subpackages are members of their parent: a cycle through a relative import.
    _write(tmp_path, "service/store/__init__.py", "")
    _write(tmp_path, "service/store/queue.py", "from ..retention import plan\n")
    _write(tmp_path, "service/retention.py", "from service.store.queue import Queue\n")
    # Inside a subpackage, its own members.
    _write(tmp_path, "service/store/a.py", "from . import b\n")
    _write(tmp_path, "service/store/b.py", "from .a import x\n")
    for layer in ("dicom_node", "processing"):
        _write(tmp_path, f"{layer}/__init__.py", "")
    cycles = import_cycles(tmp_path)
    assert [(cycle.package, cycle.members) for cycle in cycles] == [
        ("service", ("service.completion", "service.corrections")),
        ("service", ("service.retention", "service.store")),
        ("service.store", ("service.store.a", "service.store.b")),
    ]
    assert cycles[0].edges == (
        "service/completion.py:1: service.completion imports service.corrections",
        "service/corrections.py:2: service.corrections imports service.completion",
    )
    assert main([str(tmp_path)]) == 1
    (tmp_path / "service/corrections.py").write_text("def apply() -> None: ...\n")
    (tmp_path / "service/retention.py").write_text("")
    (tmp_path / "service/store/b.py").write_text("")
    assert import_cycles(tmp_path) == []
    assert main([str(tmp_path)]) == 0
