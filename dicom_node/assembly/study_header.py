"""The study date and time of an assembled exam, read from its source headers.

Comparisons order a patient's exams by study date and time (issue 6), which
:class:`processing.exam.DwiExam` does not carry (processing has no DICOM). They
are read again from the header of the exam's first source instance, as the
result writers do for the patient and study attributes.

Study Date is Type 2 (it may be empty): the Series, Acquisition and Content
Date of the same header stand in, in that order, with the matching time.
"""

from __future__ import annotations

from dataclasses import dataclass

import pydicom
from pydicom.errors import InvalidDicomError

from dicom_node.errors import StudyHeaderError
from processing.exam import DwiExam

__all__ = ["StudyDateTime", "read_study_date_time"]

_DATE_TIME_KEYWORDS = (
    ("StudyDate", "StudyTime"),
    ("SeriesDate", "SeriesTime"),
    ("AcquisitionDate", "AcquisitionTime"),
    ("ContentDate", "ContentTime"),
)


@dataclass(frozen=True, slots=True)
class StudyDateTime:
    """DICOM DA (``YYYYMMDD``) and TM (may be empty) of a study, and where they came from."""

    study_date: str
    study_time: str
    source_keyword: str


def read_study_date_time(exam: DwiExam) -> StudyDateTime:
    """The study date and time of ``exam`` (see the module docstring).

    Raises
    ------
    StudyHeaderError
        When the exam has no sources, the header cannot be read, or it holds
        no usable date.
    """
    if not exam.sources:
        raise StudyHeaderError(
            f"study {exam.study_instance_uid}: the exam has no source files to read the date from"
        )
    path = exam.sources[0].path
    try:
        header = pydicom.dcmread(
            path,
            stop_before_pixels=True,
            specific_tags=[keyword for pair in _DATE_TIME_KEYWORDS for keyword in pair],
        )
    except (OSError, InvalidDicomError) as exc:
        raise StudyHeaderError(f"cannot read the study date from {path}: {exc}") from exc
    for date_keyword, time_keyword in _DATE_TIME_KEYWORDS:
        date = str(header.get(date_keyword, "") or "").strip()
        if not date:
            continue
        if len(date) != 8 or not date.isdigit():
            raise StudyHeaderError(f"{path}: {date_keyword} {date!r} is not a DICOM date YYYYMMDD")
        time = str(header.get(time_keyword, "") or "").strip()
        return StudyDateTime(study_date=date, study_time=time, source_keyword=date_keyword)
    raise StudyHeaderError(
        f"{path}: no Study, Series, Acquisition or Content Date; the exam cannot be placed among "
        "the patient's exams"
    )
