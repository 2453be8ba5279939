"""Exam assembly throughput and memory for the ``reference`` phantom read from disk.

The reference preset is 5 stations x 50 slices x 3 b-values = 750 instances of
128 x 128. The exam is written once to a temporary folder; then
:func:`dicom_node.assembly.assemble.assemble_exam` is timed from disk (best of 3, page
cache warm) and compared with the obvious peer measured in the same run: reading
every file with ``pydicom.dcmread`` and decoding ``pixel_array`` (no grouping,
no composition). Memory is measured in a fresh subprocess: its peak resident
size after one assembly next to its size before, and the peak of the
allocations traced (``tracemalloc``) during a second assembly.

Target (issue 2): >= 500 instances/s on the 2-core development machine.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

from pydicom import dcmread

from dicom_node.assembly.assemble import assemble_exam
from dicom_node.assembly.dicom_files import find_dicom_files
from dicom_node.simulator.scanner import write_exam
from processing.phantom import make_phantom

__all__ = ["main"]

TARGET_INSTANCES_PER_S = 500.0
_REPEATS = 3


def _best_of(repeats: int, action: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        best = min(best, time.perf_counter() - started)
    return best


def _read_every_file(files: list[Path]) -> None:
    for path in files:
        _ = dcmread(path).pixel_array


def _peak_rss_mb() -> float:
    """Peak resident memory of this process in MB.

    ``VmHWM`` where Linux provides it: ``ru_maxrss`` survives ``exec`` and would
    report the parent's peak in a freshly started subprocess.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text(encoding="ascii").splitlines():
            if line.startswith("VmHWM:"):
                return float(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _measure_memory(folder: Path) -> str:
    """Run in a subprocess: peak RSS before/after one assembly, and its traced peak."""
    files = find_dicom_files(folder)
    before = _peak_rss_mb()
    assembled = assemble_exam(files)
    after = _peak_rss_mb()
    del assembled
    tracemalloc.start()
    assembled = assemble_exam(files)
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    signal_mb = assembled.exam.signal.nbytes / 2**20
    return f"{before:.1f} {after:.1f} {traced_peak / 2**20:.1f} {signal_mb:.1f}"


def _memory_in_subprocess(folder: Path) -> tuple[float, float, float, float]:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_assembly", "--memory", str(folder)],
        check=True,
        capture_output=True,
        text=True,
    )
    before, after, traced, signal = (float(v) for v in result.stdout.split())
    return before, after, traced, signal


def _bench_flavour(phantom_preset: str, vendor: str, split: str, root: Path) -> None:
    phantom = make_phantom(phantom_preset, snr=40.0)
    folder = root / f"{vendor}-{split}"
    written = write_exam(phantom, folder, vendor=vendor, split=split, distractors=False)
    files = find_dicom_files(folder)
    instances = sum(s.n_slices for s in phantom.stations) * len(phantom.b_values)
    assembled = assemble_exam(files)  # warm the page cache and check it works
    shape = "x".join(map(str, assembled.exam.shape))
    ours = _best_of(_REPEATS, lambda: assemble_exam(files))
    peer = _best_of(_REPEATS, lambda: _read_every_file(files))
    before, after, traced_mb, signal_mb = _memory_in_subprocess(folder)
    rate = instances / ours
    verdict = "meets" if rate >= TARGET_INSTANCES_PER_S else "MISSES"
    print(
        f"{vendor:9s} {split:9s} {len(written):4d} file(s), {instances} images -> [{shape}]\n"
        f"  assemble_exam            best of {_REPEATS}: {ours:6.3f} s = {rate:7.0f} instances/s "
        f"({verdict} target {TARGET_INSTANCES_PER_S:.0f})\n"
        f"  peer dcmread+pixel_array best of {_REPEATS}: {peer:6.3f} s = "
        f"{instances / peer:7.0f} instances/s (assembly/peer time ratio {ours / peer:.2f})\n"
        f"  memory: peak RSS {after:.0f} MB (process before assembling {before:.0f} MB); "
        f"peak traced allocation during assembly {traced_mb:.0f} MB "
        f"(output signal {signal_mb:.0f} MB)",
        flush=True,
    )


def main() -> None:
    """Write the reference phantom once per flavour and report assembly figures."""
    print(__doc__.split("\n\n")[0] if __doc__ else "", flush=True)
    with tempfile.TemporaryDirectory(prefix="wbdwi-bench-") as tmp:
        root = Path(tmp)
        for vendor, split in (
            ("standard", "station"),
            ("philips", "station-b"),
            ("enhanced", "body"),
        ):
            _bench_flavour("reference", vendor, split, root)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--memory":
        print(_measure_memory(Path(sys.argv[2])))
    else:
        main()
