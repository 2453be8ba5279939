"""The GPU tests run only where the GPU backend passes its probe; ``make gpu-check`` insists.

Without a usable GPU every test here is skipped, and the end of the pytest
report says so in one line (never silently). With ``WBDWI_REQUIRE_GPU=1``
(set by ``make gpu-check``) a missing GPU fails every test instead.
"""

from __future__ import annotations

import os

import pytest

from processing.backend import gpu_status

REQUIRE_GPU = os.environ.get("WBDWI_REQUIRE_GPU", "") == "1"


@pytest.fixture(scope="session", autouse=True)
def _usable_gpu() -> str:
    """The probe's verdict: skip (or fail, when the GPU is required) without a usable GPU."""
    usable, detail = gpu_status()
    if not usable:
        message = f"GPU backend unavailable: {detail}"
        if REQUIRE_GPU:
            pytest.fail(f"WBDWI_REQUIRE_GPU=1 and {message}", pytrace=False)
        pytest.skip(message)
    return detail


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One visible line when the GPU comparisons did not run."""
    skipped = [
        report
        for report in terminalreporter.stats.get("skipped", [])
        if "tests/gpu/" in report.nodeid.replace("\\", "/")
    ]
    if skipped:
        _, detail = gpu_status()
        terminalreporter.write_sep(
            "!",
            f"{len(skipped)} GPU tests SKIPPED, the GPU path is unchecked here "
            f"({detail.split(';')[0]}); "
            "run `make gpu-check` on a GPU host",
            yellow=True,
            bold=True,
        )
