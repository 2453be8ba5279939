"""Delivery of one exam's result objects: one association per destination or several.

The reference phantom exam is processed offline once (``wbdwi process``: its
474 result objects); then the exporter (:class:`service.exporter.Exporter`, a
real job store and ledger) delivers them in one round to (a) dcmtk
``storescp --fork`` (``TCP_NODELAY=1``, as in ``bench_latency``) and (b) Orthanc
(the tests' PACS, a fresh one per run), with
``export.associations_per_destination`` 1, 2, 3 and 4, runs interleaved,
median of ``--repeats`` (default 3) each. Printed per peer and setting: seconds
for the round, ms per file, our process's CPU per file and the peer's CPU per
file (Orthanc's own; storescp's children are not counted), and the speed-up
over one association.

With one association each C-STORE waits for the peer's response before the next
goes: the round takes about our time per file plus the peer's. With several, the
peer stores one file while another comes.

``--latency RUNS``: instead, the reference exam end to end (MPPS COMPLETED to the
last acknowledgement) with one association and with the default, runs
interleaved, median of RUNS each: through ``wbdwi serve`` to ``storescp --fork``
(``bench_latency``'s measurement, its "send (processed to done)" too) and, where
Orthanc is installed, the node in-process to Orthanc (``bench_receive``'s).

``python -m benchmarks export [--repeats N] [--latency RUNS] [--device cpu|gpu]``
(needs dcmtk, and Orthanc for its rows: ``make tools``).
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

__all__ = ["main"]

SETTINGS = (1, 2, 3, 4)
_ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of process ``pid`` (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def _storescp(workdir: Path) -> Iterator[tuple[str, int]]:
    folder = workdir / "storescp"
    folder.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    process = subprocess.Popen(
        ["storescp", "-aet", "PACS", "-od", str(folder), "--fork", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "TCP_NODELAY": "1"},
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        yield f"PACS@127.0.0.1:{port}", 0
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def _orthanc(workdir: Path) -> Iterator[tuple[str, int]]:
    from tests.helpers.orthanc import running_orthanc

    shutil.rmtree(workdir / "orthanc", ignore_errors=True)
    with running_orthanc(workdir) as server:
        config = str(workdir / "orthanc" / "orthanc.json")
        found = subprocess.run(["pgrep", "-f", config], capture_output=True, text=True, check=False)
        pid = int(found.stdout.split()[0])
        yield f"{server.aet}@127.0.0.1:{server.dicom_port}", pid
    shutil.rmtree(workdir / "orthanc", ignore_errors=True)


def _round(
    results: list[Path], workdir: Path, destination: str, peer_pid: int, associations: int
) -> dict[str, float]:
    """Deliver ``results`` in one exporter round; seconds and CPU per file."""
    from dicom_node.receive.spool import SpooledInstance
    from service.exporter import Exporter
    from service.jobs import JobSpec, JobState, make_job_key
    from service.jobstore import SqliteJobStore
    from service.settings import ExportSettings

    shutil.rmtree(workdir / "store", ignore_errors=True)
    store = SqliteJobStore(workdir / "store" / "jobs.sqlite")
    try:
        study = "1.2.826.0.1.3680043.8.498.1"
        store.record_instance(
            SpooledInstance(
                sop_instance_uid=f"{study}.1", sop_class_uid="1.2.840.10008.5.1.4.1.1.4",
                study_uid=study, series_uid=f"{study}.2", series_description="DWI",
                transfer_syntax_uid="1.2.840.10008.1.2.1", calling_ae="SCANNER",
                path=workdir / "in.dcm", size_bytes=1, received_at=time.time(),
            )
        )  # fmt: skip
        job_id = store.receiving_studies()[0].job_id
        store.submit(
            JobSpec(
                job_key=make_job_key(study, "1.0", [f"{study}.1"]), job_id=job_id,
                study_uid=study, version=1, input_paths=(str(workdir / "in.dcm"),),
                output_dir=str(workdir / "out"), destinations=(destination,),
            )
        )  # fmt: skip
        store.claim()
        from dicom_node.scu.export import read_result_identity

        identities = [(str(path), read_result_identity(path).sop_instance_uid) for path in results]
        store.finish_processing(job_id, identities, [destination], 1.0)
        exporter = Exporter(
            store, ExportSettings(associations_per_destination=associations), "WBDWI"
        )
        os.sync()
        peer_before = _cpu_seconds(peer_pid) if peer_pid else 0.0
        cpu_before = time.process_time()
        started = time.perf_counter()
        sent = exporter.deliver_due()
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu_before
        peer = _cpu_seconds(peer_pid) - peer_before if peer_pid else float("nan")
        if sent != len(results) or store.jobs()[0].state is not JobState.DONE:
            raise RuntimeError(f"{sent} of {len(results)} acknowledged")
    finally:
        store.close()
    count = len(results)
    return {
        "seconds": seconds,
        "ms_per_file": 1000 * seconds / count,
        "our_cpu_ms_per_file": 1000 * cpu / count,
        "peer_cpu_ms_per_file": 1000 * peer / count,
    }


def _results(workdir: Path) -> list[Path]:
    """The reference exam's result objects, processed offline."""
    for command in (
        ["phantom", "--out", str(workdir / "phantom"), "--preset", "reference", "--snr", "40"],
        ["process", "--out", str(workdir / "results"), "--device", "cpu",
         str(workdir / "phantom" / "dicom")],
    ):  # fmt: skip
        made = subprocess.run(
            [sys.executable, "-m", "service.cli", *command],
            cwd=_ROOT, capture_output=True, text=True, check=False,
        )  # fmt: skip
        if made.returncode != 0:
            raise RuntimeError(made.stderr[-500:])
    return sorted((workdir / "results").rglob("*.dcm"))


