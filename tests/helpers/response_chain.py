"""One phantom patient's exams through ``wbdwi phantom`` and ``wbdwi process --prior`` (issue 6).

:func:`run_chain` behind the session fixture ``response_chain`` of
``tests/conftest.py``, shared by the offline comparison tests and the PACS
(Orthanc) history test, so that the five ``reference`` exams (about 7 s each:
phantom, DICOM, assembly, processing, result objects) are made once per run.

The time points, as the clinic would see them::

    baseline     2024-01-05   no prior
    stable       2024-04-05   --prior baseline
    progression  2024-07-05   --prior baseline --prior stable   (previous: stable)
    response     2024-10-05   --prior baseline                  (alternative follow-ups,
    partial      2024-10-06   --prior baseline                   each against the baseline)

The follow-ups are designed against the baseline (``processing.phantom_lesions``),
so response and partial are compared with the baseline alone; the progression
exam shows a real chain (previous exam and baseline differ).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.cli import main

PATIENT = "RESPONSE-PHANTOM-2"

#: scenario -> (seed, study date, scenarios whose outputs are given as --prior)
CHAIN: dict[str, tuple[int, str, tuple[str, ...]]] = {
    "baseline": (11, "20240105", ()),
    "stable": (15, "20240405", ("baseline",)),
    "progression": (14, "20240705", ("baseline", "stable")),
    "response": (12, "20241005", ("baseline",)),
    "partial": (13, "20241006", ("baseline",)),
}


@dataclass(frozen=True, slots=True)
class ChainRun:
    """One processed time point."""

    scenario: str
    dicom_dir: Path
    out_dir: Path
    measurements: dict[str, Any]
    seconds: float


def run_chain(root: Path) -> dict[str, ChainRun]:
    """Write and process every time point of :data:`CHAIN` under ``root``."""
    import time

    runs: dict[str, ChainRun] = {}
    for scenario, (seed, date, priors) in CHAIN.items():
        started = time.perf_counter()
        folder = root / scenario
        status = main(
            [
                "phantom",
                "--out",
                str(folder / "in"),
                "--preset",
                "reference",
                "--scenario",
                scenario,
                "--patient-id",
                PATIENT,
                "--seed",
                str(seed),
                "--study-date",
                date,
                "--no-distractors",
            ]
        )
        assert status == 0, scenario
        arguments = ["process", str(folder / "in" / "dicom"), "--out", str(folder / "out")]
        arguments += ["--device", "cpu"]
        for prior in priors:
            arguments += ["--prior", str(runs[prior].out_dir)]
        assert main(arguments) == 0, scenario
        measurements = json.loads((folder / "out" / "measurements.json").read_text())
        runs[scenario] = ChainRun(
            scenario=scenario,
            dicom_dir=folder / "in" / "dicom",
            out_dir=folder / "out",
            measurements=measurements,
            seconds=time.perf_counter() - started,
        )
    return runs
