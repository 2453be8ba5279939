"""The installed version of the ``wbdwi-node`` distribution, looked up in one place.

Every part that labels its output with the node's version reads it here: the
result objects (SoftwareVersions, the algorithm version), the association's
Implementation Version Name (PS3.7 D.3.3.2.2), ``wbdwi --version`` and the
measurement reports of the service.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["DISTRIBUTION_NAME", "UNKNOWN_VERSION", "installed_version"]

#: The distribution name in ``pyproject.toml``.
DISTRIBUTION_NAME = "wbdwi-node"
#: Reported when the code runs from a source tree that is not installed.
UNKNOWN_VERSION = "0+unknown"


def installed_version() -> str:
    """Version of the installed ``wbdwi-node`` distribution (``0+unknown`` if not installed)."""
    try:
        return version(DISTRIBUTION_NAME)
    except PackageNotFoundError:
        return UNKNOWN_VERSION
