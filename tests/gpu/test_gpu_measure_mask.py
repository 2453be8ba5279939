"""A reader's mask measured on the GPU gives the CPU's numbers (issue 11, on a GPU machine).

The mask is given, so both backends measure the same voxels: tDV, lesion
table, class volumes and histogram must agree within the comparison's
tolerances (:func:`tests.helpers.backend_comparison.compare_results`).
"""

from __future__ import annotations

import pytest

from processing.backend import Device
from processing.phantom import make_phantom
from processing.pipeline import measure_tumour_mask, process_exam
from tests.helpers.backend_comparison import Tolerance, compare_results

pytestmark = pytest.mark.gpu


def test_measuring_a_given_mask_on_the_gpu_matches_the_cpu() -> None:
    exam = make_phantom("reference", snr=40.0, seed=0).to_exam()
    automatic = process_exam(exam, device=Device.CPU)
    mask = automatic.tumour_mask & (automatic.lesion_labels != 1)  # a reader removed lesion 1
    cpu = measure_tumour_mask(exam, mask, device=Device.CPU)
    gpu = measure_tumour_mask(exam, mask, device=Device.GPU)
    assert gpu.device.startswith("gpu")
    assert (gpu.tumour_mask == mask).all()
    assert gpu.stats.tdv_ml == cpu.stats.tdv_ml  # same voxels: exactly
    problems = compare_results(cpu, gpu, Tolerance())
    assert not problems, "GPU differs from CPU:\n" + "\n".join(problems)
