"""Processing speed per stage on CPU (and GPU when CuPy and a device are present).

For the ``reference`` (5 x 50 slices, 128 x 128, 3 b-values) and ``large``
(6 x 50 slices, 256 x 256, 4 b-values) phantoms at SNR 40,
:func:`processing.pipeline.process_exam` is timed per stage (the stage timer
synchronises the device at every boundary). Each preset and device runs in a
fresh subprocess that loads the exam from a ``.npz`` file, processes it once to
warm up (CuPy compiles its kernels on first use) and then three times timed;
each stage's figure is the median of the three (the development machine is
shared, and one run can be slowed by another process), and the three totals
are printed too. Its peak resident memory beyond the loaded exam (``VmHWM``
minus the resident size after loading) is the processing's peak host memory.

On a GPU the same run reports the ratio to the CPU run of the same preset
measured in this invocation, and an effective bandwidth: the bytes of the input
signal plus the output maps (ADC, validity, computed-b images, masks) over the
on-device time (everything but upload and download), next to the device's
own device-to-device copy bandwidth measured in the same subprocess.

Targets (issue 3): CPU ``reference`` <= 5 s on the 2-core development machine;
GPU >= 20 x faster than CPU on ``large``.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["main"]

PRESETS = ("reference", "large")
TARGET_CPU_REFERENCE_S = 5.0
TARGET_GPU_SPEEDUP_LARGE = 20.0
_TRANSFER_STAGES = ("upload", "download")
REPEATS = 3


def _save_exam(preset: str, folder: Path) -> Path:
    from processing.phantom import make_phantom

    exam = make_phantom(preset, snr=40.0, seed=0).to_exam()
    path = folder / f"{preset}.npz"
    np.savez(
        path,
        signal=exam.signal,
        b_values=np.asarray(exam.b_values),
        affine=exam.affine,
        spacing_mm=np.asarray(exam.spacing_mm),
    )
    return path


def _resident_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _child(path: str, device: str) -> dict[str, Any]:
    """Runs in the subprocess: load, warm up, time, measure memory (and GPU bandwidth)."""
    from processing.exam import DwiExam
    from processing.pipeline import process_exam

    data = np.load(path)
    spacing = tuple(float(v) for v in data["spacing_mm"])
    exam = DwiExam(
        signal=np.ascontiguousarray(data["signal"], dtype=np.float32),
        b_values=tuple(float(b) for b in data["b_values"]),
        affine=np.asarray(data["affine"], dtype=np.float64),
        spacing_mm=(spacing[0], spacing[1], spacing[2]),
        study_instance_uid="2.25.1",
        frame_of_reference_uid="2.25.2",
        patient_id="BENCH",
    )
    loaded_kb = _resident_kb("VmRSS")
    process_exam(exam, device=device)  # warm-up
    walls: list[float] = []
    runs: list[dict[str, float]] = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        result = process_exam(exam, device=device)
        walls.append(time.perf_counter() - started)
        runs.append(dict(result.timings_s))
    timings = {stage: statistics.median(run[stage] for run in runs) for stage in runs[0]}
    output_bytes = (
        result.adc.nbytes
        + result.adc_valid.nbytes
        + sum(image.image.nbytes for image in result.computed)
        + result.body_mask.nbytes
        + result.tumour_mask.nbytes
        + result.class_labels.nbytes
        + result.lesion_labels.nbytes
    )
    report: dict[str, Any] = {
        "device": result.device,
        "wall_s": statistics.median(walls),
        "timings_s": timings,
        "totals_s": [run["total"] for run in runs],
        "peak_host_mb": (_resident_kb("VmHWM") - loaded_kb) / 1024.0,
        "exam_mb": exam.signal.nbytes / 2**20,
        "shape": list(exam.shape),
        "bytes": exam.signal.nbytes + output_bytes,
        "tdv_ml": result.stats.tdv_ml,
    }
    if device == "gpu":
        report["copy_bandwidth_gbs"] = _device_copy_bandwidth()
    return report


def _device_copy_bandwidth() -> float:
    """Device-to-device copy bandwidth (bytes read + written per second, GB/s)."""
    from processing.backend import select_backend

    cupy = select_backend("gpu").xp
    source = cupy.ones(256 * 2**20, dtype=cupy.float32)  # 1 GiB
    target = cupy.empty_like(source)
    cupy.copyto(target, source)
    start, stop = cupy.cuda.Event(), cupy.cuda.Event()
    repeats = 10
    start.record()
    for _ in range(repeats):
        cupy.copyto(target, source)
    stop.record()
    stop.synchronize()
    seconds = cupy.cuda.get_elapsed_time(start, stop) / 1000.0
    return float(2.0 * source.nbytes * repeats / seconds / 1e9)


def _run_child(path: Path, device: str) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_processing", "--child", str(path), device],
        check=True,
        capture_output=True,
        text=True,
    )
    report: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return report


def _print_run(preset: str, report: dict[str, Any]) -> None:
    timings = report["timings_s"]
    stages = ", ".join(f"{k} {v:.3f}" for k, v in timings.items() if k != "total")
    totals = ", ".join(f"{total:.2f}" for total in report["totals_s"])
    print(
        f"{preset:9s} {report['device']}: total {timings['total']:.2f} s, median of {totals} "
        f"(shape {report['shape']}, input {report['exam_mb']:.0f} MB, "
        f"peak host memory +{report['peak_host_mb']:.0f} MB, tDV {report['tdv_ml']:.1f} ml)"
    )
    print(f"          stages (s, medians): {stages}")


def main() -> None:
    """Print per-stage timings, totals, peak memory and GPU ratios."""
    from processing.backend import gpu_status

    gpu_usable, gpu_detail = gpu_status()
    with tempfile.TemporaryDirectory(prefix="wbdwi-bench-") as temporary:
        folder = Path(temporary)
        for preset in PRESETS:
            path = _save_exam(preset, folder)
            cpu = _run_child(path, "cpu")
            _print_run(preset, cpu)
            if preset == "reference":
                verdict = (
                    "meets" if cpu["timings_s"]["total"] <= TARGET_CPU_REFERENCE_S else "MISSES"
                )
                print(f"          CPU target <= {TARGET_CPU_REFERENCE_S:.0f} s: {verdict}")
            if not gpu_usable:
                continue
            gpu = _run_child(path, "gpu")
            _print_run(preset, gpu)
            speedup = cpu["timings_s"]["total"] / gpu["timings_s"]["total"]
            on_device = gpu["timings_s"]["total"] - sum(
                gpu["timings_s"].get(stage, 0.0) for stage in _TRANSFER_STAGES
            )
            effective = gpu["bytes"] / on_device / 1e9
            print(
                f"          GPU vs CPU (same run): {speedup:.1f}x; effective {effective:.1f} GB/s "
                f"vs device copy {gpu['copy_bandwidth_gbs']:.0f} GB/s "
                f"({100.0 * effective / gpu['copy_bandwidth_gbs']:.1f} %)"
            )
            if preset == "large":
                verdict = "meets" if speedup >= TARGET_GPU_SPEEDUP_LARGE else "MISSES"
                print(
                    f"          GPU target >= {TARGET_GPU_SPEEDUP_LARGE:.0f}x on large: {verdict}"
                )
    if not gpu_usable:
        print(f"GPU: not measured ({gpu_detail})")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        print(json.dumps(_child(sys.argv[2], sys.argv[3])))
    else:
        main()
