"""Errors raised by :mod:`processing` (one hierarchy, translated at the service boundary)."""

from __future__ import annotations

__all__ = ["InvalidExamError", "ProcessingError"]


class ProcessingError(Exception):
    """Base class of every error that processing raises on purpose."""


class InvalidExamError(ProcessingError, ValueError):
    """The exam cannot be processed; the message names the reason.

    Raised for: all-zero signal, NaN/infinite or negative signal, fewer than two
    distinct b-values at or above ``adc_min_b``, b-values that do not increase.
    """
