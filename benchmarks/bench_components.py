"""What one exam can cost: 1, 10, 100 and 1000 tumour components, time and peak memory per stage.

A noisy exam can give the segmentation hundreds of candidate components, and
every writer must stay linear in lesions and frames (issue 13: the SR writer
walked every SEG frame for each lesion, minutes and > 4 GB on such an exam).
Here the ``small`` phantom (``--preset reference`` for the clinical grid) is
measured with a mask of ``N`` separate 2 x 2 x 2-voxel cubes inside the body
(:func:`processing.pipeline.measure_tumour_mask`, the path of a reader's
mask: the same lesion labelling, statistics, classes and regions as the
automatic segmentation), with ``max_reported_lesions = N`` so that every
component is a listed lesion with its own SEG segment and SR groups, and the
results are written with :func:`dicom_node.writers.write_results.write_results`.

Each ``N`` runs in a fresh child process. Printed per stage: wall time and the
process's peak resident memory at the end of the stage (``ru_maxrss``, a high
water mark: the peak of the stage or of an earlier one), and per ``N`` the
time per component of the writing stage, which stays flat when writing is
linear.

``python -m benchmarks components [--preset=reference] [--counts=1,10,100,1000]``
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

__all__ = ["component_mask", "main"]

_COUNTS = (1, 10, 100, 1000)
_CUBE = 2
_PITCH = 3  # cube corners 3 voxels apart: 1 voxel of gap, separate in 26-connectivity


def component_mask(body: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """``count`` separate ``2 x 2 x 2`` cubes lying wholly inside ``body``."""
    nz, ny, nx = body.shape
    corners = np.stack(
        np.meshgrid(
            np.arange(0, nz - _CUBE + 1, _PITCH),
            np.arange(0, ny - _CUBE + 1, _PITCH),
            np.arange(0, nx - _CUBE + 1, _PITCH),
            indexing="ij",
        ),
        axis=-1,
    ).reshape(-1, 3)
    inside = np.ones(len(corners), dtype=bool)
    for dz in range(_CUBE):
        for dy in range(_CUBE):
            for dx in range(_CUBE):
                inside &= body[corners[:, 0] + dz, corners[:, 1] + dy, corners[:, 2] + dx]
    corners = corners[inside]
    if len(corners) < count:
        raise ValueError(f"only {len(corners)} cubes fit inside the body, {count} asked")
    chosen = corners[np.random.default_rng(seed).permutation(len(corners))[:count]]
    mask = np.zeros(body.shape, dtype=bool)
    for z, y, x in chosen:
        mask[z : z + _CUBE, y : y + _CUBE, x : x + _CUBE] = True
    return mask


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _child(preset: str, count: int, folder: str, queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    from dicom_node.assembly.assemble import assemble_exam
    from dicom_node.simulator.scanner import write_exam
    from dicom_node.writers.write_results import write_results
    from processing.phantom import make_phantom
    from processing.pipeline import measure_tumour_mask, process_exam
    from processing.settings import ProcessingSettings

    stages: list[tuple[str, float, float]] = []
    started = time.perf_counter()
    phantom = make_phantom(preset, seed=1, snr=40.0)
    exam = assemble_exam(write_exam(phantom, Path(folder) / "scanner", distractors=False)).exam
    automatic = process_exam(exam, device="cpu")
    stages.append(("phantom+body", time.perf_counter() - started, _peak_mb()))
    settings = dataclasses.replace(ProcessingSettings(), max_reported_lesions=max(20, count))
    mask = component_mask(np.asarray(automatic.body_mask, dtype=bool), count)
    started = time.perf_counter()
    result = measure_tumour_mask(exam, mask, settings, device="cpu")
    stages.append(("processing", time.perf_counter() - started, _peak_mb()))
    started = time.perf_counter()
    files = write_results(exam, result, Path(folder) / "out", version_label="bench")
    stages.append(("writing", time.perf_counter() - started, _peak_mb()))
    queue.put({"stages": stages, "lesions": len(result.stats.lesions), "files": len(files)})


def _options(argv: list[str]) -> tuple[str, tuple[int, ...]]:
    preset: str = "small"
    counts: tuple[int, ...] = _COUNTS
    for word in argv:
        if word.startswith("--preset="):
            preset = word.split("=", 1)[1]
        elif word.startswith("--counts="):
            counts = tuple(int(v) for v in word.split("=", 1)[1].split(","))
    return preset, counts


def main(argv: list[str] | None = None) -> None:
    """Run each component count in a child process; print the per-stage table."""
    preset, counts = _options(list(argv if argv is not None else sys.argv[1:]))
    context = multiprocessing.get_context("spawn")
    rows = []
    print(f"preset {preset}; components of 2x2x2 voxels; every component a listed lesion")
    print(f"{'N':>5} {'stage':<15} {'time s':>8} {'peak RSS MB':>12}")
    for count in counts:
        folder = tempfile.mkdtemp(prefix=f"wbdwi-bench-components-{count}-")
        try:
            queue = context.Queue()
            child = context.Process(target=_child, args=(preset, count, folder, queue))
            child.start()
            child.join()
            if child.exitcode != 0 or queue.empty():
                raise RuntimeError(f"{count} components: the child failed ({child.exitcode})")
            outcome = queue.get()
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        for stage, seconds, peak in outcome["stages"]:
            print(f"{count:>5} {stage:<15} {seconds:8.2f} {peak:12.0f}")
        writing = outcome["stages"][-1][1]
        print(
            f"{count:>5} {'':<15} {outcome['lesions']} lesions, {outcome['files']} files, "
            f"writing {1000.0 * writing / count:.1f} ms per component",
            flush=True,
        )
        rows.append({"components": count, **outcome})
    print(json.dumps({"preset": preset, "runs": rows}))


if __name__ == "__main__":
    main()
