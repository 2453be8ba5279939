"""Finding DICOM files in a folder (PS3.10 files: 128-byte preamble, then ``DICM``)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["find_dicom_files", "has_dicom_preamble"]


def has_dicom_preamble(path: Path) -> bool:
    """Whether ``path`` starts like a PS3.10 file (``DICM`` at byte 128)."""
    try:
        with path.open("rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def find_dicom_files(folder: Path | str) -> list[Path]:
    """Every PS3.10 file under ``folder`` (recursively), sorted by path.

    Files without the ``DICM`` marker (truth JSON, NumPy arrays, ``DICOMDIR``
    is included since it is PS3.10) are left out; hidden files and folders too.

    Raises
    ------
    NotADirectoryError
        When ``folder`` is not a directory.
    """
    root = Path(folder)
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a directory")
    found: list[Path] = []
    for current, directories, files in os.walk(root):
        directories[:] = sorted(d for d in directories if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = Path(current) / name
            if has_dicom_preamble(path):
                found.append(path)
    return found
