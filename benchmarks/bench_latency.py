"""End-to-end latency of the node: MPPS COMPLETED to the PACS's last acknowledgement.

The reference phantom exam (``wbdwi phantom --preset reference --snr 40``,
written by the simulated scanner) is sent with dcmtk ``storescu`` to the real
node (``wbdwi serve`` as a subprocess, the harness of ``tests/integration``),
whose destination is a dcmtk ``storescp`` peer started in the same run. The
node waits for the MPPS (quiet period 600 s, so only MPPS COMPLETED can end the
exam); the clock starts when ``complete_mpps`` returns (the N-SET is
acknowledged) and stops when the job store marks the job ``done`` (every
result object acknowledged by the peer; the peer then holds them all).

Printed per device (CPU; and GPU when :func:`processing.backend.gpu_status`
says yes): the total, the node's own stages from its job summary
(``assemble``, ``process`` and its sub-stages, ``write``), and from the node's
log the wait until the exam is ready (MPPS grace), until the worker starts it,
the job itself and the sending after it is processed (of which the time in
the exporter's C-STORE rounds, each acknowledgement recorded in the ledger
included), how long before the job had processed its derived series were
queued for delivery (they go out while the SEG and SR are made), and the share
of the input images the read-ahead had read when the job started, with the
GPU/CPU ratio of each. Target (issue 13): <= 5 s on the 2-core development
machine's CPU, <= 2 s on a GPU host.

``python -m benchmarks latency`` (needs dcmtk: ``make tools``).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

__all__ = ["main", "measure_latency"]

TARGET_CPU_S = 5.0
TARGET_GPU_S = 2.0
_ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _job_state(data_dir: Path) -> str | None:
    path = data_dir / "jobs.sqlite"
    if not path.exists():
        return None
    connection = sqlite3.connect(path, timeout=10)
    try:
        row = connection.execute("SELECT state FROM jobs ORDER BY job_id LIMIT 1").fetchone()
    except sqlite3.OperationalError:
        return None
    finally:
        connection.close()
    return None if row is None else str(row[0])


def _event_times(log: str) -> dict[str, float]:
    """First time of each JSON log event (epoch seconds)."""
    times: dict[str, float] = {}
    for line in log.splitlines():
        if not line.startswith("{"):
            continue
        try:
            entry = json.loads(line)
            when = datetime.fromisoformat(str(entry["timestamp"]).replace("Z", "+00:00"))
        except (ValueError, KeyError):
            continue
        times.setdefault(str(entry.get("event")), when.timestamp())
    return times


def _event_fields(log: str, event: str) -> dict[str, Any]:
    """The fields of the first ``event`` in the node's JSON log (empty when absent)."""
    for line in log.splitlines():
        if line.startswith("{") and f'"{event}"' in line:
            try:
                entry: dict[str, Any] = json.loads(line)
            except ValueError:
                continue
            if entry.get("event") == event:
                return entry
    return {}


def _export_seconds(log: str) -> float:
    """Seconds the exporter spent in C-STORE rounds (``export_round`` events), ledger included."""
    total = 0.0
    for line in log.splitlines():
        if not line.startswith("{"):
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("event") == "export_round":
            total += float(entry.get("seconds", 0.0))
    return total


