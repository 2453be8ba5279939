"""Durable JSON files: a reader sees the old file or the whole new one, also after a power loss.

The node's job summaries and measurement reports, and those of ``wbdwi
process``, are written through :func:`write_json_durably`: the text goes to a
temporary file in the same folder, which is flushed and fsynced, renamed over
the target (``os.replace`` is atomic on POSIX), and the folder is fsynced so
that the rename itself survives a crash.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["write_json_durably"]


def write_json_durably(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` as indented JSON (with a final newline) to ``path``, atomically.

    Parameters
    ----------
    path
        The target file; its folder must exist.
    payload
        JSON-serialisable values.

    Raises
    ------
    OSError
        When the file cannot be written; the target is then unchanged and no
        temporary file is left behind.
    TypeError
        When ``payload`` holds a value JSON cannot represent (nothing is written).
    """
    text = json.dumps(payload, indent=2) + "\n"
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
