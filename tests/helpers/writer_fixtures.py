"""A small synthetic WB-DWI exam on disk and a matching ProcessingResult, for writer tests.

:func:`phantom_exam_and_result` runs the real path instead (phantom, simulated
scanner, assembly, processing engine) for the tests that need realistic data.

Written with pydicom as a scanner would: classic MR images, two stations (one
series each, all b-values), a realistic header. The result is built from known
arrays (no processing engine needed): an ADC map with three lesions of known
ADC, the tumour mask, ADC classes, lesion labels and statistics computed with
NumPy here. Non-square matrix (rows != columns) so that a row/column swap
anywhere fails the geometry checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from numpy.typing import NDArray
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid
from scipy import ndimage

from processing.exam import DwiExam, SourceRef
from processing.results import (
    AdcClass,
    AdcStats,
    BodyRegion,
    ClassVolumes,
    ComputedImage,
    ExamStats,
    Histogram,
    LesionStats,
    ProcessingResult,
)

__all__ = [
    "SyntheticExam",
    "make_result",
    "phantom_exam_and_result",
    "result_from_truth",
    "write_synthetic_exam",
]

B_VALUES = (50.0, 600.0, 900.0)
ROWS, COLUMNS = 40, 48
SLICES_PER_STATION = 8
SPACING = (5.0, 4.0, 4.0)  # slice, row, column (mm)
YELLOW_LOWER = 1000.0
GREEN_LOWER = 1500.0


@dataclass(frozen=True)
class SyntheticExam:
    exam: DwiExam
    s0: NDArray[np.float32]
    adc: NDArray[np.float32]
    lesions: NDArray[np.int32]
    body: NDArray[np.bool_]


def _truth(slices: int) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.int32]]:
    z, y, x = np.mgrid[0:slices, 0:ROWS, 0:COLUMNS].astype(np.float32)
    body = ((y - ROWS / 2) / (ROWS * 0.42)) ** 2 + ((x - COLUMNS / 2) / (COLUMNS * 0.42)) ** 2 < 1
    s0 = np.where(body, 800.0, 0.0).astype(np.float32)
    adc = np.where(body, 1200.0, 0.0).astype(np.float32)  # um2/s
    lesions = np.zeros((slices, ROWS, COLUMNS), dtype=np.int32)
    # (centre z, y, x, radius in voxels, ADC um2/s): red, yellow, green lesions
    for label, (cz, cy, cx, r, value) in enumerate(
        [(3, 15, 18, 2.5, 800.0), (9, 24, 30, 2.2, 1300.0), (13, 20, 14, 1.8, 1700.0)], start=1
    ):
        inside = (z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2 <= r**2
        lesions[inside] = label
        adc[inside] = value
        s0[inside] = 1500.0
    return s0, adc, lesions


# A declarative builder: the classic MR header, attribute by attribute, for each slice.
def write_synthetic_exam(  # noqa: PLR0915
    folder: Path, *, patient_name: str = "Doe^Jane"
) -> SyntheticExam:
    """Write two stations x 3 b-values of classic MR images into ``folder``; return the exam."""
    folder.mkdir(parents=True, exist_ok=True)
    slices = 2 * SLICES_PER_STATION
    s0, adc, lesions = _truth(slices)
    study_uid = generate_uid(entropy_srcs=["study", str(folder)])
    frame_uid = generate_uid(entropy_srcs=["frame", str(folder)])
    signal = np.stack([s0 * np.exp(-b * adc * 1e-6) for b in B_VALUES]).astype(np.float32)
    stored = np.rint(signal * 10).astype(np.uint16)  # rescale slope 0.1 in the header
    origin = np.array([-COLUMNS * SPACING[2] / 2, -ROWS * SPACING[1] / 2, 100.0])
    refs: list[SourceRef] = []
    series_uids = []
    for station in range(2):
        series_uid = generate_uid(entropy_srcs=["series", str(folder), str(station)])
        series_uids.append(series_uid)
        for b_index, b in enumerate(B_VALUES):
            for k in range(SLICES_PER_STATION):
                z = station * SLICES_PER_STATION + k
                sop_uid = generate_uid(entropy_srcs=["sop", str(folder), str(z), str(b)])
                ds = Dataset()
                ds.file_meta = FileMetaDataset()
                ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
                ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
                ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
                ds.SpecificCharacterSet = "ISO_IR 100"
                ds.SOPClassUID = MRImageStorage
                ds.SOPInstanceUID = sop_uid
                ds.PatientName = patient_name
                ds.PatientID = "WRITER-TEST-1"
                ds.IssuerOfPatientID = "TESTHOSP"
                ds.PatientBirthDate = "19600101"
                ds.PatientSex = "F"
                ds.StudyInstanceUID = study_uid
                ds.StudyDate = "20240102"
                ds.StudyTime = "101500"
                ds.StudyID = "1"
                ds.AccessionNumber = "ACC123"
                ds.ReferringPhysicianName = "Ref^Doctor"
                ds.StudyDescription = "WB-DWI"
                ds.Modality = "MR"
                ds.SeriesInstanceUID = series_uid
                ds.SeriesNumber = 3 + station
                ds.SeriesDescription = f"DWI station {station + 1}"
                ds.BodyPartExamined = "WHOLEBODY"
                ds.PatientPosition = "HFS"
                ds.FrameOfReferenceUID = frame_uid
                ds.PositionReferenceIndicator = ""
                ds.Manufacturer = "SIMULATED"
                ds.ManufacturerModelName = "Phantom Scanner"
                ds.DeviceSerialNumber = "SIM-001"
                ds.InstitutionName = "Test Hospital"
                ds.InstanceNumber = b_index * SLICES_PER_STATION + k + 1
                ds.ImageType = ["ORIGINAL", "PRIMARY", "DIFFUSION", "TRACEW"]
                ds.ScanningSequence = "EP"
                ds.SequenceVariant = ["SK", "SP"]
                ds.ScanOptions = "FS"
                ds.MRAcquisitionType = "2D"
                ds.RepetitionTime = "6000"
                ds.EchoTime = "70"
                ds.EchoTrainLength = "1"
                ds.MagneticFieldStrength = "1.5"
                ds.DiffusionBValue = b
                ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
                ds.ImagePositionPatient = [*origin[:2].tolist(), float(origin[2] - z * SPACING[0])]
                ds.PixelSpacing = [SPACING[1], SPACING[2]]
                ds.SliceThickness = SPACING[0]
                ds.SamplesPerPixel = 1
                ds.PhotometricInterpretation = "MONOCHROME2"
                ds.Rows, ds.Columns = ROWS, COLUMNS
                ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
                ds.PixelRepresentation = 0
                ds.RescaleSlope, ds.RescaleIntercept = "0.1", "0"
                ds.PixelData = stored[b_index, z].tobytes()
                path = folder / f"st{station}_b{int(b)}_{k:03d}.dcm"
                pydicom.dcmwrite(path, ds, enforce_file_format=True)
                refs.append(
                    SourceRef(
                        path=str(path),
                        sop_class_uid=MRImageStorage,
                        sop_instance_uid=sop_uid,
                        series_instance_uid=series_uid,
                        b_value=b,
                        slice_index=z,
                    )
                )
    affine = np.eye(4)
    affine[:3, 0] = [0.0, 0.0, -SPACING[0]]  # z index -> towards the feet
    affine[:3, 1] = [0.0, SPACING[1], 0.0]  # row index -> posterior
    affine[:3, 2] = [SPACING[2], 0.0, 0.0]  # column index -> patient left
    affine[:3, 3] = origin
    exam = DwiExam(
        signal=(stored.astype(np.float32) * np.float32(0.1)),
        b_values=B_VALUES,
        affine=affine,
        spacing_mm=SPACING,
        study_instance_uid=study_uid,
        frame_of_reference_uid=frame_uid,
        patient_id="WRITER-TEST-1",
        issuer_of_patient_id="TESTHOSP",
        stations=2,
        series_used=tuple(series_uids),
        sources=tuple(refs),
    )
    return SyntheticExam(exam=exam, s0=s0, adc=adc, lesions=lesions, body=s0 > 0)


def make_result(synthetic: SyntheticExam, *, empty: bool = False) -> ProcessingResult:
    """A ProcessingResult from the synthetic exam's truth arrays."""
    regions = {1: BodyRegion.DORSAL_SPINE, 2: BodyRegion.PELVIS, 3: BodyRegion.OTHER}
    return result_from_truth(
        synthetic.exam,
        adc=synthetic.adc,
        lesions=np.zeros_like(synthetic.lesions) if empty else synthetic.lesions,
        body=synthetic.body,
        s0=synthetic.s0,
        regions=regions,
    )


