"""Messages of a node that cannot start, word for word as the IT guide quotes them.

``deploy/README.md`` (section 11) quotes these; ``test_troubleshooting_table.py``
checks that each quoted message is asserted by a test, and these are the tests.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from service.data_dir_lock import DataDirLock
from service.errors import DataDirLockedError
from service.node import _port_message


def test_a_second_lock_on_a_data_folder_names_the_folder_the_holder_and_the_fix(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    held = DataDirLock.acquire(data_dir)
    try:
        # flock locks belong to the open file: a second open in this process conflicts too.
        with pytest.raises(DataDirLockedError) as refused:
            DataDirLock.acquire(data_dir)
    finally:
        held.release()
    assert str(refused.value) == (
        f"data folder {data_dir} is in use by another wbdwi node (PID {os.getpid()}, "
        f"lock {data_dir / 'wbdwi.lock'}); stop it first, or give this node its own --data-dir"
    )
    DataDirLock.acquire(data_dir).release()  # released: free again


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (errno.EADDRINUSE, "already in use (another program, or another node, listens on it)"),
        (errno.EACCES, "not allowed for this user (ports below 1024 need privileges)"),
        (errno.EADDRNOTAVAIL, "Cannot assign requested address"),
    ],
)
def test_a_port_that_cannot_be_bound_is_named_with_its_setting(code: int, reason: str) -> None:
    error = OSError(code, os.strerror(code))
    message = _port_message("DICOM", "node.port", "0.0.0.0", 104, error)
    assert message == f"DICOM port 104 on 0.0.0.0 (node.port): {reason}"