def _end_to_end(runs: int, device: str) -> None:
    """The reference exam end to end, 1 association against the default; medians."""
    from benchmarks.bench_latency import measure_latency
    from benchmarks.bench_receive import orthanc_latency
    from dicom_node.simulator.scanner import write_exam
    from processing.phantom import make_phantom
    from service.settings import ExportSettings

    default = ExportSettings().associations_per_destination
    with tempfile.TemporaryDirectory(prefix="wbdwi-bench-export-e2e-") as folder:
        workdir = Path(folder)
        exam_dir = workdir / "exam"
        files = sorted(write_exam(make_phantom("reference", seed=1), exam_dir, distractors=False))
        orthanc = Path("/usr/sbin/Orthanc").exists() or shutil.which("Orthanc") is not None
        measured: dict[tuple[str, int], list[float]] = {}
        for run in range(runs):
            for associations in (1, default):
                result = measure_latency(
                    device,
                    workdir / f"storescp-{run}-{associations}",
                    exam_dir,
                    node_env={"WBDWI_EXPORT_ASSOCIATIONS_PER_DESTINATION": str(associations)},
                )
                for key in ("total", "send (processed to done)"):
                    measured.setdefault((f"storescp, {key}", associations), []).append(result[key])
                if not orthanc:
                    continue
                seconds, _ = orthanc_latency(
                    files,
                    workdir / f"orthanc-{run}-{associations}",
                    {"associations_per_destination": associations},
                )
                measured.setdefault(("Orthanc (in-process node), total", associations), [])
                measured[("Orthanc (in-process node), total", associations)].append(seconds)
    print(f"reference exam end to end, device {device}: median of {runs} (seconds)")
    for (name, associations), values in measured.items():
        print(
            f"  {name:<44} associations {associations}: {statistics.median(values):6.2f}"
            f"   (runs: {', '.join(f'{value:.2f}' for value in values)})"
        )


def main(argv: list[str] | None = None) -> None:
    """Print seconds per delivery round for 1-4 associations, storescp and Orthanc."""
    from service.logging import configure_logging
    from service.node import SWITCH_INTERVAL_S
    from service.settings import LogFormat, LoggingSettings

    arguments = list(argv or [])
    repeats = int(arguments[arguments.index("--repeats") + 1]) if "--repeats" in arguments else 3
    device = arguments[arguments.index("--device") + 1] if "--device" in arguments else "cpu"
    if shutil.which("storescp") is None:
        print("dcmtk storescp not found: make tools", file=sys.stderr)
        raise SystemExit(2)
    configure_logging(LoggingSettings(level="warning", format=LogFormat.CONSOLE))
    sys.setswitchinterval(SWITCH_INTERVAL_S)  # as in `wbdwi serve`
    if "--latency" in arguments:
        _end_to_end(int(arguments[arguments.index("--latency") + 1]), device)
        return
    peers: dict[str, Callable[[Path], AbstractContextManager[tuple[str, int]]]] = {
        "storescp --fork": _storescp,
        "Orthanc": _orthanc,
    }
    with tempfile.TemporaryDirectory(prefix="wbdwi-bench-export-") as folder:
        workdir = Path(folder)
        results = _results(workdir)
        print(f"{len(results)} result objects, {sum(p.stat().st_size for p in results) >> 20} MiB")
        with _storescp(workdir) as (destination, pid):  # warm-up: imports, page cache
            _round(results, workdir, destination, pid, 1)
        for name, peer in peers.items():
            orthanc = Path("/usr/sbin/Orthanc").exists() or shutil.which("Orthanc") is not None
            if name == "Orthanc" and not orthanc:
                print("Orthanc: not installed, skipped")
                continue
            runs: dict[int, list[dict[str, float]]] = {n: [] for n in SETTINGS}
            for _ in range(repeats):
                for associations in SETTINGS:
                    with peer(workdir) as (destination, pid):
                        runs[associations].append(
                            _round(results, workdir, destination, pid, associations)
                        )
            print(f"{name}: median of {repeats}")
            print(f"  {'assoc':>5} {'s':>6} {'ms/file':>8} {'our cpu':>8} {'peer cpu':>9} speed-up")
            one = statistics.median(run["seconds"] for run in runs[1])
            for associations, measured in runs.items():
                median = {k: statistics.median(run[k] for run in measured) for k in measured[0]}
                print(
                    f"  {associations:>5} {median['seconds']:6.2f} {median['ms_per_file']:8.2f} "
                    f"{median['our_cpu_ms_per_file']:8.2f} {median['peer_cpu_ms_per_file']:9.2f} "
                    f"{one / median['seconds']:7.2f}x   "
                    "(runs: " + ", ".join(f"{run['seconds']:.2f}" for run in measured) + ")"
                )


if __name__ == "__main__":
    main(sys.argv[1:])
