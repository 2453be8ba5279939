"""The report's SR document without highdicom's tree walks: the same bytes, the same checks."""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from datetime import datetime

import highdicom as hd
import pydicom
import pytest
from pydicom.charset import default_encoding
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

import dicom_node.writers.sr as sr_module
from dicom_node.writers import (
    WriterContext,
    WriterError,
    WriterIdentity,
    build_computed_b_series,
    build_measurement_report,
    build_parametric_map,
    build_segmentation,
)
from dicom_node.writers.sr_document import build_document, declare_encoding, survey
from processing.comparison import compare_exams
from processing.exam_summary import ExamSummary, summarize_exam
from processing.results import ProcessingResult
from tests.helpers.writer_fixtures import SyntheticExam

_Build = Callable[[Dataset, Sequence[Dataset]], hd.sr.Comprehensive3DSR]


@pytest.fixture(scope="module")
def fixed_ctx(synthetic: SyntheticExam) -> WriterContext:
    identity = WriterIdentity(software_version="9.9", device_serial_number="SN")
    return WriterContext.create(
        synthetic.exam,
        identity,
        "d",
        computed_b_values=[1000.0],
        content_datetime=datetime(2026, 12, 3, 12, 0, 0, 123456),
    )


def _part10(dataset: Dataset) -> bytes:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _highdicom_whole(
    root: hd.sr.ContainerContentItem,
    evidence: Sequence[Dataset],
    referenced: frozenset[str],
    build: _Build,
) -> hd.sr.Comprehensive3DSR:
    """What the writer did before: highdicom's constructor on the whole tree."""
    return build(root, evidence)


def _report(
    ctx: WriterContext, result: ProcessingResult, evidence: Sequence[Dataset] | None = None
) -> hd.sr.Comprehensive3DSR:
    geometric = build_computed_b_series(ctx, result.computed[0], result.body_mask).datasets
    seg = build_segmentation(ctx, result, geometric) if result.tumour_mask.any() else None
    current = summarize_exam(ctx.exam, result.stats, study_date=str(ctx.patient_study.StudyDate))
    data = current.to_dict()
    prior = ExamSummary.from_dict(
        {**data, "study_instance_uid": "1.2.826.0.1.3680043.8.498.1", "study_date": "20000103"}
    )
    return build_measurement_report(
        ctx,
        result,
        segmentation=seg,
        parametric_map=build_parametric_map(ctx, result, geometric),
        evidence=[*geometric, *ctx.source_evidence()] if evidence is None else evidence,
        geometric_source=geometric,
        comparison=compare_exams(current, [prior]),  # codes of the local scheme
        notes=["a note"],
    )


def test_the_document_is_the_one_highdicom_builds_from_the_whole_tree(
    fixed_ctx: WriterContext, result: ProcessingResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    ours = _report(fixed_ctx, result)
    with monkeypatch.context() as patch:
        patch.setattr(sr_module, "build_document", _highdicom_whole)
        whole = _report(fixed_ctx, result)
    assert "CurrentRequestedProcedureEvidenceSequence" in ours
    assert ours.CodingSchemeIdentificationSequence[0].CodingSchemeDesignator == "99WBDWI"
    assert _part10(ours) == _part10(whole)
    # the typed content is the tree the document holds
    (root,) = ours.content
    assert isinstance(root, hd.sr.ContainerContentItem)
    assert root.ContentSequence is ours.ContentSequence
    assert root.name == codes.DCM.ImagingMeasurementReport


def test_an_image_cited_in_the_tree_but_not_in_the_evidence_is_refused(
    fixed_ctx: WriterContext, result: ProcessingResult
) -> None:
    geometric = build_computed_b_series(fixed_ctx, result.computed[0], result.body_mask).datasets
    shown = {str(image.SOPInstanceUID) for image in geometric}
    with pytest.raises(WriterError, match="No evidence was provided") as raised:
        _report(fixed_ctx, result, evidence=list(fixed_ctx.source_evidence()))
    named = set(str(raised.value).rsplit(": ", 1)[-1].split(", "))
    assert named and named <= shown


def _image(uid: str) -> hd.sr.SourceImageForMeasurement:
    return hd.sr.SourceImageForMeasurement(
        referenced_sop_class_uid=pydicom.uid.MRImageStorage, referenced_sop_instance_uid=uid
    )


def _root(unit: Code, *images: hd.sr.ContentItem) -> hd.sr.ContainerContentItem:
    root = hd.sr.ContainerContentItem(name=codes.DCM.ImagingMeasurementReport)
    group = hd.sr.ContainerContentItem(
        name=codes.DCM.MeasurementGroup, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
    )
    number = hd.sr.NumContentItem(
        name=codes.SCT.Volume,
        value=1.5,
        unit=unit,
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
    )
    group.ContentSequence = [number, *images]
    root.ContentSequence = [group]
    return root


def test_survey_finds_every_cited_instance_and_a_unit_of_the_scheme() -> None:
    local = Code("U", "99TEST", "a local unit")
    millilitre = Code("ml", "UCUM", "milliliter")
    root = _root(local, _image("1.2.3"), _image("1.2.4"))
    assert survey(root, "99TEST") == survey(root, "99TEST")
    found = survey(root, "99TEST")
    assert found.referenced == {"1.2.3", "1.2.4"}
    assert found.uses_scheme  # only as the unit of a number, inside its Measured Value Sequence
    assert not survey(_root(millilitre, _image("1.2.3")), "99TEST").uses_scheme
    assert survey(_root(millilitre), "UCUM").referenced == frozenset()


def test_build_document_checks_the_evidence_before_building() -> None:
    root = _root(Code("ml", "UCUM", "milliliter"), _image("1.2.3"))
    built: list[Dataset] = []

    def build(content: Dataset, evidence: Sequence[Dataset]) -> hd.sr.Comprehensive3DSR:
        built.append(content)
        raise AssertionError("not reached")

    other = Dataset()
    other.SOPInstanceUID = "1.2.9"
    with pytest.raises(ValueError, match=r"referenced in the document content: 1\.2\.3$"):
        build_document(root, [other], survey(root, "99TEST").referenced, build)
    assert built == []


def _datasets(document: Dataset) -> list[Dataset]:
    found, stack = [], [document]
    while stack:
        dataset = stack.pop()
        found.append(dataset)
        for element in dataset.values():
            if element.VR == "SQ":
                stack.extend(element.value)
    return found


def test_the_declared_encoding_writes_the_bytes_pydicom_derives(
    fixed_ctx: WriterContext, result: ProcessingResult
) -> None:
    report = _report(fixed_ctx, result)
    datasets = _datasets(report)
    assert len(datasets) > 100
    assert all(dataset.original_encoding == (False, True) for dataset in datasets)
    declared = _part10(report)
    for dataset in datasets:  # as built in memory: pydicom derives and corrects each one
        dataset.set_original_encoding(None, None, default_encoding)
    assert _part10(report) == declared
    assert declare_encoding(report)
    assert _part10(report) == declared


def test_no_encoding_is_declared_over_an_ambiguous_vr(
    fixed_ctx: WriterContext, result: ProcessingResult
) -> None:
    report = _report(fixed_ctx, result)
    for dataset in _datasets(report):
        dataset.set_original_encoding(None, None, default_encoding)
    item = report.ContentSequence[-1]
    item.add_new(0x00280106, "US or SS", 3)  # Smallest Image Pixel Value: US or SS
    assert not declare_encoding(report)
    assert all(dataset.original_encoding == (None, None) for dataset in _datasets(report))
