"""The GPU backend gives the CPU backend's results (run on a machine with CuPy and a GPU).

Maps agree within float32 tolerance; masks are identical or differ in well under
0.1 % of the voxels (see ``docs/algorithm.md``, "GPU and CPU": reductions run
in a different order, so a voxel exactly at a threshold can fall either way).
"""

from __future__ import annotations

import numpy as np
import pytest

from processing.backend import Device, gpu_status, select_backend
from processing.phantom import make_phantom
from processing.pipeline import process_exam
from processing.results import ProcessingResult
from processing.segmentation import label_components

_USABLE, _DETAIL = gpu_status()

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not _USABLE, reason=f"GPU backend unavailable: {_DETAIL}"),
]

MAX_MASK_DIFFERENCE = 1e-3  # fraction of voxels


def _mask_difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.count_nonzero(a != b)) / a.size


@pytest.fixture(scope="module", params=[0.0, 40.0], ids=["noise-free", "snr40"])
def both(request: pytest.FixtureRequest) -> tuple[ProcessingResult, ProcessingResult]:
    exam = make_phantom("reference", snr=request.param, seed=0).to_exam()
    return process_exam(exam, device="cpu"), process_exam(exam, device="gpu")


def test_devices_are_reported(both: tuple[ProcessingResult, ProcessingResult]) -> None:
    cpu, gpu = both
    assert cpu.device.startswith("cpu")
    assert gpu.device.startswith("gpu")


def test_adc_and_computed_b_match(both: tuple[ProcessingResult, ProcessingResult]) -> None:
    cpu, gpu = both
    assert _mask_difference(cpu.adc_valid, gpu.adc_valid) < MAX_MASK_DIFFERENCE
    common = cpu.adc_valid & gpu.adc_valid
    np.testing.assert_allclose(gpu.adc[common], cpu.adc[common], rtol=1e-4, atol=0.05)
    for image_cpu, image_gpu in zip(cpu.computed, gpu.computed, strict=True):
        assert image_cpu.b_value == image_gpu.b_value
        np.testing.assert_allclose(
            image_gpu.image[common], image_cpu.image[common], rtol=2e-4, atol=1e-3
        )


def test_masks_match(both: tuple[ProcessingResult, ProcessingResult]) -> None:
    cpu, gpu = both
    assert _mask_difference(cpu.body_mask, gpu.body_mask) < MAX_MASK_DIFFERENCE
    assert _mask_difference(cpu.tumour_mask, gpu.tumour_mask) < MAX_MASK_DIFFERENCE
    assert _mask_difference(cpu.class_labels, gpu.class_labels) < MAX_MASK_DIFFERENCE


def test_statistics_and_lesion_table_match(both: tuple[ProcessingResult, ProcessingResult]) -> None:
    cpu, gpu = both
    assert gpu.stats.tdv_ml == pytest.approx(cpu.stats.tdv_ml, rel=1e-3)
    assert cpu.stats.adc is not None
    assert gpu.stats.adc is not None
    assert gpu.stats.adc.median == pytest.approx(cpu.stats.adc.median, rel=1e-3)
    assert len(gpu.stats.lesions) == len(cpu.stats.lesions)
    for lesion_cpu, lesion_gpu in zip(cpu.stats.lesions, gpu.stats.lesions, strict=True):
        assert lesion_gpu.label == lesion_cpu.label
        assert lesion_gpu.region == lesion_cpu.region
        assert lesion_gpu.volume_ml == pytest.approx(lesion_cpu.volume_ml, rel=1e-2)
        np.testing.assert_allclose(lesion_gpu.centroid_mm, lesion_cpu.centroid_mm, atol=0.5)


def test_component_labels_are_identical_across_backends() -> None:
    rng = np.random.default_rng(5)
    mask = rng.random((40, 64, 64)) > 0.7
    cpu = label_components(mask, select_backend(Device.CPU))
    gpu_backend = select_backend(Device.GPU)
    gpu = label_components(gpu_backend.asarray(mask), gpu_backend)
    assert gpu.count == cpu.count
    np.testing.assert_array_equal(gpu_backend.to_host(gpu.labels), cpu.labels)
    np.testing.assert_array_equal(gpu_backend.to_host(gpu.sizes), cpu.sizes)
