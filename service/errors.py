"""The one exception hierarchy of :mod:`service`.

Every error the service raises on purpose derives from :class:`NodeError`.
Errors of the layers below keep their own trees (:mod:`dicom_node.errors`,
:mod:`processing.errors`) and are translated where the service meets them.

Hierarchy
---------
::

    NodeError
    +-- SettingsError              a setting has a bad value or an unknown name (a ValueError)
"""

from __future__ import annotations

__all__ = ["NodeError", "SettingsError"]


class NodeError(Exception):
    """Base class of every error raised on purpose by :mod:`service`."""


class SettingsError(NodeError, ValueError):
    """A setting has a bad value or an unknown name; the message names it and says why."""
