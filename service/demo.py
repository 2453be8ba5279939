"""``make demo``: the node end to end on its embedded defaults, then everything stopped.

1. A PACS: Orthanc when installed (temporary configuration, free ports), else the
   stand-in PACS of the simulator (:mod:`dicom_node.simulator.pacs`), which
   writes what it receives to ``demo-out/pacs``.
2. The node, in this process: default settings, a temporary data folder, the
   PACS as its destination.
3. The simulated scanner writes a whole-body phantom exam (reference preset) and sends it with MPPS
   (N-CREATE, C-STORE of every image, N-SET COMPLETED) through :mod:`dicom_node.scu`.
4. Wait for the results to be acknowledged by the PACS; print the measurement
   table, the numbers beside the phantom's known truth, the reliability
   verdict, and where the results are (Orthanc links, or files). The key
   images are copied to ``demo-out/key-images`` under readable names, as
   DICOM and PNG.
5. With Orthanc, keep it and the node running until Enter is pressed when
   standard input is a terminal (``--keep`` without a terminal: until Ctrl-C
   or SIGTERM), so that the links work; otherwise stop at once.
6. Stop the node and the PACS; exit 0 (1 when anything failed).

This module only orchestrates: every DICOM association goes through
:mod:`dicom_node.scu`, the stand-in PACS is :mod:`dicom_node.simulator.pacs`.
"""

from __future__ import annotations

import argparse
import enum
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pydicom import dcmread

from dicom_node.scu.mpps import complete_mpps, create_mpps, performed_exam
from dicom_node.scu.send import Destination, send_files
from dicom_node.simulator.pacs import running_folder_pacs
from dicom_node.simulator.scanner import write_exam
from processing.phantom import Phantom, make_phantom
from service.jobs import JobRecord, JobState
from service.logging import configure_logging
from service.node import Node
from service.priors import MEASUREMENTS_FILE
from service.settings import LogFormat, LoggingSettings, Settings, load_settings

__all__ = [
    "DEMO_KEY_IMAGES",
    "DEMO_OUT",
    "DEMO_PACS",
    "DEMO_RESULTS",
    "Hold",
    "hold_policy",
    "main",
    "save_key_images",
    "truth_lines",
    "verdict_lines",
]

