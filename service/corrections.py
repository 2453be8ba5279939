"""A reader's corrected SEG comes back: recognised, queued, applied (issue 11).

The radiologist edits the node's tumour-load SEG in a viewer and stores it to
PACS, which forwards it to the node. The SCP keeps it in the spool like an MR
image, but it opens no exam job (:meth:`service.jobstore.IntakeRecords.record_instance`).
:func:`submit_corrections` (called by the completion detector) turns every
stored SEG that has no job yet into a *correction job*, keyed
``correction:<SEG SOP Instance UID>`` (the same SEG twice is one job):

- its inputs are those of the latest exam job of the SEG's study that
  finished processing, and ``correction.corrected_output_dir`` that job's
  results folder (its automatic SR becomes the new report's predecessor);
- with no processed exam of that study, the job is queued all the same and
  ends ``done`` with the reason (:class:`NothingToCorrectError`), so the SEG
  is stored, shown by ``wbdwi status`` and logged, and changes nothing.

:func:`prepare_correction` (called by :func:`service.worker.run_job`) reads the
SEG onto the exam's grid (:func:`dicom_node.readers.seg_reader.read_corrected_mask`):
a SEG the node wrote itself, or one drawn on another study or frame of
reference, is :class:`NothingToCorrectError` too. The job then measures the
reader's mask (:func:`processing.pipeline.measure_tumour_mask`), writes a new
SEG, SR and key images (:class:`dicom_node.writers.write_results.ReaderCorrection`),
and records the corrected numbers in the exam history, which comparisons and
the baseline's 95th centile read from then on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pydicom
import structlog
from pydicom.dataset import Dataset

from dicom_node.errors import SegmentationReferenceError
from dicom_node.readers.seg_reader import (
    CorrectedMask,
    frames_without_position,
    read_corrected_mask,
    read_segmentation,
)
from dicom_node.writers.write_results import ReaderCorrection, earlier_version_reports
from processing.exam import DwiExam
from service.errors import NothingToCorrectError
from service.jobs import CorrectionSpec, JobSpec, results_folder

__all__ = [
    "CORRECTION_JOB_PREFIX",
    "PreparedCorrection",
    "check_correction_target",
    "correction_job_key",
    "prepare_correction",
    "read_correction",
    "result_image_positions",
    "result_series_uids",
]

LOGGER = structlog.get_logger(__name__)

CORRECTION_JOB_PREFIX = "correction:"


@dataclass(frozen=True, slots=True)
class PreparedCorrection:
    """The reader's mask on the exam grid and what the corrected objects name."""

    mask: CorrectedMask
    writer: ReaderCorrection

    def describe(self) -> dict[str, object]:
        """JSON block for ``job.json`` and ``measurements.json``."""
        return {
            "seg_sop_instance_uid": self.mask.sop_instance_uid,
            "reader": self.mask.content_creator,
            "segmentation_type": self.mask.segmentation_type,
            "segments": list(self.mask.segment_labels),
            "replaces": [str(ds.SOPInstanceUID) for ds in self.writer.predecessors],
        }


def correction_job_key(seg_sop_instance_uid: str) -> str:
    """The job key of the correction by one SEG."""
    return f"{CORRECTION_JOB_PREFIX}{seg_sop_instance_uid}"


def check_correction_target(correction: CorrectionSpec) -> None:
    """Raise :class:`NothingToCorrectError` when the SEG's study has no processed exam."""
    if not correction.corrected_output_dir:
        raise NothingToCorrectError(
            f"SEG {correction.seg_sop_instance_uid} refers to no exam processed by this node "
            "(no processed job of its study); stored, nothing changed"
        )


def result_series_uids(output_dir: Path) -> frozenset[str]:
    """Series Instance UIDs of the result files of one job (one header read per folder)."""
    series: set[str] = set()
    folders = sorted(p for p in output_dir.iterdir() if p.is_dir()) if output_dir.is_dir() else []
    for folder in folders:
        first = next(iter(sorted(folder.glob("*.dcm"))), None)
        if first is not None:
            header = pydicom.dcmread(
                first, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"]
            )
            series.add(str(header.SeriesInstanceUID))
    return frozenset(series)


