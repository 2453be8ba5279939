"""``make gpu-check``: everything a lent GPU should tell us, in one run and one table.

Steps (each row of the table):

1. the device probe of :func:`processing.backend.gpu_status` (NVRTC kernel,
   cuFFT, ``cupyx.scipy.ndimage``); without a usable GPU the check stops and
   fails, saying what is missing;
2. ``tests/gpu`` with ``WBDWI_REQUIRE_GPU=1`` (a skip is a failure), plus the
   CPU self-tests of the comparison and of the device selection;
3. ``benchmarks.bench_processing``'s timed child runs of the ``reference``
   and ``large`` phantoms on CPU and GPU (warm: CuPy's kernels compiled), with
   the GPU/CPU ratio;
4. end to end: ``wbdwi process`` of the ``reference`` phantom written as DICOM,
   on the CPU and twice on the GPU (the first run compiles kernels unless the
   on-disk kernel cache has them), wall time of the whole command; on a host
   with the cores for several writing children, once more on the GPU with one
   (``DICOM_NODE_WRITE_WORKERS=1``, as on 2 cores), its peer;
5. the node's latency (``benchmarks.bench_latency``): MPPS COMPLETED to the
   last acknowledgement of a ``storescp`` peer, CPU and GPU, per stage, and
   on such a host once more on the GPU with one writing child.

``python -m benchmarks.gpu_check --without-gpu`` runs the same steps with the
GPU parts left out, to check the script on a CPU-only machine (exit 0 there).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

__all__ = ["main"]

_ROOT = Path(__file__).resolve().parent.parent
_TESTS = (
    "tests/gpu",
    "tests/unit/test_backend_comparison.py",
    "tests/unit/test_gpu_selection.py",
)


def _row(rows: list[tuple[str, str, str]], check: str, result: str, detail: str = "") -> None:
    rows.append((check, result, detail))
    print(f"-- {check}: {result} {detail}".rstrip(), flush=True)


def _run_tests(require_gpu: bool) -> tuple[bool, str, float]:
    env = dict(os.environ)
    if require_gpu:
        env["WBDWI_REQUIRE_GPU"] = "1"
    started = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *_TESTS],
        cwd=_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - started
    lines = [line for line in completed.stdout.splitlines() if line.strip()]
    if completed.returncode != 0:
        print(completed.stdout[-6000:], completed.stderr[-2000:], sep="\n")
    return completed.returncode == 0, lines[-1].strip("= ") if lines else "no output", seconds


def _wbdwi(
    *args: str, env: Mapping[str, str] | None = None
) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        cwd=_ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        check=False,
    )
    return time.perf_counter() - started, completed


def _one_writing_child() -> dict[str, str]:
    """The variable for one writing child, as on a 2-core host (the peer of the
    many-child default on a host with more cores)."""
    from dicom_node.writers.write_results import WRITERS_ENV

    return {WRITERS_ENV: "1"}


def main(argv: list[str] | None = None) -> int:
    """Run the checks, print the table; 0 when every check passed."""
    from benchmarks.bench_processing import _run_child, _save_exam
    from processing.backend import gpu_status

    without_gpu = "--without-gpu" in (argv if argv is not None else sys.argv[1:])
    rows: list[tuple[str, str, str]] = []
    failed = False

    usable, detail = gpu_status()
    _row(rows, "device probe", "ok" if usable else "FAILED", detail)
    if not usable and not without_gpu:
        _print_table(rows)
        return 1
    use_gpu = usable and not without_gpu

    passed, summary, seconds = _run_tests(require_gpu=use_gpu)
    failed |= not passed
    _row(
        rows,
        "tests (tests/gpu + self-tests)",
        "ok" if passed else "FAILED",
        f"{summary} ({seconds:.0f} s)",
    )

    with tempfile.TemporaryDirectory(prefix="wbdwi-gpu-check-") as temporary:
        folder = Path(temporary)
        for preset in ("reference", "large"):
            path = _save_exam(preset, folder)
            cpu = _run_child(path, "cpu")["timings_s"]["total"]
            if not use_gpu:
                _row(rows, f"process_exam {preset}", f"cpu {cpu:.2f} s", "gpu not measured")
                continue
            gpu_run = _run_child(path, "gpu")
            gpu = gpu_run["timings_s"]["total"]
            stages = ", ".join(
                f"{k} {v:.3f}" for k, v in gpu_run["timings_s"].items() if k != "total"
            )
            _row(
                rows,
                f"process_exam {preset}",
                f"cpu {cpu:.2f} s, gpu {gpu:.3f} s, {cpu / gpu:.1f}x",
                f"gpu stages (s): {stages}",
            )

        dicom = folder / "phantom"
        _, done = _wbdwi("phantom", "--out", str(dicom), "--preset", "reference", "--snr", "40")
        if done.returncode != 0:
            failed = True
            _row(rows, "wbdwi phantom", "FAILED", done.stderr.strip()[-300:])
        else:
            failed |= _process_rows(rows, dicom / "dicom", folder, use_gpu)
        _latency_rows(rows, folder / "phantom" / "dicom", use_gpu)
    if not use_gpu:
        _row(rows, "GPU", "not measured", "--without-gpu or no usable GPU")
    _print_table(rows)
    return 1 if failed else 0


def _process_rows(
    rows: list[tuple[str, str, str]], exam_dir: Path, folder: Path, use_gpu: bool
) -> bool:
    """4. ``wbdwi process`` wall times; ``True`` when one failed."""
    from dicom_node.writers.write_results import writer_limit

    runs = [("cpu", ""), *([("gpu", ""), ("gpu", " (again, kernels cached)")] if use_gpu else [])]
    if use_gpu and writer_limit() > 1:
        runs.append(("gpu", " (one writing child)"))
    failed = False
    for index, (device, note) in enumerate(runs):
        arguments = ("process", str(exam_dir), "--out", str(folder / f"out-{index}"))
        env = _one_writing_child() if note.endswith("(one writing child)") else None
        elapsed, done = _wbdwi(*arguments, "--device", device, env=env)
        label = f"wbdwi process --device {device}{note}"
        if done.returncode != 0:
            failed = True
            _row(rows, label, "FAILED", done.stderr.strip()[-300:])
        else:
            first = next(iter(done.stdout.strip().splitlines()), "")
            _row(rows, label, f"{elapsed:.2f} s wall", first[:160])
    return failed


def _latency_rows(rows: list[tuple[str, str, str]], exam_dir: Path, use_gpu: bool) -> None:
    """5. the node end to end (``benchmarks.bench_latency``): MPPS COMPLETED to last ack."""
    from benchmarks.bench_latency import measure_latency

    if not exam_dir.is_dir():
        return
    from dicom_node.writers.write_results import writer_limit

    runs = [("cpu", ""), *([("gpu", "")] if use_gpu else [])]
    if use_gpu and writer_limit() > 1:
        runs.append(("gpu", " (one writing child)"))
    for device, note in runs:
        label = f"latency node --device {device}{note}"
        try:
            with tempfile.TemporaryDirectory(prefix=f"wbdwi-latency-{device}-") as work:
                env = _one_writing_child() if note else None
                run = measure_latency(device, Path(work), exam_dir, node_env=env)
        except (RuntimeError, OSError, AssertionError) as error:
            _row(rows, label, "FAILED", str(error)[-300:])
            continue
        stages = ", ".join(
            f"{k} {run[k]:.2f}"
            for k in (
                "assemble",
                "process",
                "write",
                "send (processed to done)",
                "derived queued early by",
                "inputs read ahead",
            )
        )
        _row(rows, label, f"{run['total']:.2f} s", stages)


def _print_table(rows: list[tuple[str, str, str]]) -> None:
    width = max(len(check) for check, _, _ in rows)
    result_width = max(len(result) for _, result, _ in rows)
    print("\n== gpu-check summary")
    for check, result, detail in rows:
        print(f"{check:<{width}}  {result:<{result_width}}  {detail}")


if __name__ == "__main__":
    sys.exit(main())
