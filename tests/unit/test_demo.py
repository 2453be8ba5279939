"""The demo's report (:mod:`service.demo`): truth beside the numbers, verdict, key images, waiting.

The whole demo runs with ``make demo``; these tests pin the parts a reader
relies on without starting a node.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from service.demo import Hold, hold_policy, save_key_images, truth_lines, verdict_lines

TRUTH = {
    "total_lesion_volume_ml": 80.0,
    "median_adc_um2s": 650.0,
    "lesions": [{"volume_ml": v} for v in (0.3, 0.6, 2.0, 40.0)],
}


def test_the_numbers_stand_beside_the_truth_with_their_difference() -> None:
    measurements = {"tdv_ml": 88.0, "adc": {"median": 715.0}, "lesions": [{}, {}]}
    header, tdv, lesions, median = truth_lines(measurements, TRUTH, min_lesion_ml=0.5)
    assert header.split() == ["node", "phantom", "truth", "diff."]
    assert tdv.split() == ["tDV", "88.0", "ml", "80.0", "ml", "+10%"]
    # 4 truth lesions, 3 of them large enough to be reported; the node found 2.
    assert "2" in lesions.split() and "4, 3 of >= 0.5 ml" in lesions
    assert lesions.endswith("-1 (against the 3 the node can report)")
    assert median.split() == ["median", "ADC", "715", "10^-6", "mm2/s", "650", "10^-6", "mm2/s",
                              "+10%"]  # fmt: skip


def test_without_disease_the_median_adc_is_not_measured() -> None:
    lines = truth_lines({"tdv_ml": 0.0, "adc": None, "lesions": []}, TRUTH, min_lesion_ml=0.5)
    assert lines[1].split()[-1] == "-100%"
    assert lines[3].split()[2] == "-" and lines[3].endswith("not measured")


def test_the_verdict_is_printed_with_its_reasons() -> None:
    quality = {
        "verdict": "review",
        "meaning": "check before use",
        "reasons": [{"code": "low_snr", "severity": "review", "message": "SNR 4 under 6"}],
    }
    assert verdict_lines(quality) == [
        "reliability verdict: review (check before use)",
        "  - low_snr (review): SNR 4 under 6",
    ]
    assert verdict_lines({"verdict": "ok", "meaning": "fine", "reasons": []}) == [
        "reliability verdict: ok (fine)"
    ]


def _key_image(folder: Path, number: int, comments: str) -> Path:
    dataset = Dataset()
    dataset.SOPClassUID = SecondaryCaptureImageStorage
    dataset.SOPInstanceUID = generate_uid()
    dataset.InstanceNumber = number
    dataset.ImageComments = comments
    dataset.Rows, dataset.Columns = 2, 3
    dataset.SamplesPerPixel = 3
    dataset.PlanarConfiguration = 0
    dataset.PhotometricInterpretation = "RGB"
    dataset.BitsAllocated = dataset.BitsStored = 8
    dataset.HighBit = 7
    dataset.PixelRepresentation = 0
    dataset.PixelData = (np.arange(18, dtype=np.uint8) * (10 * number)).tobytes()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path = folder / f"{dataset.SOPInstanceUID}.dcm"
    dataset.save_as(path, enforce_file_format=True)
    return path


def test_key_images_get_readable_names_as_dicom_and_png(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    paths = [
        _key_image(results, 2, "ADC histogram of the tumour load, class bands. REVIEW: low SNR"),
        _key_image(results, 1, "Inverted coronal MIP of computed b1000 with ADC classes"),
    ]
    out = tmp_path / "key-images"
    out.mkdir()
    (out / "stale.png").write_bytes(b"last run")
    pngs = save_key_images(paths, out)
    assert [png.name for png in pngs] == [
        "key-image-1-inverted-coronal-mip-of-computed-b1000-with-adc-classes.png",
        "key-image-2-adc-histogram-of-the-tumour-load.png",
    ]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [png.name for png in pngs] + [png.with_suffix(".dcm").name for png in pngs]
    )
    for png, source in zip(pngs, reversed(paths), strict=True):
        original = dcmread(source)
        assert dcmread(png.with_suffix(".dcm")).SOPInstanceUID == original.SOPInstanceUID
        np.testing.assert_array_equal(np.asarray(Image.open(png)), original.pixel_array)


@pytest.mark.parametrize(
    ("keep", "interactive", "has_links", "expected"),
    [
        (False, True, True, Hold.ENTER),  # Orthanc, a person at the terminal
        (False, False, True, Hold.NONE),  # make demo in CI: ends by itself
        (False, True, False, Hold.NONE),  # stand-in PACS: nothing to open
        (True, True, False, Hold.ENTER),
        (True, False, True, Hold.SIGNAL),  # --keep without a terminal
        (True, False, False, Hold.SIGNAL),
    ],
)
def test_the_demo_waits_only_for_someone_who_can_answer(
    keep: bool, interactive: bool, has_links: bool, expected: Hold
) -> None:
    assert hold_policy(keep=keep, interactive=interactive, has_links=has_links) is expected
