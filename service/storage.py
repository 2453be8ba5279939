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
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Protocol

from service.errors import StorageKeyError

__all__ = ["LocalStorage", "Storage"]


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
