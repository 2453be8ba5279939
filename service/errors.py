"""The one exception hierarchy of :mod:`service`.

Every error the service raises on purpose derives from :class:`NodeError`.
Errors of the layers below keep their own trees (:mod:`dicom_node.errors`,
:mod:`processing.errors`) and are translated where the service meets them.

Each class also derives from the built-in exception that describes it
(``ValueError``, ``RuntimeError``, ``KeyError``) where callers catch that.

Hierarchy
---------
::

    NodeError
    +-- SettingsError              a setting has a bad value or an unknown name (a ValueError)
    +-- DataDirLockedError         another process holds the data folder (a RuntimeError)
    +-- JobStoreError              the job store cannot be opened (a RuntimeError)
    +-- PortUnavailableError       the DICOM or HTTP port cannot be listened on (an OSError)
    +-- PriorsUnavailableError     the priors peer could not be asked; the job waits
    +-- InputsMissingError         a job's input files are no longer in the spool
    +-- HistoryError               the history store cannot do what was asked
    |   +-- UnknownExamError       no such exam recorded for the patient (a KeyError)
    +-- NothingToCorrectError      a received SEG corrects no exam of this node
    +-- PriorLoadError             ``wbdwi process --prior``: a prior cannot be used
    +-- JobRefusedError            a worker of another software version was given the job
    +-- StorageKeyError            a storage key that cannot name a file (a ValueError)
    +-- ActionError                a dashboard action refused or failed (the message says why)
"""

from __future__ import annotations

__all__ = [
    "ActionError",
    "DataDirLockedError",
    "HistoryError",
    "InputsMissingError",
    "JobRefusedError",
    "JobStoreError",
    "NodeError",
    "NothingToCorrectError",
    "PortUnavailableError",
    "PriorLoadError",
    "PriorsUnavailableError",
    "SettingsError",
    "StorageKeyError",
    "UnknownExamError",
]


class NodeError(Exception):
    """Base class of every error raised on purpose by :mod:`service`."""


class SettingsError(NodeError, ValueError):
    """A setting has a bad value or an unknown name; the message names it and says why."""


class DataDirLockedError(NodeError, RuntimeError):
    """Another process holds the data folder's lock; the message names the folder and PID."""


class JobStoreError(NodeError, RuntimeError):
    """The job store cannot be opened (newer schema, not a database); the message says why."""


class PortUnavailableError(NodeError, OSError):
    """A port the node must listen on is in use or not allowed; the message names it."""


class PriorsUnavailableError(NodeError):
    """The priors peer could not be asked; the message names it and the reason."""


class InputsMissingError(NodeError):
    """Input files of the job are no longer in the spool; the message says how many and one."""


class HistoryError(NodeError):
    """The history store cannot do what was asked; the message says what and why."""


class UnknownExamError(HistoryError, KeyError):
    """No exam with that study UID is recorded for that patient."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class NothingToCorrectError(NodeError):
    """The SEG corrects no exam of this node: its own result, another study, or none processed.

    The job ends ``done`` with this message as its reason; nothing is written.
    """


class PriorLoadError(NodeError, ValueError):
    """A prior cannot be used: unreadable, of another patient, or the baseline asked is absent.

    The message names the file or study and the reason.
    """


class JobRefusedError(NodeError):
    """A worker of another software version was given the job; it leaves it to a matching one."""


class StorageKeyError(NodeError, ValueError):
    """A storage key that cannot name a file (``..``, or a path outside the storage folder)."""


class ActionError(NodeError):
    """A dashboard action refused or failed; the message says why in plain words."""
