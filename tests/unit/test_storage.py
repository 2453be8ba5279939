"""Storage keys (issue 15): relative keys per host, absolute keys of older specs."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.errors import StorageKeyError
from service.jobs import CorrectionSpec, JobSpec
from service.storage import LocalStorage, localize_spec, portable_spec


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


def test_a_spec_travels_by_keys_between_two_mount_points(tmp_path: Path) -> None:
    receiver = LocalStorage(tmp_path / "receiver")
    worker = LocalStorage(tmp_path / "worker")
    spec = JobSpec(
        job_key="1.2.3:wbdwi/1.0:abc",
        job_id=4,
        study_uid="1.2.3",
        version=2,
        input_paths=(str(receiver.root / "spool" / "a.dcm"),),
        output_dir=str(receiver.root / "results" / "1.2.3" / "v2"),
        correction=CorrectionSpec(
            seg_path=str(receiver.root / "spool" / "seg.dcm"),
            seg_sop_instance_uid="1.2.3.9",
            corrected_output_dir=str(receiver.root / "results" / "1.2.3" / "v1"),
        ),
    )
    portable = portable_spec(spec, receiver)
    assert portable.input_paths == ("spool/a.dcm",)
    assert portable.output_dir == "results/1.2.3/v2"
    assert portable.correction is not None
    assert portable.correction.corrected_output_dir == "results/1.2.3/v1"
    assert JobSpec.from_json(portable.to_json()) == portable
    local = localize_spec(portable, worker)
    assert local.input_paths == (str(worker.root / "spool" / "a.dcm"),)
    assert local.correction is not None
    assert local.correction.seg_path == str(worker.root / "spool" / "seg.dcm")
    # A spec of the SQLite node (absolute paths) runs unchanged where it was made.
    assert localize_spec(spec, receiver) == spec


def test_a_file_outside_the_shared_folder_cannot_be_published(tmp_path: Path) -> None:
    spec = JobSpec(
        job_key="k",
        job_id=1,
        study_uid="1.2.3",
        version=1,
        input_paths=(str(tmp_path / "local-only" / "a.dcm"),),
        output_dir=str(tmp_path / "share" / "results"),
    )
    with pytest.raises(StorageKeyError, match="other hosts could not find it"):
        portable_spec(spec, LocalStorage(tmp_path / "share"))