_TIMEOUT_S = 300.0
_LESIONS_SHOWN = 20
ADC_UNIT = "10^-6 mm2/s"
"""The ADC unit as the key images write it (um2/s: the same numbers)."""
DEMO_OUT = Path("demo-out")
DEMO_RESULTS = DEMO_OUT / "results"
"""Result files are kept here after the demo (``make clean`` removes ``demo-out``)."""
DEMO_KEY_IMAGES = DEMO_OUT / "key-images"
"""The key images of the last run, under readable names (DICOM and PNG)."""
DEMO_PACS = DEMO_OUT / "pacs"
"""What the stand-in PACS received in the last run (when Orthanc is not installed)."""
_PHANTOM_PRESET = "reference"
_PHANTOM_SEED = 1


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True, slots=True)
class _Pacs:
    kind: str
    aet: str
    dicom_port: int
    http_port: int | None
    folder: Path

    def rest(self, path: str, body: bytes | None = None) -> Any:
        """Orthanc's JSON answer to ``path`` (POST when ``body`` is given)."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}{path}",
            data=body,
            method="GET" if body is None else "POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())


def _orthanc_binary() -> str | None:
    return shutil.which("Orthanc") or (
        "/usr/sbin/Orthanc" if Path("/usr/sbin/Orthanc").exists() else None
    )


def _wait_for_orthanc(pacs: _Pacs, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"Orthanc exited with {process.returncode}; see {log}")
        try:
            pacs.rest("/system")
            return
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise RuntimeError(f"Orthanc did not start within 30 s; see {log}") from None
            time.sleep(0.2)


@contextmanager
def _orthanc(binary: str, workdir: Path) -> Iterator[_Pacs]:
    pacs = _Pacs("Orthanc", "ORTHANC", _free_port(), _free_port(), workdir / "orthanc")
    pacs.folder.mkdir(parents=True)
    config: dict[str, object] = {
        "Name": "wbdwi-demo-pacs",
        "StorageDirectory": str(pacs.folder / "storage"),
        "IndexDirectory": str(pacs.folder / "storage"),
        "HttpPort": pacs.http_port,
        "DicomAet": pacs.aet,
        "DicomPort": pacs.dicom_port,
        "DicomCheckCalledAet": False,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "Plugins": [],
        "SaveJobs": False,
    }
    (pacs.folder / "orthanc.json").write_text(json.dumps(config))
    log_path = pacs.folder / "orthanc.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [binary, "--no-jobs", str(pacs.folder / "orthanc.json")],
            stdout=log,
            stderr=subprocess.STDOUT,
            # DCMTK inside Orthanc answers each C-STORE at once only with TCP_NODELAY.
            env={**os.environ, "TCP_NODELAY": "1", "LANG": "C"},
        )
        try:
            _wait_for_orthanc(pacs, process, log_path)
            yield pacs
        finally:
            process.terminate()
            process.wait(timeout=15)


@contextmanager
def _stand_in_pacs() -> Iterator[_Pacs]:
    if DEMO_PACS.exists():
        shutil.rmtree(DEMO_PACS)  # the last run's files: the folder holds this run's only
    with running_folder_pacs(DEMO_PACS.resolve()) as pacs:
        yield _Pacs("the stand-in PACS", pacs.ae_title, pacs.port, None,
                    pacs.folder)  # fmt: skip


def _table(measurements: Mapping[str, Any]) -> str:
    adc = measurements.get("adc") or {}
    classes = measurements["classes"]
    rows = [
        ("total diffusion volume (tDV)", f"{measurements['tdv_ml']:.1f} ml"),
        ("lesions", str(len(measurements["lesions"]))),
    ]
    for key, label in (("mean", "ADC mean"), ("median", "ADC median"), ("sd", "ADC SD"),
                       ("p10", "ADC 10th centile"), ("p90", "ADC 90th centile")):  # fmt: skip
        if key in adc:
            rows.append((label, f"{adc[key]:.0f} {ADC_UNIT}"))
    rows += [
        ("red (active) volume", f"{classes['red_ml']:.1f} ml"),
        ("yellow (likely responding)", f"{classes['yellow_ml']:.1f} ml"),
        ("green (highly likely responding)", f"{classes['green_ml']:.1f} ml"),
        ("processing device", str(measurements["device"])),
    ]
    width = max(len(label) for label, _ in rows)
    lines = [f"  {label:<{width}}  {value}" for label, value in rows]
    lesions = measurements["lesions"]
    for lesion in lesions[:_LESIONS_SHOWN]:
        lines.append(
            f"    lesion {lesion['label']:>2}: {lesion['volume_ml']:6.1f} ml, ADC mean "
            f"{lesion['adc_mean']:5.0f} {ADC_UNIT}, {lesion['region']}"
        )
    if len(lesions) > _LESIONS_SHOWN:
        lines.append(f"    ... and {len(lesions) - _LESIONS_SHOWN} more (measurements.json, SR)")
    return "\n".join(lines)


def _ratio(measured: float | None, truth: float) -> str:
    if measured is None:
        return "not measured"
    return f"{measured / truth - 1.0:+.0%}" if truth else "-"


def truth_lines(
    measurements: Mapping[str, Any], truth: Mapping[str, Any], min_lesion_ml: float
) -> list[str]:
    """The node's tDV, lesion count and median ADC beside the phantom's truth.

    Parameters
    ----------
    measurements
        The job's ``measurements.json``.
    truth
        :attr:`processing.phantom.Phantom.truth` of the phantom that was sent.
    min_lesion_ml
        The smallest component the node reports
        (``processing.min_lesion_volume_ml``): truth lesions under it are
        counted apart, as the node cannot report them.

    Returns
    -------
    list[str]
        A header and one line per quantity: measured, truth, difference.
    """
    adc = measurements.get("adc") or {}
    median = adc.get("median")
    tdv = float(measurements["tdv_ml"])
    true_tdv = float(truth["total_lesion_volume_ml"])
    true_median = float(truth["median_adc_um2s"])
    true_lesions = truth["lesions"]
    reportable = sum(1 for row in true_lesions if row["volume_ml"] >= min_lesion_ml)
    found = len(measurements["lesions"])
    rows = [
        ("tDV", f"{tdv:.1f} ml", f"{true_tdv:.1f} ml", _ratio(tdv, true_tdv)),
        ("lesions", str(found), f"{len(true_lesions)}, {reportable} of >= {min_lesion_ml:g} ml",
         f"{found - reportable:+d} (against the {reportable} the node can report)"),
        ("median ADC", "-" if median is None else f"{median:.0f} {ADC_UNIT}",
         f"{true_median:.0f} {ADC_UNIT}", _ratio(median, true_median)),
    ]  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    header = f"  {'':<{widths[0]}}  {'node':<{widths[1]}}  {'phantom truth':<{widths[2]}}  diff."
    return [header] + [
        f"  {name:<{widths[0]}}  {node:<{widths[1]}}  {true:<{widths[2]}}  {diff}"
        for name, node, true, diff in rows
    ]


def verdict_lines(quality: Mapping[str, Any]) -> list[str]:
    """The reliability verdict of ``measurements.json`` (its ``quality``), with its reasons."""
    lines = [f"reliability verdict: {quality['verdict']} ({quality['meaning']})"]
    lines += [
        f"  - {reason['code']} ({reason['severity']}): {reason['message']}"
        for reason in quality.get("reasons", [])
    ]
    return lines


def _readable_name(dataset: Any) -> str:
    """``key-image-<n>-<what it shows>`` from Instance Number and Image Comments."""
    comments = str(dataset.get("ImageComments", "") or "")
    what = re.split(r",|\. ", comments, maxsplit=1)[0]
    slug = re.sub(r"[^a-z0-9]+", "-", what.lower()).strip("-")[:60].rstrip("-")
    number = int(dataset.get("InstanceNumber", 0) or 0)
    return f"key-image-{number}-{slug}" if slug else f"key-image-{number}"


def save_key_images(paths: Sequence[Path], folder: Path) -> list[Path]:
    """Copy the key images to ``folder`` under readable names, each as DICOM and as PNG.

    ``folder`` is emptied first (it holds the last run's pictures only). The
    name is ``key-image-<Instance Number>-<what the picture shows>`` (from the
    Image Comments), for example ``key-image-2-adc-histogram-of-the-tumour-load``.

    Returns
    -------
    list[Path]
        The PNG files written, in Instance Number order.
    """
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    read = sorted(
        ((dcmread(path), path) for path in paths),
        key=lambda pair: int(pair[0].get("InstanceNumber", 0) or 0),
    )
    written = []
    for dataset, path in read:
        name = _readable_name(dataset)
        shutil.copyfile(path, folder / f"{name}.dcm")
        png = folder / f"{name}.png"
        Image.fromarray(np.asarray(dataset.pixel_array, dtype=np.uint8)).save(png)
        written.append(png)
    return written


class Hold(enum.Enum):
    """How the demo waits before stopping the node and the PACS."""

    NONE = "stop at once"
    ENTER = "until Enter is pressed"
    SIGNAL = "until Ctrl-C or SIGTERM"


def hold_policy(*, keep: bool, interactive: bool, has_links: bool) -> Hold:
    """Whether to keep the node and PACS running after the results are in.

    Parameters
    ----------
    keep
        ``--keep`` was given.
    interactive
        Standard input is a terminal (a person can press Enter).
    has_links
        The PACS serves links worth opening (Orthanc's previews and explorer).

    Returns
    -------
    Hold
        ``ENTER`` in a terminal when there are links or ``--keep``;
        ``SIGNAL`` with ``--keep`` and no terminal; otherwise ``NONE``, so that
        ``make demo`` ends by itself in CI.
    """
    if interactive and (keep or has_links):
        return Hold.ENTER
    if keep:
        return Hold.SIGNAL
    return Hold.NONE


def _hold(hold: Hold, what: str) -> None:
    if hold is Hold.ENTER:
        try:
            input(f"\n{what} keep running for the links above; press Enter to stop them ")
        except (EOFError, KeyboardInterrupt):
            print()
    elif hold is Hold.SIGNAL:
        print(f"\n{what} keep running for the links above (--keep); Ctrl-C or SIGTERM stops them")
        stop = threading.Event()
        previous = signal.signal(signal.SIGTERM, lambda _signum, _frame: stop.set())
        try:
            while not stop.wait(1.0):
                pass
        except KeyboardInterrupt:
            print()
        finally:
            signal.signal(signal.SIGTERM, previous)


def _wait_until_delivered(node: Node) -> JobRecord:
    deadline = time.monotonic() + _TIMEOUT_S
    while time.monotonic() < deadline:
        jobs = node.store.jobs()
        if jobs and all(job.state in (JobState.DONE, JobState.FAILED) for job in jobs):
            return jobs[0]
        time.sleep(0.2)
    raise RuntimeError(f"the exam was not processed and delivered within {_TIMEOUT_S:.0f} s")


def _settings(workdir: Path, pacs: _Pacs) -> Settings:
    return load_settings(
        env={},
        overrides={
            "node": {"data_dir": workdir / "node-data", "port": _free_port(),
                     "http_port": _free_port(), "bind_address": "127.0.0.1"},
            "completion": {"quiet_seconds": 30, "mpps_grace_seconds": 1},
            "export": {"destinations": [f"{pacs.aet}@127.0.0.1:{pacs.dicom_port}"],
                       "results_dir": DEMO_RESULTS.resolve()},
            "logging": {"level": "warning", "format": LogFormat.CONSOLE},
        },
    )  # fmt: skip


def _scan(phantom: Phantom, folder: Path, settings: Settings) -> bool:
    """The scanner's side: write the exam, send it with MPPS; False when the node refused any."""
    files = write_exam(phantom, folder)
    exam = performed_exam(files)
    scanner = Destination("127.0.0.1", settings.node.port, settings.node.ae_title,
                          calling_aet="DEMOSCANNER")  # fmt: skip
    mpps_uid = create_mpps(scanner, exam)
    report = send_files(files, scanner)
    complete_mpps(scanner, mpps_uid, exam)
    print(f"scanner: {report.summary()}; MPPS COMPLETED")
    if not report.ok:
        print(f"the node did not store {len(report.failed)} instance(s); see the log above",
              file=sys.stderr)  # fmt: skip
    return report.ok


def _orthanc_links(pacs: _Pacs, study_uid: str, key_images: Sequence[Path]) -> list[str]:
    lines = []
    for hit in pacs.rest("/tools/lookup", study_uid.encode()):
        if hit.get("Type") == "Study":
            lines.append(f"  study in Orthanc Explorer: http://127.0.0.1:{pacs.http_port}"
                         f"/app/explorer.html#study?uuid={hit['ID']}")  # fmt: skip
    for path in key_images:
        for hit in pacs.rest("/tools/lookup", str(dcmread(path).SOPInstanceUID).encode()):
            preview = f"http://127.0.0.1:{pacs.http_port}/instances/{hit['ID']}/preview"
            lines.append(f"  {path.stem}: {preview}")
    return lines


def _report(job: JobRecord, settings: Settings, truth: Mapping[str, Any], pacs: _Pacs) -> None:
    folder = settings.results_dir.resolve() / job.study_uid / f"v{job.version}"
    measurements = json.loads((folder / MEASUREMENTS_FILE).read_text())
    print("measurements (the numbers of the TID 1500 SR):")
    print(_table(measurements))
    print(f"\nbeside the phantom's truth ({_PHANTOM_PRESET} preset, seed {_PHANTOM_SEED}):")
    min_lesion_ml = settings.processing.min_lesion_volume_ml
    print("\n".join(truth_lines(measurements, truth, min_lesion_ml)))
    print("\n" + "\n".join(verdict_lines(measurements["quality"])))
    pngs = save_key_images(sorted((folder / "key_images").glob("*.dcm")), DEMO_KEY_IMAGES)
    print(f"\nkey images (Secondary Capture, also in the PACS), as DICOM and PNG in "
          f"{DEMO_KEY_IMAGES}/:")  # fmt: skip
    print("\n".join(f"  {png.name}" for png in pngs))
    if pacs.http_port is not None:
        dicom_copies = [png.with_suffix(".dcm") for png in pngs]
        print("in Orthanc:\n" + "\n".join(_orthanc_links(pacs, job.study_uid, dicom_copies)))
    else:
        print(f"received by the stand-in PACS: {len(list(pacs.folder.glob('*.dcm')))} files "
              f"in {DEMO_PACS}/")  # fmt: skip
    print(f"\nall result files: {folder}")


def _run(workdir: Path, pacs: _Pacs, keep: bool) -> int:
    settings = _settings(workdir, pacs)
    node = Node(settings)
    node.start()
    print(f"node: AE {settings.node.ae_title} on port {settings.node.port}, device "
          f"{node.device_description}, data in {node.data_dir}")  # fmt: skip
    print(f"      http://127.0.0.1:{settings.node.http_port}/metrics")
    try:
        phantom = make_phantom(_PHANTOM_PRESET, seed=_PHANTOM_SEED)
        started = time.perf_counter()
        if not _scan(phantom, workdir / "scanner", settings):
            return 1
        job = _wait_until_delivered(node)
        if job.state is not JobState.DONE:
            print(f"the job failed: {job.reason}", file=sys.stderr)
            return 1
        elapsed = time.perf_counter() - started
        print(f"results delivered to {pacs.kind} {elapsed:.1f} s after the first image was sent\n")
        _report(job, settings, phantom.truth, pacs)
        hold = hold_policy(keep=keep, interactive=sys.stdin.isatty(),
                           has_links=pacs.http_port is not None)  # fmt: skip
        _hold(hold, f"the node and {pacs.kind}")
        return 0
    finally:
        node.stop()


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m service.demo",
        description="Run the node end to end: a PACS, the node, a simulated scanner sending a "
        "phantom exam; print the results beside the phantom's truth.",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the node and the PACS running after the results are in: until Enter in a "
        "terminal (the default there when Orthanc is the PACS), else until Ctrl-C or SIGTERM",
    )
    parser.add_argument(
        "--stand-in-pacs",
        action="store_true",
        help="use the stand-in PACS (its files in demo-out/pacs) even when Orthanc is installed",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; 0 when the results reached the PACS."""
    args = _arguments(argv)
    configure_logging(LoggingSettings(level="warning", format=LogFormat.CONSOLE))
    with tempfile.TemporaryDirectory(prefix="wbdwi-demo-") as folder:
        workdir = Path(folder)
        binary = None if args.stand_in_pacs else _orthanc_binary()
        pacs_context = _orthanc(binary, workdir) if binary else _stand_in_pacs()
        with pacs_context as pacs:
            print(f"PACS: {pacs.kind} as {pacs.aet} on port {pacs.dicom_port}")
            status = _run(workdir, pacs, args.keep)
            print(f"\nstopping the node and {pacs.kind}; result files stay in {DEMO_OUT}/")
        return status


if __name__ == "__main__":
    sys.exit(main())