def result_image_positions(output_dir: Path) -> dict[str, tuple[float, float, float]]:
    """Image Position (Patient) of every single-frame result image of one job, by SOP Instance UID.

    Places the frames of a reader's SEG that name the node's image they were
    drawn on (Derivation Image Sequence) but not their position.
    """
    positions: dict[str, tuple[float, float, float]] = {}
    folders = sorted(p for p in output_dir.iterdir() if p.is_dir()) if output_dir.is_dir() else []
    for path in (path for folder in folders for path in sorted(folder.glob("*.dcm"))):
        header = pydicom.dcmread(
            path, stop_before_pixels=True, specific_tags=["SOPInstanceUID", "ImagePositionPatient"]
        )
        position = header.get("ImagePositionPatient")
        if position is not None and len(position) == 3:
            x, y, z = (float(v) for v in position)
            positions[str(header.SOPInstanceUID)] = (x, y, z)
    return positions


def prepare_correction(spec: JobSpec, exam: DwiExam) -> PreparedCorrection:
    """Read the job's SEG onto ``exam``'s grid and find the report it replaces.

    Raises
    ------
    NothingToCorrectError
        The SEG is one of the node's own results, or was drawn on another
        study or frame of reference than the exam.
    dicom_node.errors.SegmentationReadError
        The SEG cannot be read or placed on the grid (the job fails with it).
    """
    correction = spec.correction
    if correction is None:
        raise ValueError("the job is not a correction")
    check_correction_target(correction)
    corrected = Path(correction.corrected_output_dir)
    seg = read_segmentation(correction.seg_path)
    own = _own_result_uids(Path(spec.output_dir).parent)
    if correction.seg_sop_instance_uid in own:
        raise NothingToCorrectError(
            f"SEG {correction.seg_sop_instance_uid} is one of this node's own results; "
            "nothing changed"
        )

    earlier = [
        results_folder(Path(spec.output_dir).parent.parent, spec.study_uid, number)
        for number in range(1, spec.version)
    ]
    try:
        return read_correction(seg, exam, corrected, replaced_folders=earlier)
    except SegmentationReferenceError as error:
        raise NothingToCorrectError(f"{error}; stored, nothing changed") from error


def read_correction(
    seg: Path | Dataset,
    exam: DwiExam,
    corrected_output_dir: Path | None,
    *,
    replaced_folders: Sequence[Path] | None = None,
) -> PreparedCorrection:
    """The SEG's mask on ``exam``'s grid, and the reports it replaces.

    ``corrected_output_dir`` is the results folder of the automatic run (its
    result series count as the exam's series, and a SEG frame without a
    position that derives from one of its images lies where that image lies);
    ``None``: only the exam's own series, source images and frame of
    reference. The reports replaced (Predecessor
    Documents) are the SRs in ``replaced_folders`` (the node: every earlier
    version of the study, earlier corrections included), by default the one
    in ``corrected_output_dir``.

    Raises
    ------
    dicom_node.errors.SegmentationReadError
        And its subclasses: unreadable, drawn on another exam, off the grid.
    """
    dataset = read_segmentation(seg) if isinstance(seg, Path) else seg
    series: frozenset[str] = frozenset()
    positions: Mapping[str, Sequence[float]] = {}
    if corrected_output_dir is not None:
        series = result_series_uids(corrected_output_dir)
        if frames_without_position(dataset):
            positions = result_image_positions(corrected_output_dir)
    mask = read_corrected_mask(dataset, exam, known_series_uids=series, image_positions=positions)
    if replaced_folders is None:
        replaced_folders = [] if corrected_output_dir is None else [corrected_output_dir]
    return PreparedCorrection(
        mask=mask,
        writer=ReaderCorrection(
            seg_sop_instance_uid=mask.sop_instance_uid,
            reader=mask.content_creator,
            predecessors=tuple(earlier_version_reports(replaced_folders)),
        ),
    )


def _own_result_uids(study_results: Path) -> frozenset[str]:
    """SOP Instance UIDs of every result the node wrote for the study (every job's folder)."""
    found: set[str] = set()
    if study_results.is_dir():
        for job_folder in study_results.iterdir():
            if job_folder.is_dir():
                found.update(path.stem for path in job_folder.glob("*/*.dcm"))
    return frozenset(found)
