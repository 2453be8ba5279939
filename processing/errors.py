"""The one exception hierarchy of :mod:`processing`, translated at the service boundary.

Every error processing raises on purpose derives from :class:`ProcessingError`,
so that the service can tell an expected failure (bad input, no GPU; the job
records the reason, no traceback is logged) from a bug. Each class also derives
from the built-in exception that describes it, so ``except ValueError`` keeps
working where callers do not know this tree.

Hierarchy
---------
::

    ProcessingError
    +-- InvalidExamError          the exam cannot be processed (no signal, too few b-values)
    +-- BackendUnavailableError   the GPU was asked for but is not usable (a RuntimeError)
    +-- SummaryFormatError        an exam summary (JSON or fields) is malformed (a ValueError)
    +-- NoPriorExamError          no exam earlier than the current one to compare with
"""

from __future__ import annotations

__all__ = [
    "BackendUnavailableError",
    "InvalidExamError",
    "NoPriorExamError",
    "ProcessingError",
    "SummaryFormatError",
]


class ProcessingError(Exception):
    """Base class of every error that processing raises on purpose."""


class InvalidExamError(ProcessingError, ValueError):
    """The exam cannot be processed; the message names the reason.

    Raised for: all-zero signal, NaN/infinite or negative signal, fewer than two
    distinct b-values at or above ``adc_min_b``, b-values that do not increase.
    """


class BackendUnavailableError(ProcessingError, RuntimeError):
    """The GPU was requested but CuPy, a CUDA device or a CUDA library is not usable."""


class SummaryFormatError(ProcessingError, ValueError):
    """A summary (JSON or fields) is malformed; the message names the field and the reason."""


class NoPriorExamError(ProcessingError, ValueError):
    """No exam earlier than the current one was given, so there is nothing to compare with."""
