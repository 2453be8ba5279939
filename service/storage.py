"""Where a job's inputs and outputs are, named by keys every host can resolve (issue 15).

A :class:`service.jobs.JobSpec` names its input instances and its results
folder by *storage keys*; each host resolves a key to a local path through its
:class:`Storage`:

- one host: :class:`LocalStorage` on the node's data folder;
- a shared folder (NFS, SMB) mounted on every host, at the same or at a
  different mount point: each host makes a :class:`LocalStorage` on its own
  mount point, and a key (a path relative to the share) means the same file
  everywhere;
- S3-compatible object storage is a documented option only (the workers would
  download inputs to a scratch folder and upload results; not implemented).

Specs stored before keys existed hold absolute paths; an absolute key
resolves to itself, so they still load and run on the host that wrote them.

The SQLite ledger keeps specs with the receiver's local paths (as before). Only
what crosses hosts carries keys: the celery receiver turns a spec's paths into
keys of its storage (:func:`portable_spec`) before it publishes the job, the
worker resolves them under its own mount point (:func:`localize_spec`,
``[queue] storage_root``) and reports its result files as keys, which the
receiver resolves again. A job with a file outside the storage folder is
failed by the receiver with the reason (no other host could find it); with
``storage_root`` unset, specs travel with the receiver's absolute paths (the
share mounted at the same path on every host). Results are the same wherever
the share is mounted (``tests/integration/test_storage_mounts.py``: file
names, UIDs, every element but the run's date and time, pixel data): result
UIDs derive from the input instance UIDs, the software version, the settings
and the device, never from a path (:class:`dicom_node.writers.UidFactory`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Protocol

from service.errors import StorageKeyError
from service.jobs import JobSpec

__all__ = ["LocalStorage", "Storage", "localize_spec", "portable_spec"]


class Storage(Protocol):
    """Resolve storage keys to local paths, and local paths to keys."""

    def path(self, key: str) -> Path:
        """The local path of ``key`` on this host."""
        ...

    def key(self, path: Path) -> str:
        """The key of a local path under the storage."""
        ...


class LocalStorage:
    """A folder of this host (the data folder, or the mount point of a shared folder).

    Parameters
    ----------
    root
        The folder keys are relative to; made absolute (not resolved through
        symbolic links, so a mount point stays what the operator wrote).
    """

    def __init__(self, root: Path) -> None:
        self.root = root.absolute()

    def __repr__(self) -> str:
        return f"LocalStorage({str(self.root)!r})"

    def path(self, key: str) -> Path:
        """The local path of ``key``.

        A relative key (POSIX separators) is joined to the root; an absolute key
        (a spec stored before keys existed) is that path itself.

        Raises
        ------
        StorageKeyError
            The key is empty or climbs out of the root with ``..``.
        """
        if not key:
            raise StorageKeyError("a storage key must not be empty")
        parts = PurePosixPath(key).parts
        if ".." in parts:
            raise StorageKeyError(f"storage key {key!r} must not contain '..'")
        if PurePosixPath(key).is_absolute():
            return Path(key)
        return self.root.joinpath(*parts)

    def key(self, path: Path) -> str:
        """The key of ``path``: relative to the root, POSIX separators.

        Raises
        ------
        StorageKeyError
            ``path`` is not under the root (another host could not find it).
        """
        absolute = path.absolute()
        try:
            relative = absolute.relative_to(self.root)
        except ValueError:
            raise StorageKeyError(
                f"{absolute} is not under the storage folder {self.root}; "
                "other hosts could not find it"
            ) from None
        if not relative.parts:
            raise StorageKeyError(f"{absolute} is the storage folder itself, not a file in it")
        return relative.as_posix()


def _map_files(spec: JobSpec, convert: Callable[[str], str]) -> JobSpec:
    """``spec`` with its inputs, results folder and corrected SEG passed through ``convert``."""
    correction = spec.correction
    if correction is not None:
        correction = replace(
            correction,
            seg_path=convert(correction.seg_path),
            corrected_output_dir=(
                convert(correction.corrected_output_dir) if correction.corrected_output_dir else ""
            ),
        )
    return replace(
        spec,
        input_paths=tuple(convert(path) for path in spec.input_paths),
        output_dir=convert(spec.output_dir),
        correction=correction,
    )


def portable_spec(spec: JobSpec, storage: Storage) -> JobSpec:
    """``spec`` naming its files by keys of ``storage`` (the receiver, before it publishes).

    Raises
    ------
    service.errors.StorageKeyError
        A file of the job is not in the storage (another host could not find it).
    """
    return _map_files(spec, lambda path: storage.key(Path(path)))


def localize_spec(spec: JobSpec, storage: Storage) -> JobSpec:
    """``spec`` naming its files by local paths of this host (the worker, before
    :func:`service.worker.run_job`); absolute paths stay as they are."""
    return _map_files(spec, lambda key: str(storage.path(key)))
