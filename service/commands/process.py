"""``wbdwi process``: assemble and process a folder of DICOM files offline.

No network: the DWI exam under ``DIR`` is assembled, processed on the chosen
device and the measurement report is written to ``OUT/measurements.json``,
beside the DICOM result objects (Parametric Map, derived MR series, SEG, SR,
key images; one file per instance, see :mod:`dicom_node.write_results`).
:func:`run_offline` is the reusable core.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from processing.backend import BackendUnavailableError, Device
from processing.errors import ProcessingError
from processing.measurements import measurements_dict
from processing.results import ProcessingResult
from processing.settings import ProcessingSettings

__all__ = ["MEASUREMENTS_FILE", "OfflineRun", "register", "run", "run_offline"]

MEASUREMENTS_FILE = "measurements.json"


@dataclass(frozen=True, slots=True)
class OfflineRun:
    """What :func:`run_offline` produced."""

    result: ProcessingResult
    assembled: Any  # dicom_node.assembly.AssembledExam
    measurements_path: Path
    measurements: dict[str, Any]
    dicom_files: tuple[Path, ...] = ()


def register(subparsers: Any) -> None:
    """Add the ``process`` subcommand."""
    parser = subparsers.add_parser(
        "process",
        help="process the DWI exam in a folder offline and write measurements.json",
        description=(
            "Read every DICOM file under DIR, assemble the whole-body DWI exam, compute ADC, "
            "computed high-b, the tumour segmentation and its statistics, and write "
            "OUT/measurements.json. Bad input: the reason on stderr, exit status 2."
        ),
    )
    parser.add_argument("folder", type=Path, metavar="DIR")
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="OUT",
        help="output folder (created when missing)",
    )
    parser.add_argument(
        "--device",
        choices=[d.value for d in Device],
        default=Device.AUTO.value,
        help="auto: GPU when CuPy and a CUDA device are present (default); gpu; cpu",
    )
    parser.add_argument(
        "--yellow-lower",
        type=float,
        default=None,
        metavar="UM2S",
        help="lower bound of the yellow ADC class (the baseline exam's 95th centile, um2/s)",
    )
    parser.set_defaults(func=run)


def run_offline(
    folder: Path,
    out: Path,
    settings: ProcessingSettings,
    device: Device | str = Device.AUTO,
    *,
    yellow_lower_um2s: float | None = None,
) -> OfflineRun:
    """Assemble and process the exam under ``folder``; write measurements and DICOM results.

    ``out/measurements.json`` first, then the result objects of
    :func:`dicom_node.write_results.write_results` into ``out``.

    Raises
    ------
    NotADirectoryError
        ``folder`` is not a directory.
    dicom_node.errors.AssemblyError
        The files do not make a usable DWI exam.
    processing.errors.ProcessingError
        The exam's signal cannot be processed.
    processing.backend.BackendUnavailableError
        ``device="gpu"`` without CuPy or a CUDA device.
    dicom_node.errors.WriterError
        A result object cannot be written.
    """
    from dicom_node.assembly import assemble_exam
    from dicom_node.dicom_files import find_dicom_files
    from dicom_node.write_results import write_results
    from processing.pipeline import process_exam

    started = time.perf_counter()
    files = find_dicom_files(folder)
    assembled = assemble_exam(files)
    assemble_s = time.perf_counter() - started
    result = process_exam(
        assembled.exam, settings, device=device, yellow_lower_um2s=yellow_lower_um2s
    )
    measurements = measurements_dict(
        result,
        study_instance_uid=assembled.exam.study_instance_uid,
        software_version=_software_version(),
    )
    measurements["timings_s"] = {"assemble": assemble_s, **measurements["timings_s"]}
    out.mkdir(parents=True, exist_ok=True)
    path = out / MEASUREMENTS_FILE
    _write_json_atomically(path, measurements)
    dicom_files = write_results(
        assembled.exam, result, out, version_label=measurements["software_version"]
    )
    return OfflineRun(
        result=result,
        assembled=assembled,
        measurements_path=path,
        measurements=measurements,
        dicom_files=tuple(dicom_files),
    )


def run(args: argparse.Namespace) -> int:
    """Process and write; 2 with the reason on stderr when the input is not usable."""
    from dicom_node.errors import AssemblyError, WriterError

    if args.yellow_lower is not None and not 0 <= args.yellow_lower < float("inf"):
        print(
            f"wbdwi process: --yellow-lower must be a finite ADC >= 0, got {args.yellow_lower}",
            file=sys.stderr,
        )
        return 2
    try:
        outcome = run_offline(
            args.folder,
            args.out,
            ProcessingSettings(),
            args.device,
            yellow_lower_um2s=args.yellow_lower,
        )
    except (
        NotADirectoryError,
        AssemblyError,
        ProcessingError,
        BackendUnavailableError,
        WriterError,
    ) as exc:
        print(f"wbdwi process: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    summary = outcome.measurements
    print(
        f"wbdwi process: tDV {summary['tdv_ml']:.1f} ml, {len(summary['lesions'])} lesions, "
        f"device {summary['device']}, {summary['timings_s']['total']:.2f} s -> "
        f"{outcome.measurements_path} and {len(outcome.dicom_files)} DICOM files"
    )
    return 0


def _software_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("wbdwi-node")
    except PackageNotFoundError:
        return "0+unknown"


def _write_json_atomically(path: Path, payload: dict[str, Any]) -> None:
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(payload, stream, indent=2)
            stream.write("\n")
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
