"""Choosing the GPU is safe: a probe that runs, a CPU rerun after a CUDA error, a sticky error.

Runs on every CPU machine with the NumPy-backed CuPy stand-in of
:mod:`tests.helpers.fake_cupy`, which fails where a driver-only install (no NVRTC, no
cuFFT) or a poisoned CUDA context fails.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

import service.exam_run as exam_run_module
import service.worker as worker_module
from processing.backend import Device, gpu_status, is_device_error, select_backend
from processing.errors import BackendUnavailableError, InvalidExamError, ProcessingError
from processing.exam import DwiExam
from processing.phantom import make_phantom
from processing.pipeline import process_exam
from processing.results import ProcessingResult
from processing.settings import ProcessingSettings
from service.exam_run import process_on_device
from service.jobs import JobSpec
from service.node import Node
from service.settings import load_settings
from service.worker import JobOutcome, warm_up_gpu
from tests.helpers.fake_cupy import CUDARuntimeError, FakeGpu, OutOfMemoryError, install_fake_cupy

SETTINGS = ProcessingSettings()


@pytest.fixture(scope="module")
def exam() -> DwiExam:
    return make_phantom("small", snr=0.0, seed=0).to_exam()


def test_a_working_gpu_is_selected(monkeypatch: pytest.MonkeyPatch) -> None:
    gpu = install_fake_cupy(monkeypatch)
    usable, detail = gpu_status()
    assert usable, detail
    assert detail == "gpu (Fake H200, cupy 14.2.0+fake)"
    assert select_backend(Device.AUTO).is_gpu
    # The probe ran real work: a compiled kernel, an FFT, an ndimage label.
    assert gpu.calls["ElementwiseKernel"] == 1
    assert gpu.calls["fft.rfft"] == 1
    assert gpu.calls["ndimage.label"] == 1


@pytest.mark.parametrize(
    ("missing", "failed_step", "package"),
    [
        ({"nvrtc"}, "compiling and running a kernel", "nvidia-cuda-nvrtc-cu12"),
        ({"cufft"}, "an FFT", "nvidia-cufft-cu12"),
    ],
)
def test_a_driver_only_install_is_not_selected(
    monkeypatch: pytest.MonkeyPatch, missing: set[str], failed_step: str, package: str
) -> None:
    install_fake_cupy(monkeypatch, FakeGpu(missing=missing))
    usable, detail = gpu_status()
    assert not usable
    assert f"CuPy sees Fake H200 but {failed_step} failed on it" in detail
    assert package in detail
    assert "wbdwi-node[gpu]" in detail
    chosen = select_backend(Device.AUTO)
    assert not chosen.is_gpu
    assert chosen.gpu_unused_reason == detail
    with pytest.raises(BackendUnavailableError, match=package) as raised:
        select_backend(Device.GPU)
    assert isinstance(raised.value, ProcessingError)


def test_no_device_is_not_selected(monkeypatch: pytest.MonkeyPatch) -> None:
    install_fake_cupy(monkeypatch, FakeGpu(devices=0))
    usable, detail = gpu_status()
    assert not usable
    assert "no CUDA device is usable (cudaErrorNoDevice" in detail


def test_the_probe_runs_once_per_process_unless_refreshed(monkeypatch: pytest.MonkeyPatch) -> None:
    gpu = install_fake_cupy(monkeypatch)
    for _ in range(3):
        select_backend(Device.AUTO)
    assert gpu.calls["ElementwiseKernel"] == 1
    gpu.missing.add("nvrtc")
    assert gpu_status()[0]  # cached
    assert not gpu_status(refresh=True)[0]


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (CUDARuntimeError("cudaErrorIllegalAddress: an illegal memory access"), True),
        (OutOfMemoryError("Out of memory allocating 1,024 bytes"), True),
        (RuntimeError("CuPy failed to load libnvrtc.so.12: OSError: libnvrtc.so.12"), True),
        (ValueError("the histogram range is empty"), False),
        (RuntimeError("something unrelated"), False),
    ],
)
def test_device_errors_are_recognised(error: BaseException, expected: bool) -> None:
    assert is_device_error(error) is expected


def test_a_device_error_is_recognised_through_its_cause() -> None:
    try:
        try:
            raise CUDARuntimeError("cudaErrorLaunchFailure: unspecified launch failure")
        except CUDARuntimeError as inner:
            raise TypeError("wrapped") from inner
    except TypeError as outer:
        assert is_device_error(outer)


def _gpu_fails(
    gpu: FakeGpu, make_error: Callable[[], BaseException], calls: list[str]
) -> Callable[..., ProcessingResult]:
    """process_exam whose GPU run raises ``make_error()``; the CPU run is the real one."""

    def fake_process_exam(
        exam: DwiExam, settings: Any = SETTINGS, *, device: Any, **kwargs: Any
    ) -> Any:
        calls.append(Device.coerce(device).value)
        if Device.coerce(device) is Device.GPU:
            select_backend(Device.GPU)  # as the pipeline does first
            raise make_error()
        return process_exam(exam, settings, device=device, **kwargs)

    return fake_process_exam


def test_a_sticky_cuda_error_reruns_the_job_on_the_cpu_and_turns_the_gpu_off(
    monkeypatch: pytest.MonkeyPatch, exam: DwiExam
) -> None:
    gpu = install_fake_cupy(monkeypatch)
    calls: list[str] = []
    monkeypatch.setattr(exam_run_module, "process_exam", _gpu_fails(gpu, gpu.break_context, calls))
    with capture_logs() as logs:
        result, note = process_on_device(exam, SETTINGS, "auto")
    assert result.device.startswith("cpu")
    assert calls == ["gpu", "cpu"]
    assert "processed on the CPU after the GPU failed (CUDARuntimeError: cudaErrorIllegal" in note
    assert note.endswith("the GPU is off until the node restarts")
    [event] = [e for e in logs if e["event"] == "gpu_job_rerun_on_cpu"]
    assert event["cuda_error"] is True
    assert event["gpu_still_usable"] is False
    usable, detail = gpu_status()
    assert not usable
    assert detail.startswith("GPU disabled after a job failed on it (CUDARuntimeError")
    # The next job goes straight to the CPU.
    second, second_note = process_on_device(exam, SETTINGS, "auto")
    assert calls == ["gpu", "cpu", "cpu"]
    assert second_note == ""
    assert second.stats == result.stats


def test_an_out_of_memory_error_reruns_on_the_cpu_and_keeps_the_gpu(
    monkeypatch: pytest.MonkeyPatch, exam: DwiExam
) -> None:
    gpu = install_fake_cupy(monkeypatch)
    calls: list[str] = []
    oom = _gpu_fails(gpu, lambda: OutOfMemoryError("Out of memory allocating 9 GB"), calls)
    monkeypatch.setattr(exam_run_module, "process_exam", oom)
    result, note = process_on_device(exam, SETTINGS, "auto")
    assert result.device.startswith("cpu")
    assert "OutOfMemoryError" in note
    assert "GPU is off" not in note
    assert gpu.calls["free_all_blocks"] == 2  # device and pinned pools freed before the re-probe
    assert gpu_status()[0]
    process_on_device(exam, SETTINGS, "auto")
    assert calls == ["gpu", "cpu", "gpu", "cpu"]


def test_a_cuda_error_with_device_gpu_fails_the_job_with_its_reason(
    monkeypatch: pytest.MonkeyPatch, exam: DwiExam
) -> None:
    gpu = install_fake_cupy(monkeypatch)
    calls: list[str] = []
    monkeypatch.setattr(exam_run_module, "process_exam", _gpu_fails(gpu, gpu.break_context, calls))
    with pytest.raises(BackendUnavailableError, match="the job failed on the GPU") as raised:
        process_on_device(exam, SETTINGS, "gpu")
    assert "cudaErrorIllegalAddress" in str(raised.value)
    assert calls == ["gpu"]
    with pytest.raises(BackendUnavailableError, match="GPU disabled after a job failed"):
        select_backend(Device.GPU)


def test_bad_input_is_not_rerun_on_the_cpu(monkeypatch: pytest.MonkeyPatch, exam: DwiExam) -> None:
    gpu = install_fake_cupy(monkeypatch)
    calls: list[str] = []
    monkeypatch.setattr(
        exam_run_module,
        "process_exam",
        _gpu_fails(gpu, lambda: InvalidExamError("all-zero signal"), calls),
    )
    with pytest.raises(InvalidExamError):
        process_on_device(exam, SETTINGS, "auto")
    assert calls == ["gpu"]
    assert gpu_status()[0]


def test_a_failed_warm_up_turns_the_gpu_off_under_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    gpu = install_fake_cupy(monkeypatch)
    calls: list[str] = []
    monkeypatch.setattr(worker_module, "process_exam", _gpu_fails(gpu, gpu.break_context, calls))
    with capture_logs() as logs:
        assert not warm_up_gpu("auto")
    assert [e["event"] for e in logs] == ["gpu_warmup_failed"]
    usable, detail = gpu_status()
    assert not usable
    assert detail.startswith("GPU warm-up on a synthetic exam failed (CUDARuntimeError")
    assert not select_backend(Device.AUTO).is_gpu


def test_the_node_counts_gpu_fallbacks(tmp_path: Path) -> None:
    settings = load_settings(env={}, overrides={"node": {"data_dir": tmp_path, "port": 11112}})
    node = Node(settings)
    spec = JobSpec(
        job_key="k", job_id=1, study_uid="1.2", version=1, input_paths=(), output_dir=str(tmp_path)
    )
    try:
        node._job_finished(spec, JobOutcome(result_files=(), device="cpu", gpu_fallback="x"), 1.0)
        node._job_finished(spec, JobOutcome(result_files=(), device="cpu"), 1.0)
        [metric] = [m for m in node.metrics() if m.name == "wbdwi_gpu_fallbacks_total"]
    finally:
        node.stop()
    assert metric.samples == (({}, 1),)
