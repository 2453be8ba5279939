"""The GPU backend gives the CPU backend's results (run on a machine with CuPy and a GPU).

Every field the writers use is compared by :func:`tests.helpers.backend_comparison.compare_results`
(masks within 0.1 % of their own voxels, identical on quantised input; maps
within float32 tolerance; tDV, class volumes, histogram counts, every ADC
statistic, every lesion row and the reliability signals within what the
differing voxels explain). ``tests/unit/test_backend_comparison.py`` proves on
the CPU that this comparison flags the GPU-only faults of issue 13. Inputs:
small, reference (noise-free and SNR 40), large, quantised, and the setting
variants (head excluded, cranio-caudal limit, three computed b-values,
nothing segmented). Skipped without a usable GPU, failed under
``WBDWI_REQUIRE_GPU=1`` (``tests/gpu/conftest.py``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pytest

from processing.backend import Device, select_backend
from processing.exam import DwiExam
from processing.phantom import make_phantom
from processing.pipeline import process_exam
from processing.results import ProcessingResult
from processing.segmentation import label_components
from processing.settings import ProcessingSettings
from tests.helpers.backend_comparison import QUANTISED, Tolerance, compare_results

pytestmark = pytest.mark.gpu

BASE = ProcessingSettings()


def _phantom(preset: str, snr: float) -> Callable[[], DwiExam]:
    return lambda: make_phantom(preset, snr=snr, seed=0).to_exam()


def _quantised() -> DwiExam:
    # As stored in DICOM: integer signal values.
    exam = make_phantom("reference", snr=40.0, seed=0).to_exam()
    return dataclasses.replace(exam, signal=np.round(exam.signal).astype(np.float32))


# name: (exam, settings, tolerance)
CASES: dict[str, tuple[Callable[[], DwiExam], ProcessingSettings, Tolerance]] = {
    "small-snr40": (_phantom("small", 40.0), BASE, Tolerance()),
    "reference-noise-free": (_phantom("reference", 0.0), BASE, Tolerance()),
    "reference-snr40": (_phantom("reference", 40.0), BASE, Tolerance()),
    "large-snr40": (_phantom("large", 40.0), BASE, Tolerance()),
    "reference-quantised": (_quantised, BASE, QUANTISED),
    "head-excluded": (
        _phantom("reference", 40.0),
        dataclasses.replace(BASE, exclude_head=True),
        Tolerance(),
    ),
    "cranio-caudal-limit": (
        _phantom("reference", 40.0),
        dataclasses.replace(BASE, cranio_caudal_limit_z_mm=250.0),
        Tolerance(),
    ),
    "three-computed-b": (
        _phantom("reference", 40.0),
        dataclasses.replace(BASE, computed_b_values=(800.0, 1000.0, 1500.0)),
        Tolerance(),
    ),
    "nothing-segmented": (
        _phantom("reference", 40.0),
        dataclasses.replace(BASE, threshold_ratio=1e6),
        Tolerance(),
    ),
}


@pytest.fixture(scope="module", params=list(CASES))
def case(request: pytest.FixtureRequest) -> tuple[ProcessingResult, ProcessingResult, Tolerance]:
    make_exam, settings, tolerance = CASES[request.param]
    exam = make_exam()
    cpu = process_exam(exam, settings, device=Device.CPU)
    gpu = process_exam(exam, settings, device=Device.GPU)
    return cpu, gpu, tolerance


def test_gpu_matches_cpu(case: tuple[ProcessingResult, ProcessingResult, Tolerance]) -> None:
    cpu, gpu, tolerance = case
    assert cpu.device.startswith("cpu")
    assert gpu.device.startswith("gpu")
    problems = compare_results(cpu, gpu, tolerance)
    assert not problems, "GPU differs from CPU:\n" + "\n".join(problems)


def test_repeated_gpu_runs_are_identical() -> None:
    exam = make_phantom("reference", snr=40.0, seed=0).to_exam()
    first = process_exam(exam, device=Device.GPU)
    second = process_exam(exam, device=Device.GPU)
    for name in ("adc", "adc_valid", "body_mask", "tumour_mask", "class_labels", "lesion_labels"):
        assert np.array_equal(getattr(first, name), getattr(second, name)), name
    for one, two in zip(first.computed, second.computed, strict=True):
        assert np.array_equal(one.image, two.image)
    assert first.stats == second.stats  # exact: lesion sums no longer use atomic adds
    assert first.quality == second.quality


def test_component_labels_are_identical_across_backends() -> None:
    rng = np.random.default_rng(5)
    mask = rng.random((40, 64, 64)) > 0.7
    cpu = label_components(mask, select_backend(Device.CPU))
    gpu_backend = select_backend(Device.GPU)
    gpu = label_components(gpu_backend.asarray(mask), gpu_backend)
    assert gpu.count == cpu.count
    np.testing.assert_array_equal(gpu_backend.to_host(gpu.labels), cpu.labels)
    np.testing.assert_array_equal(gpu_backend.to_host(gpu.sizes), cpu.sizes)