def result_from_truth(
    exam: DwiExam,
    *,
    adc: NDArray[np.floating],
    lesions: NDArray[np.integer],
    body: NDArray[np.bool_],
    s0: NDArray[np.floating],
    regions: dict[int, BodyRegion],
    yellow_lower: float = YELLOW_LOWER,
) -> ProcessingResult:
    """A ProcessingResult from known arrays; the statistics are computed here with NumPy.

    Stands in for the processing engine: the writers only need a consistent
    result on the exam grid, and these numbers are then checked in the SR.
    """
    adc = np.asarray(adc, dtype=np.float32)
    lesions = np.asarray(lesions, dtype=np.int32)
    mask = lesions > 0
    classes = np.zeros(mask.shape, dtype=np.uint8)
    classes[mask & (adc < yellow_lower)] = AdcClass.RED.value
    classes[mask & (adc >= yellow_lower) & (adc < GREEN_LOWER)] = AdcClass.YELLOW.value
    classes[mask & (adc >= GREEN_LOWER)] = AdcClass.GREEN.value
    voxel_ml = exam.voxel_volume_ml
    values = adc[mask].astype(np.float64)
    edges = tuple(float(e) for e in np.arange(0.0, 3000.0 + 25.0, 25.0))
    counts = tuple(int(c) for c in np.histogram(values, bins=np.asarray(edges))[0])
    stats_adc = None
    if values.size:
        pct = np.percentile(values, [5, 10, 25, 75, 90, 95])
        sd = float(values.std())
        centred = values - values.mean()
        stats_adc = AdcStats(
            mean=float(values.mean()),
            median=float(np.median(values)),
            sd=sd,
            p5=float(pct[0]),
            p10=float(pct[1]),
            p25=float(pct[2]),
            p75=float(pct[3]),
            p90=float(pct[4]),
            p95=float(pct[5]),
            skewness=float((centred**3).mean() / sd**3) if sd > 0 else 0.0,
            kurtosis=float((centred**4).mean() / sd**4 - 3.0) if sd > 0 else 0.0,
        )
    lesion_stats = []
    for label in (int(v) for v in np.unique(lesions[mask])):
        inside = lesions == label
        centroid = np.array(ndimage.center_of_mass(inside))
        mm = centroid @ exam.affine[:3, :3].T + exam.affine[:3, 3]
        lesion_stats.append(
            LesionStats(
                label=label,
                volume_ml=float(inside.sum() * voxel_ml),
                adc_mean=float(adc[inside].mean()),
                adc_median=float(np.median(adc[inside])),
                centroid_mm=(float(mm[0]), float(mm[1]), float(mm[2])),
                region=regions.get(label, BodyRegion.OTHER),
                mean_high_b=float(label * 10.0),
            )
        )
    computed = (np.asarray(s0) * np.exp(-1000.0 * adc * 1e-6)).astype(np.float32)
    stats = ExamStats(
        tdv_ml=float(mask.sum() * voxel_ml),
        adc=stats_adc,
        histogram=Histogram(bin_edges_um2s=edges, counts=counts, voxel_volume_ml=voxel_ml),
        classes=ClassVolumes(
            red_ml=float((classes == 1).sum() * voxel_ml),
            yellow_ml=float((classes == 2).sum() * voxel_ml),
            green_ml=float((classes == 3).sum() * voxel_ml),
            yellow_lower_um2s=yellow_lower,
            green_lower_um2s=GREEN_LOWER,
            yellow_lower_source="default",
        ),
        lesions=tuple(lesion_stats),
    )
    return ProcessingResult(
        adc=np.where(body, adc, 0.0).astype(np.float32),
        adc_valid=np.asarray(body, dtype=bool).copy(),
        computed=(ComputedImage(b_value=1000.0, image=computed),),
        body_mask=np.asarray(body, dtype=bool).copy(),
        tumour_mask=mask,
        class_labels=classes,
        lesion_labels=lesions,
        stats=stats,
        device="cpu",
        timings_s={"total": 0.1},
        settings_digest="test-settings-1",
    )