def measure_latency(
    device: str, workdir: Path, exam_dir: Path, *, node_env: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """One exam through a fresh node on ``device``; seconds per stage and in total.

    ``node_env``: variables for the node's process, e.g. a setting
    (``WBDWI_NODE_READ_AHEAD_MB``); the node takes no ``WBDWI_*`` variable from
    this process's environment.
    """
    sys.path.insert(0, str(_ROOT))
    from dicom_node.scu.mpps import complete_mpps, create_mpps, performed_exam
    from dicom_node.scu.send import Destination
    from tests.helpers.node_harness import NodeProcess, storescu

    files = sorted(p for p in exam_dir.rglob("*") if p.is_file())
    exam = performed_exam(files)
    pacs_dir = workdir / "pacs"
    pacs_dir.mkdir(parents=True)
    pacs_port = _free_port()
    pacs = subprocess.Popen(
        ["storescp", "-aet", "PACS", "-od", str(pacs_dir), "--fork", str(pacs_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # dcmtk answers each C-STORE at once only with TCP_NODELAY (else ~40 ms per object
        # waiting for the delayed ACK: 474 objects 25 s); as service/demo.py runs Orthanc
        env={**os.environ, "TCP_NODELAY": "1"},
    )
    try:
        node = NodeProcess(
            workdir,
            destinations=[f"PACS@127.0.0.1:{pacs_port}"],
            quiet_seconds=600,
            extra_args=["--device", device],
            env=dict(node_env or {}),
        )
        with node:
            scanner = Destination("127.0.0.1", node.port, "WBDWI", calling_aet="SCANNER")
            mpps_uid = create_mpps(scanner, exam)
            sent = storescu(exam_dir, node.port)
            if sent.returncode != 0:
                raise RuntimeError(f"storescu failed: {sent.stderr[-500:]}")
            complete_mpps(scanner, mpps_uid, exam)
            started = time.perf_counter()
            started_wall = time.time()
            deadline = time.monotonic() + 600
            while (state := _job_state(node.data_dir)) not in {"done", "failed"}:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the job did not finish (state {state})")
                time.sleep(0.02)
            total = time.perf_counter() - started
            events = _event_times(node.log())
            assembled = _event_fields(node.log(), "exam_assembled")
            # the round is logged after its last acknowledgement (which ended the job)
            settle = time.monotonic() + 5
            while not (exporting := _export_seconds(node.log())) and time.monotonic() < settle:
                time.sleep(0.05)
            if state != "done":
                raise RuntimeError(f"the job failed: {node.log()[-1500:]}")
            [summary_path] = list((node.data_dir / "results").glob("*/v1/job.json"))
            summary = json.loads(summary_path.read_text())
    finally:
        pacs.terminate()
        pacs.wait(timeout=10)
    received = sum(1 for p in pacs_dir.rglob("*") if p.is_file())
    timings = {k: float(v) for k, v in summary["timings_s"].items()}
    job = timings["assemble"] + timings["priors"] + timings["process"] + timings["write"]
    # the node's log: when the job became ready, started, and was processed (then sent)
    ready = events.get("job_ready", started_wall) - started_wall
    begun = events.get("job_started", started_wall) - started_wall
    processed = events.get("job_processed", started_wall + total) - started_wall
    queued_early = events.get("results_queued_early")
    return {
        "device": summary["device"],
        "total": total,
        "assemble": timings["assemble"],
        "process": timings["process"],
        **{k: v for k, v in timings.items() if k.startswith("process.") and k != "process.total"},
        "write": timings["write"],
        "wait: until ready": ready,
        "wait: ready to start": begun - ready,
        "job (start to processed)": processed - begun,
        "send (processed to done)": total - processed,
        "send: C-STORE rounds": exporting,
        # the derived series go out while the SEG and SR are made (results_queued_early)
        "derived queued early by": (
            0.0 if queued_early is None else processed - (queued_early - started_wall)
        ),
        "inputs read ahead": (
            float(assembled.get("read_ahead", 0)) / max(1, int(assembled.get("instances", 1)))
        ),
        "unaccounted in job": (processed - begun) - job,
        "result_files": len(summary["result_files"]),
        "peer_received": received,
    }


def main() -> None:
    """Measure CPU (and GPU when usable); print per-stage seconds and GPU/CPU ratios."""
    from processing.backend import gpu_status

    if shutil.which("storescp") is None or shutil.which("storescu") is None:
        print("dcmtk storescp/storescu not found: make tools", file=sys.stderr)
        raise SystemExit(2)
    workdir = Path(tempfile.mkdtemp(prefix="wbdwi-bench-latency-"))
    try:
        made = subprocess.run(
            [sys.executable, "-m", "service.cli", "phantom", "--out", str(workdir / "phantom"),
             "--preset", "reference", "--snr", "40"],
            cwd=_ROOT, capture_output=True, text=True, check=False,
        )  # fmt: skip
        if made.returncode != 0:
            raise RuntimeError(made.stderr[-500:])
        exam_dir = workdir / "phantom" / "dicom"
        runs = {"cpu": measure_latency("cpu", workdir / "cpu", exam_dir)}
        runs["cpu, read-ahead off"] = measure_latency(
            "cpu",
            workdir / "cpu-read-ahead-off",
            exam_dir,
            node_env={"WBDWI_NODE_READ_AHEAD_MB": "0"},
        )
        usable, _ = gpu_status()
        if usable:
            runs["gpu"] = measure_latency("gpu", workdir / "gpu", exam_dir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    _print(runs)


def _print(runs: dict[str, dict[str, Any]]) -> None:
    cpu = runs["cpu"]
    gpu = runs.get("gpu")
    print("reference exam: MPPS COMPLETED -> last result acknowledged by the peer (storescp)")
    print(f"{'stage':<24} {'cpu s':>8}" + (f" {'gpu s':>8} {'cpu/gpu':>8}" if gpu else ""))
    for key, value in cpu.items():
        if not isinstance(value, float):
            continue
        line = f"{key:<24} {value:8.3f}"
        if gpu is not None and isinstance(gpu.get(key), float):
            ratio = value / gpu[key] if gpu[key] > 0 else float("inf")
            line += f" {gpu[key]:8.3f} {ratio:8.1f}"
        print(line)
    for name, run in runs.items():
        target = TARGET_GPU_S if name == "gpu" else TARGET_CPU_S
        verdict = "meets" if run["total"] <= target else "MISSES"
        print(
            f"{name}: {run['total']:.2f} s for {run['result_files']} objects "
            f"({run['peer_received']} at the peer), target <= {target:.0f} s: {verdict} "
            f"[{run['device']}]"
        )
    print(json.dumps(runs))


if __name__ == "__main__":
    main()
