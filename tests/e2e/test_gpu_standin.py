"""The GPU path runs on every CPU machine: CuPy replaced by a NumPy stand-in with CuPy's rules.

The stand-in (:mod:`tests.helpers.cupy_standin`) refuses what CuPy refuses (a device
array given to NumPy or SciPy, host and device arrays mixed, a device scalar
used as an index), so a NumPy-only call in the GPU path fails here. Its
arithmetic is NumPy's, so the GPU path must give the CPU's result exactly: the
cases of ``tests/gpu`` are compared with :func:`compare_results` at zero mask
tolerance and bit for bit.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.ndimage
from structlog.testing import capture_logs

import processing.pipeline as pipeline_module
from processing import fused
from processing.backend import Backend, gpu_status
from processing.phantom import make_phantom
from processing.pipeline import process_exam
from processing.settings import ProcessingSettings
from processing.statistics import adc_histogram
from service.exam_run import process_on_device
from service.node import Node
from service.settings import load_settings
from tests.gpu.test_gpu_matches_cpu import CASES
from tests.helpers.backend_comparison import QUANTISED, compare_results
from tests.helpers.cupy_standin import DeviceArray, install_cupy_standin
from tests.unit.test_backend_comparison import FAULTS

ARRAYS = ("adc", "adc_valid", "body_mask", "tumour_mask", "class_labels", "lesion_labels")


@pytest.fixture
def standin(monkeypatch: pytest.MonkeyPatch) -> Any:
    install_cupy_standin(monkeypatch)
    import cupy

    return cupy


@pytest.mark.parametrize(
    ("name", "misuse"),
    [
        ("np.asarray", lambda cp, x: np.asarray(x)),
        ("scipy", lambda cp, x: scipy.ndimage.label(x > 2)),
        ("host + device", lambda cp, x: x + np.ones(6)),
        ("cupy function on host data", lambda cp, x: cp.sum(np.ones(3))),
        ("device scalar as index", lambda cp, x: range(x.sum().astype(int))),
    ],
)
def test_the_standin_refuses_what_cupy_refuses(standin: Any, name: str, misuse: Any) -> None:
    device = standin.asarray(np.arange(6.0))
    with pytest.raises(TypeError):
        misuse(standin, device)


def test_the_standin_passes_the_device_probe(standin: Any) -> None:
    usable, detail = gpu_status()
    assert usable, detail
    assert detail.startswith("gpu (NumPy stand-in")


@pytest.mark.parametrize(
    "case", ["small-snr40", "reference-quantised", "head-excluded", "nothing-segmented"]
)
def test_the_gpu_path_gives_the_cpu_result_exactly(standin: Any, case: str) -> None:
    make_exam, settings, _ = CASES[case]
    exam = make_exam()
    cpu = process_exam(exam, settings, device="cpu")
    gpu = process_exam(exam, settings, device="gpu")
    assert gpu.device.startswith("gpu (NumPy stand-in")
    assert compare_results(cpu, gpu, QUANTISED) == []
    for name in ARRAYS:
        assert np.array_equal(getattr(gpu, name), getattr(cpu, name)), name
    for mine, theirs in zip(cpu.computed, gpu.computed, strict=True):
        assert np.array_equal(theirs.image, mine.image)
    assert gpu.stats == cpu.stats
    assert gpu.quality == cpu.quality


def _numpy_only_histogram(values: Any, **kwargs: Any) -> Any:
    # A host-only call on device data (a NumPy array wanted): fails on a GPU.
    np.asarray(values)
    return adc_histogram(values, **kwargs)


def test_a_numpy_only_call_in_the_gpu_path_fails(
    standin: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("processing.pipeline.adc_histogram", _numpy_only_histogram)
    exam = make_phantom("small", snr=40.0, seed=0).to_exam()
    process_exam(exam, device="cpu")  # fine on the CPU
    with pytest.raises(TypeError, match="Implicit conversion to a NumPy array"):
        process_exam(exam, device="gpu")


def test_auto_reruns_a_gpu_only_bug_on_the_cpu_and_keeps_the_gpu(
    standin: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("processing.pipeline.adc_histogram", _numpy_only_histogram)
    exam = make_phantom("small", snr=40.0, seed=0).to_exam()
    result, note = process_on_device(exam, ProcessingSettings(), "auto")
    assert result.device.startswith("cpu")
    assert "processed on the CPU after the GPU failed (TypeError: Implicit conversion" in note
    assert gpu_status()[0]  # not a CUDA error: the GPU stays in use


def test_device_arrays_are_not_numpy_arrays(standin: Any) -> None:
    device = standin.zeros((2, 3), dtype=standin.float32)
    assert isinstance(device, DeviceArray)
    assert not isinstance(device, np.ndarray)
    assert isinstance(device.sum(), DeviceArray)  # reductions stay on the device
    assert device.get().shape == (2, 3)


def test_the_node_warms_the_gpu_up_at_start_off_the_receive_path(
    standin: Any, tmp_path: Path
) -> None:
    settings = load_settings(env={}, overrides={"node": {"data_dir": tmp_path, "port": 11112}})
    node = Node(settings)
    try:
        with capture_logs() as logs:
            backend = node.select_device()
            [warm_up] = [t for t in threading.enumerate() if t.name == "gpu-warmup"]
            warm_up.join(timeout=120)
    finally:
        node.stop()
    assert backend.is_gpu
    assert not warm_up.is_alive()
    assert "gpu-warmup" not in node._threads  # it ends: not a thread readiness waits for
    assert [e["event"] for e in logs if e["event"].startswith("gpu_")] == ["gpu_warmed_up"]


def _on_the_gpu_only(stage: Any, fault: Any) -> Any:
    def faulty(*args: Any, **kwargs: Any) -> Any:
        output = stage(*args, **kwargs)
        backends = [a for a in (*args, *kwargs.values()) if isinstance(a, Backend)]
        return fault(output) if backends and backends[0].is_gpu else output

    return faulty


@pytest.mark.parametrize("name", list(FAULTS))
def test_each_fault_injected_on_the_gpu_side_fails_the_gpu_comparison(
    standin: Any, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    # The mutation check of issue 13: the GPU path (here the stand-in) gets the fault,
    # the CPU path does not, and the comparison of tests/gpu must fail.
    stage, fault = FAULTS[name]
    monkeypatch.setattr(
        f"processing.pipeline.{stage}",
        _on_the_gpu_only(getattr(pipeline_module, stage), fault),
    )
    exam = make_phantom("small", snr=40.0, seed=0).to_exam()
    cpu = process_exam(exam, device="cpu")
    gpu = process_exam(exam, device="gpu")
    assert gpu.device.startswith("gpu (NumPy stand-in")
    assert compare_results(cpu, gpu), f"'{name}' on the GPU side passed the comparison"


def test_the_gpu_path_runs_the_fused_kernels(standin: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # The ADC fit and the computed-b images go through processing.fused's kernels on the
    # GPU; the stand-in runs each kernel's registered NumPy program, and the result is the
    # CPU reference's exactly (test above). Here: they do run, once per fit / image.
    calls: dict[str, int] = {}

    def counted(name: str, program: Any) -> Any:
        def run(*arguments: Any) -> Any:
            calls[name] = calls.get(name, 0) + 1
            return program(*arguments)

        return run

    for name, program in list(fused.NUMPY_EQUIVALENTS.items()):
        monkeypatch.setitem(fused.NUMPY_EQUIVALENTS, name, counted(name, program))
    fused.adc_fit_kernel.cache_clear()
    fused.computed_b_kernel.cache_clear()
    settings = ProcessingSettings()
    exam = make_phantom("small", snr=40.0, seed=0).to_exam()
    process_exam(exam, settings, device="gpu")
    used = len([b for b in exam.b_values if b >= settings.adc_min_b])
    wanted = {*settings.computed_b_values, settings.segmentation_b_value}
    assert calls == {fused.adc_fit_name(used): 1, "wbdwi_computed_b": len(wanted)}


def test_a_wrong_fused_kernel_fails_the_gpu_comparison(
    standin: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A kernel that forgets the body mask in its validity rule (a plausible CUDA slip):
    # the GPU result must differ from the CPU reference.
    exam = make_phantom("small", snr=40.0, seed=0).to_exam()
    used = len([b for b in exam.b_values if b >= ProcessingSettings().adc_min_b])
    name = fused.adc_fit_name(used)
    program = fused.NUMPY_EQUIVALENTS[name]

    def without_body(*arguments: Any) -> Any:
        everywhere = list(arguments)
        everywhere[used + 1] = np.ones_like(arguments[used + 1])
        return program(*everywhere)

    monkeypatch.setitem(fused.NUMPY_EQUIVALENTS, name, without_body)
    fused.adc_fit_kernel.cache_clear()
    cpu = process_exam(exam, device="cpu")
    gpu = process_exam(exam, device="gpu")
    assert compare_results(cpu, gpu)