def phantom_exam_and_result(
    folder: Path, preset: str = "small", *, seed: int = 1
) -> tuple[DwiExam, ProcessingResult]:
    """Phantom -> simulated scanner -> assembly -> processing engine (CPU)."""
    from dicom_node.assembly.assemble import assemble_exam
    from dicom_node.simulator.scanner import write_exam
    from processing.phantom import make_phantom
    from processing.pipeline import process_exam

    phantom = make_phantom(preset, seed=seed)
    exam = assemble_exam(write_exam(phantom, folder)).exam
    return exam, process_exam(exam, device="cpu")


def report_notes(report: Dataset) -> list[str]:
    """The "Comment" texts of the SR's "Notes on this report" group, in order (none: [])."""
    from dicom_node.writers.sr import COMMENT, NOTES_GROUP

    def concept(item: Dataset) -> tuple[str, str]:
        name = item.ConceptNameCodeSequence[0]
        return str(name.CodeValue), str(name.CodingSchemeDesignator)

    notes: list[str] = []
    stack = list(report.ContentSequence)
    while stack:
        item = stack.pop(0)
        children = list(item.get("ContentSequence", []))
        stack += children
        texts = [child for child in children if child.ValueType == "TEXT"]
        tracking = [child.TextValue for child in texts if concept(child) == ("112039", "DCM")]
        if tracking == [NOTES_GROUP]:
            comment = (COMMENT.value, COMMENT.scheme_designator)
            notes += [child.TextValue for child in texts if concept(child) == comment]
    return notes
