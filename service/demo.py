"""``make demo``: the node end to end on its embedded defaults, then everything stopped.

1. A PACS: Orthanc when installed (temporary configuration, free ports), else a
   built-in pynetdicom storage SCP that writes what it receives to a folder.
2. The node, in this process: default settings, a temporary data folder, the
   PACS as its destination.
3. The simulated scanner writes a whole-body phantom exam (reference preset) and sends it with MPPS
   (N-CREATE, C-STORE of every image, N-SET COMPLETED).
4. Wait for the results to be acknowledged by the PACS; print the measurement
   table and where the results are (Orthanc URLs, or files).
5. Stop the node and the PACS; exit 0 (1 when anything failed).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.dimse_primitives import C_STORE

from dicom_node.scu.mpps import complete_mpps, create_mpps, performed_exam
from dicom_node.scu.send import Destination, send_files
from dicom_node.simulator.scanner import write_exam
from processing.phantom import make_phantom
from service.jobs import JobState
from service.logging import configure_logging
from service.node import Node
from service.settings import LogFormat, LoggingSettings, load_settings
from service.worker import MEASUREMENTS_FILE

__all__ = ["main"]

_TIMEOUT_S = 300.0
_LESIONS_SHOWN = 20
DEMO_RESULTS = Path("demo-out") / "results"
"""Result files are kept here after the demo (``make clean`` removes them)."""


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


def _orthanc_binary() -> str | None:
    return shutil.which("Orthanc") or (
        "/usr/sbin/Orthanc" if Path("/usr/sbin/Orthanc").exists() else None
    )


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
    log = (pacs.folder / "orthanc.log").open("wb")
    process = subprocess.Popen(
        [binary, "--no-jobs", str(pacs.folder / "orthanc.json")],
        stdout=log,
        stderr=subprocess.STDOUT,
        # DCMTK inside Orthanc answers each C-STORE at once only with TCP_NODELAY.
        env={**os.environ, "TCP_NODELAY": "1", "LANG": "C"},
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {process.returncode}; see {log.name}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{pacs.http_port}/system", timeout=2)
                break
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline:
                    raise RuntimeError("Orthanc did not start within 30 s") from None
                time.sleep(0.2)
        yield pacs
    finally:
        process.terminate()
        process.wait(timeout=15)
        log.close()


@contextmanager
def _builtin_pacs(workdir: Path) -> Iterator[_Pacs]:
    pacs = _Pacs("built-in storage SCP", "DEMOPACS", _free_port(), None, workdir / "pacs")
    pacs.folder.mkdir(parents=True)

    def store(event: evt.Event) -> int:
        request = cast(C_STORE, event.request)
        path = pacs.folder / f"{request.AffectedSOPInstanceUID}.dcm"
        path.write_bytes(event.encoded_dataset())
        return 0x0000

    ae = AE(ae_title=pacs.aet)
    for context in AllStoragePresentationContexts:
        if context.abstract_syntax is not None:
            ae.add_supported_context(
                context.abstract_syntax, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
            )
    server = ae.start_server(
        ("127.0.0.1", pacs.dicom_port), block=False, evt_handlers=[(evt.EVT_C_STORE, store)]
    )
    try:
        yield pacs
    finally:
        if server is not None:
            server.shutdown()


def _table(measurements: dict[str, Any]) -> str:
    adc = measurements.get("adc") or {}
    classes = measurements["classes"]
    rows = [
        ("total diffusion volume (tDV)", f"{measurements['tdv_ml']:.1f} ml"),
        ("lesions", str(len(measurements["lesions"]))),
    ]
    for key, label in (("mean", "ADC mean"), ("median", "ADC median"), ("sd", "ADC SD"),
                       ("p10", "ADC 10th centile"), ("p90", "ADC 90th centile")):  # fmt: skip
        if key in adc:
            rows.append((label, f"{adc[key]:.0f} um2/s"))
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
            f"{lesion['adc_mean']:5.0f} um2/s, {lesion['region']}"
        )
    if len(lesions) > _LESIONS_SHOWN:
        lines.append(f"    ... and {len(lesions) - _LESIONS_SHOWN} more (measurements.json, SR)")
    return "\n".join(lines)


def _wait_until_delivered(node: Node) -> JobState:
    deadline = time.monotonic() + _TIMEOUT_S
    while time.monotonic() < deadline:
        jobs = node.store.jobs()
        if jobs and all(job.state in (JobState.DONE, JobState.FAILED) for job in jobs):
            return jobs[0].state
        time.sleep(0.2)
    raise RuntimeError(f"the exam was not processed and delivered within {_TIMEOUT_S:.0f} s")


def _run(workdir: Path, pacs: _Pacs) -> int:
    settings = load_settings(
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
    node = Node(settings)
    node.start()
    print(f"node: AE {settings.node.ae_title} on port {settings.node.port}, device "
          f"{node.device_description}, data in {node.data_dir}")  # fmt: skip
    print(f"      http://127.0.0.1:{settings.node.http_port}/metrics")
    try:
        files = write_exam(make_phantom("reference", seed=1), workdir / "scanner")
        exam = performed_exam(files)
        scanner = Destination("127.0.0.1", settings.node.port, settings.node.ae_title,
                              calling_aet="DEMOSCANNER")  # fmt: skip
        started = time.perf_counter()
        mpps_uid = create_mpps(scanner, exam)
        report = send_files(files, scanner)
        complete_mpps(scanner, mpps_uid, exam)
        print(f"scanner: {report.summary()}; MPPS COMPLETED")
        state = _wait_until_delivered(node)
        elapsed = time.perf_counter() - started
        job = node.store.jobs()[0]
        if state is not JobState.DONE:
            print(f"the job failed: {job.reason}", file=sys.stderr)
            return 1
        print(f"results delivered to {pacs.kind} {elapsed:.1f} s after the first image was sent\n")
        measurements_path = node.results_dir / job.study_uid / f"v{job.version}" / MEASUREMENTS_FILE
        print("measurements (the numbers of the TID 1500 SR):")
        print(_table(json.loads(measurements_path.read_text())))
        key_images = sorted((measurements_path.parent / "key_images").glob("*.dcm"))
        print("\nkey images (Secondary Capture, also in the PACS):")
        if pacs.http_port is not None:
            for path in key_images:
                uid = path.stem
                found = urllib.request.urlopen(
                    urllib.request.Request(
                        f"http://127.0.0.1:{pacs.http_port}/tools/lookup",
                        data=uid.encode(),
                        method="POST",
                    ),
                    timeout=10,
                ).read()
                for hit in json.loads(found):
                    base = f"http://127.0.0.1:{pacs.http_port}/instances/{hit['ID']}"
                    print(f"  {base}/preview   (while the demo runs)\n    file: {path}")
        else:
            for path in key_images:
                print(f"  {path}")
        print(f"\nall result files: {measurements_path.parent}")
        return 0
    finally:
        node.stop()


def main() -> int:
    """Run the demo; 0 when the results reached the PACS."""
    configure_logging(LoggingSettings(level="warning", format=LogFormat.CONSOLE))
    with tempfile.TemporaryDirectory(prefix="wbdwi-demo-") as folder:
        workdir = Path(folder)
        binary = _orthanc_binary()
        pacs_context = _orthanc(binary, workdir) if binary else _builtin_pacs(workdir)
        with pacs_context as pacs:
            print(f"PACS: {pacs.kind} as {pacs.aet} on port {pacs.dicom_port}")
            status = _run(workdir, pacs)
            print(f"\nstopping the node and the {pacs.kind}; result files stay in {DEMO_RESULTS}")
        return status


if __name__ == "__main__":
    sys.exit(main())
