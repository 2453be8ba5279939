"""The layering service -> dicom_node -> processing holds, and its checker sees every import."""

from __future__ import annotations

from pathlib import Path

from tools.check_layers import imported_modules, layer_violations, main

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
    _write(tmp_path, "service/ok.py", "import dicom_node\nimport processing\n")
    found = {(str(v.path), v.line, v.imported) for v in layer_violations(tmp_path)}
    assert found == {
        ("processing/sub/fit.py", 5, "dicom_node.errors"),
        ("processing/sub/fit.py", 7, "pydicom"),
        ("processing/sub/fit.py", 8, "service.cli"),
        ("dicom_node/__init__.py", 1, "service.settings"),
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
