"""Receive throughput of the node against dcmtk ``storescp``, and end-to-end latency.

The node's receive side is the native Upper Layer acceptor (``dicom_node.receive.ul``):
one thread per association, the data set written to the spool as received.

0. The spool alone, no network: ``Spool.store`` (header walk, duplicate check,
   temporary file, fdatasync, rename, folder fsync, SQLite row) per instance,
   back to back, durable and with ``fsync = false``: what storing costs without
   any protocol work. (Measured here, back to back it can take longer per
   instance than a network run, where the sender's own time separates the
   instances: the figure is a cost, not a bound.)
1. Receive, one association: the ``reference`` phantom exam (750 files) sent by
   dcmtk ``storescu`` (``TCP_NODELAY=1``) to (a) dcmtk ``storescp`` writing
   files to disk and (b) the node's receiver with its durable spool (temporary
   file, fsync, rename, folder fsync, SQLite row, then success), same files,
   same run, runs of the two interleaved, best of 5 each (this machine is shared and
   noisy: storescp alone moved between 1300 and 2700/s from run to run). Printed:
   instances/s of both and the ratio of the bests; also the ratio of each node run
   to the storescp run just before it, and their median.
   Also (c) the node with ``receive.fsync = false`` (safe against a crash of the
   process, not against power loss), to show what fsync costs.
   Target (issue 5): node >= 0.5x storescp.
2. Receive, 4 concurrent associations (the files split in 4): storescp with
   ``--fork`` against the node.
3. End to end, CPU: the node with Orthanc as destination; the exam is sent
   with MPPS; latency from the MPPS N-SET COMPLETED response to the last
   result acknowledged by Orthanc (the ledger's last entry).
   Target (issue 5): <= 15 s.

Each timed run starts after ``sync``: the runs alternate in one file system,
and an ext4 fsync would otherwise also wait for the previous run's writeback.
``storescp`` gets ``TCP_NODELAY=1`` as well: without it dcmtk waits for delayed
ACKs on loopback and reaches ~20 instances/s, which would flatter the node.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydicom.filereader import read_file_meta_info

from dicom_node.assembly.read_ahead import InstanceCache, ReadAhead
from dicom_node.receive.scp import DicomReceiver, ReceiverConfig
from dicom_node.receive.spool import Spool
from dicom_node.scu.mpps import complete_mpps, create_mpps, performed_exam
from dicom_node.scu.send import Destination
from dicom_node.simulator.scanner import write_exam
from processing.phantom import make_phantom
from service.jobstore import SqliteJobStore
from service.logging import configure_logging
from service.node import SWITCH_INTERVAL_S, Node
from service.settings import LogFormat, LoggingSettings, load_settings

__all__ = ["main"]

TARGET_RATIO = 0.5
THROUGHPUT_REPEATS = 5  # interleaved runs per peer; the best of each is compared
TARGET_LATENCY_S = 15.0
_NODELAY = {**os.environ, "TCP_NODELAY": "1"}


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _dcmtk(name: str) -> str:
    """The dcmtk binary (not pynetdicom's app of the same name in the venv)."""
    for folder in [*os.environ.get("PATH", "").split(os.pathsep), "/usr/bin"]:
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            version = subprocess.run(
                [candidate, "--version"], capture_output=True, text=True, check=False
            )
            if "dcmtk" in version.stdout.lower():
                return str(candidate)
    raise SystemExit(f"dcmtk {name} not found: install dcmtk (make tools)")


def _wait_port(port: int, timeout: float = 10.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def _send(groups: Sequence[Sequence[Path]], port: int, called: str) -> float:
    """Run one storescu per group at once; seconds until all finished.

    The page cache is written back first (``sync``), so that no receiver pays
    for the dirty pages of the run before it: on ext4 an fsync waits for them.
    """
    storescu = _dcmtk("storescu")
    os.sync()
    started = time.perf_counter()
    processes = [
        subprocess.Popen(
            [storescu, "-aet", f"SCANNER{k}", "-aec", called, "127.0.0.1", str(port),
             *map(str, group)],
            env=_NODELAY, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        for k, group in enumerate(groups)
    ]  # fmt: skip
    failures = [p.stderr.read().decode() if p.stderr else "" for p in processes if p.wait() != 0]
    elapsed = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"storescu failed: {failures[0][:500]}")
    return elapsed


def _storescp_rate(groups: Sequence[Sequence[Path]], workdir: Path) -> float:
    out = workdir / "storescp"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    port = _free_port()
    arguments = [_dcmtk("storescp"), "-od", str(out), "-aet", "STORESCP"]
    if len(groups) > 1:
        arguments.append("--fork")
    server = subprocess.Popen([*arguments, str(port)], env=_NODELAY, stderr=subprocess.DEVNULL)
    try:
        _wait_port(port)
        seconds = _send(groups, port, "STORESCP")
    finally:
        server.terminate()
        server.wait(timeout=10)
    stored = sum(1 for path in out.rglob("*") if path.is_file())
    total = sum(len(g) for g in groups)
    if stored != total:
        raise RuntimeError(f"storescp stored {stored} of {total} files")
    return total / seconds


def _node_rate(
    groups: Sequence[Sequence[Path]], workdir: Path, *, fsync: bool, read_ahead: bool = False
) -> float:
    """Instances/s into the node's receiver; ``read_ahead``: with the node's read-ahead
    process reading every stored image meanwhile (as ``wbdwi serve`` does)."""
    data = workdir / "node"
    shutil.rmtree(data, ignore_errors=True)
    store = SqliteJobStore(data / "jobs.sqlite")
    spool = Spool(data / "spool", fsync=fsync)
    reader = ReadAhead(InstanceCache(512 * 1024 * 1024)) if read_ahead else None
    if reader is not None:
        reader.start()  # as the node does at its start, long before a study arrives
        if not reader.wait_started(timeout=120):
            raise RuntimeError("the read-ahead process did not start")
    receiver = DicomReceiver(
        ReceiverConfig(ae_title="WBDWI", port=_free_port(), bind_address="127.0.0.1"),
        spool,
        store,
        on_stored=None if reader is None else (lambda instance: reader.offer(instance.path)),
    )
    receiver.start()
    try:
        seconds = _send(groups, receiver.port, "WBDWI")
    finally:
        receiver.stop(grace_seconds=5)
        spool.close()
        if reader is not None:
            reader.stop()
    stored, _ = store.instance_totals()
    store.close()
    total = sum(len(g) for g in groups)
    if stored != total:
        raise RuntimeError(f"the node stored {stored} of {total} files")
    return total / seconds


def _dataset_bytes(path: Path) -> bytes:
    """A DICOM file's data set (the bytes a C-STORE carries), after its file meta group."""
    data = path.read_bytes()
    group_length = int.from_bytes(data[140:144], "little")
    return data[144 + group_length :]


def _spool_seconds_per_instance(files: Sequence[Path], workdir: Path, *, fsync: bool) -> float:
    identities = [read_file_meta_info(path) for path in files]
    bodies = [_dataset_bytes(path) for path in files]
    data = workdir / "spool-alone"
    shutil.rmtree(data, ignore_errors=True)
    store = SqliteJobStore(data / "jobs.sqlite")
    spool = Spool(data / "spool", fsync=fsync)
    os.sync()
    started = time.perf_counter()
    for meta, body in zip(identities, bodies, strict=True):
        spool.store(
            body,
            sop_class_uid=str(meta.MediaStorageSOPClassUID),
            sop_instance_uid=str(meta.MediaStorageSOPInstanceUID),
            transfer_syntax_uid=str(meta.TransferSyntaxUID),
            calling_ae="BENCH",
            recorder=store,
        )
    elapsed = time.perf_counter() - started
    spool.close()
    store.close()
    return elapsed / len(files)


def _spool_alone(files: Sequence[Path], workdir: Path) -> None:
    durable = min(_spool_seconds_per_instance(files, workdir, fsync=True) for _ in range(2))
    relaxed = min(_spool_seconds_per_instance(files, workdir, fsync=False) for _ in range(2))
    print(f"spool alone (no network), {len(files)} files (best of 2):")
    print(f"  durable (fdatasync + folder fsync)  {durable * 1e6:8.0f} us/instance")
    print(f"  receive.fsync = false               {relaxed * 1e6:8.0f} us/instance")


def _best(rates: list[float]) -> float:
    return max(rates)


def _throughput(files: list[Path], workdir: Path, associations: int) -> None:
    groups = [files[k::associations] for k in range(associations)]
    peer: list[float] = []
    durable: list[float] = []
    no_fsync: list[float] = []
    reading: list[float] = []
    for _ in range(THROUGHPUT_REPEATS):
        peer.append(_storescp_rate(groups, workdir))
        durable.append(_node_rate(groups, workdir, fsync=True))
        no_fsync.append(_node_rate(groups, workdir, fsync=False))
        reading.append(_node_rate(groups, workdir, fsync=True, read_ahead=True))
    ratio = _best(durable) / _best(peer)
    paired = statistics.median(node / dcmtk for node, dcmtk in zip(durable, peer, strict=True))
    label = "1 association" if associations == 1 else f"{associations} associations"
    print(f"receive, {label}, {len(files)} files (best of {THROUGHPUT_REPEATS}):")
    print(f"  dcmtk storescp (files, no fsync)   {_best(peer):8.0f} instances/s")
    print(f"  node, durable spool (fsync)        {_best(durable):8.0f} instances/s"
          f"   ratio {ratio:.2f}x (target >= {TARGET_RATIO}x)")  # fmt: skip
    print(f"  node, receive.fsync = false        {_best(no_fsync):8.0f} instances/s"
          f"   ratio {_best(no_fsync) / _best(peer):.2f}x")  # fmt: skip
    print(f"  node, durable, reading ahead       {_best(reading):8.0f} instances/s"
          f"   ratio {_best(reading) / _best(peer):.2f}x"
          f" ({_best(reading) / _best(durable):.2f}x of durable without)")  # fmt: skip
    by_run = " ".join(f"{node / dcmtk:.2f}" for node, dcmtk in zip(durable, peer, strict=True))
    print(f"  durable / storescp run by run      {by_run} (median {paired:.2f}x)")


def _latency(files: list[Path], workdir: Path) -> None:
    latency, job = orthanc_latency(files, workdir)
    stages = ", ".join(f"{k} {v:.1f} s" for k, v in job["timings_s"].items() if "." not in k)
    print(f"end to end, reference exam ({len(files)} files), CPU, Orthanc as PACS:")
    print(f"  MPPS COMPLETED -> last result acknowledged   {latency:6.1f} s "
          f"(target <= {TARGET_LATENCY_S:.0f} s)")  # fmt: skip
    print(f"  job stages: {stages}; {len(job['result_files'])} result files")


def orthanc_latency(
    files: list[Path], workdir: Path, export: Mapping[str, Any] | None = None
) -> tuple[float, dict[str, Any]]:
    """MPPS COMPLETED to Orthanc's last acknowledgement of an in-process node (CPU), in
    seconds, and the job's summary; ``export``: more ``[export]`` settings."""
    from tests.helpers.orthanc import running_orthanc

    exam = performed_exam(files)
    with running_orthanc(workdir) as orthanc:
        settings = load_settings(
            env={},
            overrides={
                "node": {"data_dir": workdir / "latency-node", "port": _free_port(),
                         "http_port": 0, "device": "cpu", "bind_address": "127.0.0.1"},
                "completion": {"quiet_seconds": 600, "mpps_grace_seconds": 1},
                "export": {"destinations": [f"{orthanc.aet}@127.0.0.1:{orthanc.dicom_port}"],
                           **(export or {})},
                "logging": {"level": "warning"},
            },
        )  # fmt: skip
        node = Node(settings)
        node.start()
        try:
            scanner = Destination("127.0.0.1", settings.node.port, "WBDWI", calling_aet="SCANNER")
            mpps_uid = create_mpps(scanner, exam)
            _send([files], settings.node.port, "WBDWI")
            complete_mpps(scanner, mpps_uid, exam)
            completed_at = time.time()
            database = settings.node.data_dir.resolve() / "jobs.sqlite"
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                with sqlite3.connect(database) as connection:
                    state = connection.execute("SELECT state FROM jobs").fetchone()
                    last_ack = connection.execute(
                        "SELECT MAX(acknowledged_at) FROM ledger"
                    ).fetchone()
                if state and state[0] in ("done", "failed"):
                    break
                time.sleep(0.1)
        finally:
            node.stop()
        if not state or state[0] != "done":
            raise RuntimeError(f"the reference job did not finish: {state}")
        [summary] = list((settings.node.data_dir.resolve() / "results").glob("*/v1/job.json"))
        return float(last_ack[0]) - completed_at, json.loads(summary.read_text())


def main() -> None:
    """Print the spool's own cost, receive throughput (1 and 4 associations), latency."""
    configure_logging(LoggingSettings(level="warning", format=LogFormat.CONSOLE))
    sys.setswitchinterval(SWITCH_INTERVAL_S)  # the receiver's threads as in `wbdwi serve`
    with tempfile.TemporaryDirectory(prefix="wbdwi-bench-receive-") as folder:
        workdir = Path(folder)
        exam_dir = workdir / "exam"
        files = sorted(write_exam(make_phantom("reference", seed=1), exam_dir, distractors=False))
        _spool_alone(files, workdir)
        _throughput(files, workdir, associations=1)
        _throughput(files, workdir, associations=4)
        _latency(files, workdir)


if __name__ == "__main__":
    main()
