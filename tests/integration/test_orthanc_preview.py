"""The result objects stored in a real Orthanc; derived MR and key images preview as PNG.

dcmtk ``storescu -R`` (presentation contexts proposed from the files) sends
a selection of the written files (every non-image object, the key images, and
the ADC and computed-b slices through the largest lesion) over C-STORE on
loopback; Orthanc must accept each, and its ``/instances/{id}/preview`` must
return a PNG that Pillow decodes into a picture with real content. Float
Parametric Maps are not previewed by Orthanc (integer pixels only), which is
why the ADC is also written as uint16 MR.
"""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from dicom_node.writers.write_results import write_results
from tests.helpers.orthanc import running_orthanc, storescu_binary
from tests.helpers.writer_fixtures import phantom_exam_and_result

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _slice_files(folder: Path, instance_numbers: set[int]) -> list[Path]:
    chosen = []
    for path in sorted(folder.glob("*.dcm")):
        if int(pydicom.dcmread(path, stop_before_pixels=True).InstanceNumber) in instance_numbers:
            chosen.append(path)
    return chosen


def test_derived_series_and_key_images_preview_in_orthanc(tmp_path: Path) -> None:
    storescu = storescu_binary()
    exam, result = phantom_exam_and_result(tmp_path / "scanner", "small")
    out = tmp_path / "results"
    paths = write_results(exam, result, out, version_label="1.0.0")
    largest = max(result.stats.lesions, key=lambda lesion: lesion.volume_ml)
    inside = np.argwhere(result.lesion_labels == largest.label)
    z = int(np.median(inside[:, 0]))
    lesion_slices = {z + 1, z + 2}  # InstanceNumber is slice index + 1
    to_send = [
        *_slice_files(out / "adc", lesion_slices),
        *_slice_files(out / "b1000", lesion_slices),
        *sorted((out / "key_images").glob("*.dcm")),
        *[p for p in paths if p.parent.name in {"adc_map", "seg", "sr"}],
    ]
    assert len(to_send) == 2 + 2 + 2 + 3

    with running_orthanc(tmp_path) as pacs:
        run = subprocess.run(
            [storescu, "-R", "-aet", "WBDWI", "-aec", pacs.aet, "127.0.0.1", str(pacs.dicom_port)]
            + [str(p) for p in to_send],
            check=False,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stderr + pacs.log()
        stored = {
            pacs.rest(f"/instances/{iid}/simplified-tags")["SOPInstanceUID"]: iid
            for iid in pacs.rest("/instances")
        }
        assert set(stored) == {path.stem for path in to_send}
        study = pacs.rest(f"/instances/{next(iter(stored.values()))}/study")
        assert study["MainDicomTags"]["StudyInstanceUID"] == exam.study_instance_uid

        previewable = [p for p in to_send if p.parent.name in {"adc", "b1000", "key_images"}]
        for path in previewable:
            png = pacs.rest_bytes(f"/instances/{stored[path.stem]}/preview")
            picture = Image.open(io.BytesIO(png))
            assert picture.format == "PNG"
            pixels = np.asarray(picture.convert("RGB"), dtype=np.float64)
            header = pydicom.dcmread(path, stop_before_pixels=True)
            assert pixels.shape[:2] == (header.Rows, header.Columns)
            assert pixels.std() > 5.0, f"{path.parent.name} preview is flat"
            assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 3
