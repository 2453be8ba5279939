"""Storage keys (issue 15): relative keys per host, absolute keys of older specs."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.errors import StorageKeyError
from service.storage import LocalStorage


def test_a_key_means_the_same_file_under_two_mount_points(tmp_path: Path) -> None:
    receiver = LocalStorage(tmp_path / "mnt" / "receiver-share")
    worker = LocalStorage(tmp_path / "srv" / "nfs")
    source = receiver.root / "spool" / "1.2.3" / "a.dcm"
    source.parent.mkdir(parents=True)
    source.write_bytes(b"instance")
    key = receiver.key(source)
    assert key == "spool/1.2.3/a.dcm"
    copy = worker.path(key)
    assert copy == tmp_path / "srv" / "nfs" / "spool" / "1.2.3" / "a.dcm"
    assert receiver.path(key).read_bytes() == b"instance"


def test_an_absolute_key_of_an_older_spec_is_that_path(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "data")
    old = tmp_path / "elsewhere" / "a.dcm"
    assert storage.path(str(old)) == old


def test_a_path_outside_the_root_has_no_key(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "data")
    with pytest.raises(StorageKeyError, match="not under the storage folder"):
        storage.key(tmp_path / "other" / "a.dcm")
    with pytest.raises(StorageKeyError, match="storage folder itself"):
        storage.key(tmp_path / "data")


@pytest.mark.parametrize("key", ["", "spool/../../etc/passwd", "../x"])
def test_a_key_cannot_climb_out(tmp_path: Path, key: str) -> None:
    with pytest.raises(StorageKeyError):
        LocalStorage(tmp_path).path(key)
