"""Time to write every result object for the ``reference`` and ``large`` phantoms.

For each preset the phantom is written by the simulated scanner, assembled and
processed (CPU) once; then :func:`dicom_node.writers.write_results.write_results` is
timed (best of 2 for ``reference``, one run for ``large``) into a fresh folder
each time. Printed per preset: the time, the number of files, the size of each
object kind on disk, and a peer measured in the same run: writing the same
pixel payloads (float32 ADC, uint16 ADC and computed-b slices, the tumour mask
as bits) as raw files with NumPy, the floor that any DICOM encoding adds to.
The derived series and the Parametric Map are written by up to
:func:`~dicom_node.writers.write_results.writer_limit` child processes (one per
usable core but one, at most 8; ``DICOM_NODE_WRITE_WORKERS=N`` forces N); where
that is more than one, ``reference`` is also timed with one child, the peer of
the split.

Target (issue 4): <= 5 s for ``reference`` on the 2-core development machine.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np

from dicom_node.assembly.assemble import assemble_exam
from dicom_node.simulator.scanner import write_exam
from dicom_node.writers.write_results import WRITERS_ENV, write_results, writer_limit
from processing.exam import DwiExam
from processing.phantom import make_phantom
from processing.pipeline import process_exam
from processing.results import ProcessingResult

__all__ = ["main"]

TARGET_REFERENCE_S = 5.0
_REPEATS = {"reference": 2, "large": 1}


def _write_raw_payloads(exam: DwiExam, result: ProcessingResult, folder: Path) -> None:
    folder.mkdir(parents=True)
    np.asarray(result.adc, dtype=np.float32).tofile(folder / "adc_map.raw")
    planes = [np.rint(np.clip(result.adc, 0, 65535)).astype(np.uint16)]
    planes += [np.asarray(c.image, dtype=np.float32).astype(np.uint16) for c in result.computed]
    for kind, volume in enumerate(planes):
        for z in range(exam.shape[1]):
            volume[z].tofile(folder / f"{kind}_{z}.raw")
    np.packbits(result.tumour_mask).tofile(folder / "mask.raw")


def _timed(action: Callable[[], None], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        best = min(best, time.perf_counter() - started)
    return best


def _bench(preset: str, workdir: Path) -> None:
    phantom = make_phantom(preset, seed=1)
    exam = assemble_exam(write_exam(phantom, workdir / "scanner", distractors=False)).exam
    result = process_exam(exam, device="cpu")
    runs = iter(range(100))
    written: list[Path] = []

    def write() -> None:
        out = workdir / f"out{next(runs)}"
        written[:] = write_results(exam, result, out, version_label="bench")

    def write_raw() -> None:
        _write_raw_payloads(exam, result, workdir / f"raw{next(runs)}")

    seconds = _timed(write, _REPEATS[preset])
    raw_seconds = _timed(write_raw, _REPEATS[preset])
    writers = writer_limit()
    one_child: float | None = None
    if writers > 1 and preset == "reference":
        forced = os.environ.get(WRITERS_ENV)
        os.environ[WRITERS_ENV] = "1"
        try:
            one_child = _timed(write, _REPEATS[preset])
        finally:
            if forced is None:
                del os.environ[WRITERS_ENV]
            else:
                os.environ[WRITERS_ENV] = forced
    sizes: dict[str, int] = defaultdict(int)
    counts: dict[str, int] = defaultdict(int)
    for path in written:
        sizes[path.parent.name] += path.stat().st_size
        counts[path.parent.name] += 1
    _, slices, rows, columns = exam.shape
    print(
        f"{preset}: grid {slices}x{rows}x{columns}, {len(result.stats.lesions)} lesions, "
        f"tDV {result.stats.tdv_ml:.1f} ml"
    )
    print(f"  write_results        {seconds:7.2f} s   {len(written)} files, <= {writers} children")
    if one_child is not None:
        print(
            f"  peer: one child      {one_child:7.2f} s   split saves {one_child - seconds:.2f} s"
        )
    print(f"  peer: raw NumPy dump {raw_seconds:7.2f} s   ratio {seconds / raw_seconds:.1f}x")
    for folder in sorted(sizes):
        print(f"  {folder:<12} {counts[folder]:4d} files {sizes[folder] / 1e6:9.2f} MB")
    print(f"  total                   {sum(sizes.values()) / 1e6:9.2f} MB")
    if preset == "reference":
        verdict = "meets" if seconds <= TARGET_REFERENCE_S else "MISSES"
        print(f"  target <= {TARGET_REFERENCE_S:.0f} s: {verdict}")


def main() -> None:
    """Run the writer benchmark for ``reference`` and ``large``; print the figures."""
    for preset in ("reference", "large"):
        workdir = Path(tempfile.mkdtemp(prefix=f"wbdwi-bench-writers-{preset}-"))
        try:
            _bench(preset, workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
