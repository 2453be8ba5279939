"""TID 1500 Measurement Report: holds the numbers of the statistics, references the SEG."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
import pytest

from dicom_node.readers.report_reader import read_measurement_report
from dicom_node.writers import (
    SegmentationOutput,
    WriterContext,
    WriterError,
    WriterIdentity,
    build_computed_b_series,
    build_measurement_report,
    build_parametric_map,
    build_segmentation,
)
from dicom_node.writers.sr import (
    TOTAL_GROUP,
    VIEWER_ARROW,
    _Spot,
    adc_statistic_codes,
    report_reference,
)
from dicom_node.writers.sr_quality import verdict_of_code
from processing.comparison import Comparison, compare_exams
from processing.exam_summary import ExamSummary, summarize_exam
from processing.quality import QualityAssessment, QualityFinding, Verdict
from processing.results import AdcClass, ProcessingResult
from tests.helpers.writer_fixtures import (
    SyntheticExam,
    make_result,
    report_notes,
    write_synthetic_exam,
)

Numbers = dict[tuple[str, str | None], float]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> SyntheticExam:
    return write_synthetic_exam(tmp_path_factory.mktemp("exam"))


@pytest.fixture(scope="module")
def ctx(synthetic: SyntheticExam) -> WriterContext:
    identity = WriterIdentity(software_version="9.9", device_serial_number="SN-42")
    return WriterContext.create(synthetic.exam, identity, "d", computed_b_values=[1000.0])


def _write_report(
    ctx: WriterContext, result: ProcessingResult, tmp_path: Path, **kwargs: Any
) -> tuple[hd.sr.Comprehensive3DSR, SegmentationOutput | None, pydicom.Dataset]:
    geometric = build_computed_b_series(ctx, result.computed[0], result.body_mask).datasets
    pm = build_parametric_map(ctx, result, geometric)
    seg = build_segmentation(ctx, result, geometric) if result.tumour_mask.any() else None
    sr = build_measurement_report(
        ctx,
        result,
        segmentation=seg,
        parametric_map=pm,
        evidence=[*geometric, *ctx.source_evidence()],
        geometric_source=geometric,
        **kwargs,
    )
    path = tmp_path / "sr.dcm"
    sr.save_as(path, enforce_file_format=True)
    return hd.sr.Comprehensive3DSR.from_dataset(pydicom.dcmread(path)), seg, pm


def _numbers(group: hd.sr.MeasurementsAndQualitativeEvaluations) -> Numbers:
    found: Numbers = {}
    for measurement in group.get_measurements():
        derivation = measurement.derivation.value if measurement.derivation else None
        found[(measurement.name.value, derivation)] = float(measurement.value)
    return found


# One report read back and checked item by item against the result it was written from.
def test_report_holds_the_statistics(  # noqa: PLR0915
    ctx: WriterContext, synthetic: SyntheticExam, tmp_path: Path
) -> None:
    result = make_result(synthetic)
    sr, seg, pm = _write_report(ctx, result, tmp_path)
    assert seg is not None
    report = sr.content
    groups = {g.tracking_uid: g for g in report.get_volumetric_roi_measurement_groups()}
    (total_group,) = [
        g
        for g in report.get_image_measurement_groups()
        if str(g.tracking_identifier) == TOTAL_GROUP
    ]
    assert total_group.tracking_uid == seg.total.tracking_uid
    total = _numbers(total_group)
    stats = result.stats
    assert stats.adc is not None
    assert total[("118565006", None)] == pytest.approx(stats.tdv_ml, rel=1e-9)
    for field, code in adc_statistic_codes().items():
        assert total[("113041", code.value)] == pytest.approx(getattr(stats.adc, field), rel=1e-9)
    volumes = {AdcClass.RED: stats.classes.red_ml, AdcClass.YELLOW: stats.classes.yellow_ml}
    volumes[AdcClass.GREEN] = stats.classes.green_ml
    for adc_class, info in seg.classes.items():
        assert _numbers(groups[info.tracking_uid])[("118565006", None)] == pytest.approx(
            volumes[adc_class], rel=1e-9
        )
    for lesion in stats.lesions:
        info = seg.lesions[lesion.label]
        group = groups[info.tracking_uid]
        numbers = _numbers(group)
        assert numbers[("118565006", None)] == pytest.approx(lesion.volume_ml, rel=1e-9)
        assert numbers[("113041", "373098007")] == pytest.approx(lesion.adc_mean, rel=1e-9)
        assert numbers[("113041", "373099004")] == pytest.approx(lesion.adc_median, rel=1e-9)
        centroid = [numbers[(f"CENTROID{axis}", None)] for axis in "XYZ"]
        assert centroid == pytest.approx(lesion.centroid_mm, rel=1e-9)
        assert numbers[("HIGHBMEAN", None)] == pytest.approx(lesion.mean_high_b, rel=1e-9)
        assert not _categories(group)  # no comparison, no category
        reference = group.referenced_segment
        assert seg.lesion_dataset is not None
        assert reference.referenced_sop_instance_uid == seg.lesion_dataset.SOPInstanceUID
        assert reference.referenced_segment_numbers == [info.number]
        assert str(group.tracking_identifier) == info.label  # "Lesion N - region, x ml"
    for info in seg.classes.values():
        reference = groups[info.tracking_uid].referenced_segment
        assert reference.referenced_sop_instance_uid == seg.dataset.SOPInstanceUID
        assert reference.referenced_segment_numbers == [info.number]
    assert total[("VOXELVOL", None)] == pytest.approx(ctx.exam.voxel_volume_ml, rel=1e-9)
    assert len(groups) == 3 + len(stats.lesions)
    # the total names both SEGs, the class SEG first (their union is the tumour load)
    sources = [
        item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        for item in total_group[0].ContentSequence
        if item.ValueType == "IMAGE"
    ]
    assert sources == [seg.dataset.SOPInstanceUID, seg.lesion_dataset.SOPInstanceUID]
    # ADC values point at the Parametric Map they come from
    adc_mean = next(m for m in total_group.get_measurements() if m.name.value == "113041")
    assert adc_mean.referenced_images[0].referenced_sop_instance_uid == pm.SOPInstanceUID
    observer = report.get_observer_contexts()[0]
    assert observer.observer_type.value == "121007"  # Device
    evidence = {uid for _, _, uid in ((*item,) for item in _evidence(sr))}
    assert seg.dataset.SOPInstanceUID in evidence
    assert seg.lesion_dataset.SOPInstanceUID in evidence
    assert {ref.sop_instance_uid for ref in synthetic.exam.sources} <= evidence
    assert sr.CodingSchemeIdentificationSequence[0].CodingSchemeDesignator == "99WBDWI"
    assert sr.SeriesDescription == "Tumour load report wbdwi"
    assert sr.SeriesDate == ctx.content_datetime.strftime("%Y%m%d")
    assert sr.SeriesTime == ctx.content_datetime.strftime("%H%M%S")
    _assert_displayable(sr, geometric_uids={ds.SOPInstanceUID for ds in _geometric(ctx, result)})
    # first group: the total's location, its label, the verdict (ok) and its sentence
    first = sr.ContentSequence[-1].ContentSequence[0].ContentSequence
    assert _tracking_of(first) == (f"{VIEWER_ARROW}:{TOTAL_GROUP}", seg.total.tracking_uid)
    assert _verdict_code(first) == "RELOK"
    comments = [i.TextValue for i in first if i.ValueType == "TEXT" and _code(i) == "121106"]
    assert stats.adc is not None
    assert comments[0] == (
        f"Total tumour load: {stats.tdv_ml:.2f} ml, median ADC {stats.adc.median:.0f} x10-6 mm2/s"
    )
    assert comments[1].startswith("Reliability OK")
    # each lesion's location is labelled with its volume and median ADC (OHIF's panel)
    labels = _location_labels(sr)
    for lesion in stats.lesions:
        label = labels[seg.lesions[lesion.label].tracking_uid]
        assert label.startswith(f"Lesion {lesion.label} - ")
        assert f": {lesion.volume_ml:.2f} ml, median ADC {lesion.adc_median:.0f} " in label


def _code(item: pydicom.Dataset) -> str:
    return str(item.ConceptNameCodeSequence[0].CodeValue)


def _tracking_of(items: Any) -> tuple[str, str]:
    identifier = next(i.TextValue for i in items if _code(i) == "112039")
    uid = next(i.UID for i in items if _code(i) == "112040")
    return str(identifier), str(uid)


def _location_labels(sr: pydicom.Dataset) -> dict[str, str]:
    """Tracking UID -> label (first Comment) of each location group (one with an SCOORD)."""
    labels = {}
    for group in sr.ContentSequence[-1].ContentSequence:
        items = group.ContentSequence
        if any(i.ValueType == "SCOORD" for i in items):
            comments = [
                i.TextValue for i in items if i.ValueType == "TEXT" and _code(i) == "121106"
            ]
            labels[_tracking_of(items)[1]] = str(comments[0])
    return labels


def _verdict_code(items: Any) -> str | None:
    codes = [i.ConceptCodeSequence[0].CodeValue for i in items if _code(i) == "RELIAB"]
    return str(codes[0]) if codes else None


def _geometric(ctx: WriterContext, result: ProcessingResult) -> tuple[pydicom.Dataset, ...]:
    return build_computed_b_series(ctx, result.computed[0], result.body_mask).datasets


def _assert_displayable(sr: pydicom.Dataset, *, geometric_uids: set[str]) -> None:
    """What OHIF 3.13 needs of every measurement group, to show the report and to load it.

    SR viewport: OHIF merges the groups of one Tracking Unique Identifier into
    one measurement, takes the first top-level SCOORD/SCOORD3D of the merged
    items as its location and throws (TypeError on ReferencedSOPSequence) when
    a measurement has none; the SCOORD must name an image it can load (here
    the computed-b series) and have a concept name. Measurement panel: OHIF's
    cornerstone adapters load a group whose Tracking Identifier names their
    ArrowAnnotate tool and whose SCOORD is a POINT, labelled with its first
    Comment; they skip (with a warning) every group without an SCOORD.
    """
    container = sr.ContentSequence[-1]
    assert _code(container) == "126010"  # Imaging Measurements
    merged: dict[str, list[pydicom.Dataset]] = {}
    for group in container.ContentSequence:
        assert _code(group) == "125007"  # Measurement Group
        identifier, uid = _tracking_of(group.ContentSequence)
        merged.setdefault(uid, []).extend(group.ContentSequence)
        graphics = [i for i in group.ContentSequence if i.ValueType in ("SCOORD", "SCOORD3D")]
        if graphics:  # a location: loadable into OHIF's panel, labelled
            assert identifier.startswith(f"{VIEWER_ARROW}:")
            assert _location_labels(sr)[uid].split(":")[0] in identifier
        else:  # numbers: never taken for a cornerstone tool (no tool's identifier prefix)
            assert not identifier.lower().startswith(("cornerstone3dtools@", "cornerstonetools@"))
    for uid, items in merged.items():
        graphics = [i for i in items if i.ValueType in ("SCOORD", "SCOORD3D")]
        assert len(graphics) == 1, f"measurement {uid}: {len(graphics)} SCOORD, one needed"
        scoord = graphics[0]
        assert scoord.ValueType == "SCOORD" and scoord.GraphicType == "POINT"
        assert _code(scoord) == "111030"  # Image Region
        assert len(scoord.GraphicData) == 2  # one (column, row)
        (image,) = scoord.ContentSequence
        assert image.ReferencedSOPSequence[0].ReferencedSOPInstanceUID in geometric_uids
        numbers = [i for i in items if i.ValueType == "NUM"]
        for number in numbers:  # OHIF labels: a measured value with a unit code
            assert number.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0].CodeValue
    # TID 1600 Image Library: exactly the images the locations are drawn on (OHIF's
    # referencedImages)
    (library,) = [i for i in sr.ContentSequence if _code(i) == "111028"]
    (library_group,) = library.ContentSequence
    listed = {
        i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for i in library_group.ContentSequence
    }
    drawn = {
        graphic.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        for group in container.ContentSequence
        for graphic in group.ContentSequence
        if graphic.ValueType == "SCOORD"
    }
    assert listed == drawn


def _categories(group: hd.sr.MeasurementsAndQualitativeEvaluations) -> dict[str, str]:
    """The suggested categories of a group: concept code -> value code."""
    return {
        e.name.value: e.value.value
        for e in group.get_qualitative_evaluations()
        if e.name.value in ("RAC", "RAC2ND")
    }


def _evidence(sr: pydicom.Dataset) -> list[tuple[str, str, str]]:
    items = []
    for study in sr.CurrentRequestedProcedureEvidenceSequence:
        for series in study.ReferencedSeriesSequence:
            for instance in series.ReferencedSOPSequence:
                items.append(
                    (
                        series.SeriesInstanceUID,
                        instance.ReferencedSOPClassUID,
                        instance.ReferencedSOPInstanceUID,
                    )
                )
    return items


def test_empty_class_is_reported_as_zero_volume(
    ctx: WriterContext, synthetic: SyntheticExam, tmp_path: Path
) -> None:
    result = make_result(synthetic)
    classes = result.class_labels.copy()
    classes[classes == AdcClass.GREEN.value] = AdcClass.YELLOW.value
    moved = dataclasses.replace(
        result.stats.classes,
        yellow_ml=result.stats.classes.yellow_ml + result.stats.classes.green_ml,
        green_ml=0.0,
    )
    result = dataclasses.replace(
        result, class_labels=classes, stats=dataclasses.replace(result.stats, classes=moved)
    )
    sr, seg, _ = _write_report(ctx, result, tmp_path)
    assert seg is not None
    image_groups = {
        str(g.tracking_identifier): g for g in sr.content.get_image_measurement_groups()
    }
    empty = image_groups[seg.classes[AdcClass.GREEN].label]
    assert _numbers(empty) == {("118565006", None): 0.0}
    # nothing to show: tracked with the total, shown at its location in a viewer
    assert empty.tracking_uid == seg.total.tracking_uid
    _assert_displayable(sr, geometric_uids={ds.SOPInstanceUID for ds in _geometric(ctx, result)})


def test_empty_mask_gives_a_report_that_says_no_disease(
    ctx: WriterContext, synthetic: SyntheticExam, tmp_path: Path
) -> None:
    result = make_result(synthetic, empty=True)
    sr, seg, _ = _write_report(ctx, result, tmp_path)
    assert seg is None
    report = sr.content
    assert report.get_volumetric_roi_measurement_groups() == []
    (group,) = report.get_image_measurement_groups()
    _assert_displayable(sr, geometric_uids={ds.SOPInstanceUID for ds in _geometric(ctx, result)})
    assert _numbers(group) == {
        ("118565006", None): 0.0,
        ("VOXELVOL", None): pytest.approx(ctx.exam.voxel_volume_ml),
    }
    assert group.finding_type.value == "111286"  # No abnormality
    assert list(_location_labels(sr).values()) == ["Total tumour load: 0.00 ml; no abnormality"]
    statements = {
        (item.ConceptNameCodeSequence[0].CodeValue, item.ConceptCodeSequence[0].CodeValue)
        for item in group[0].ContentSequence
        if item.ValueType == "CODE"
    }
    assert ("14799000", "272519000") in statements  # Neoplasm, secondary: Absent
    assert sr.CodingSchemeIdentificationSequence[0].CodingSchemeDesignator == "99WBDWI"


def test_notes_for_the_reader_are_comments_and_the_report_still_reads_back(
    ctx: WriterContext, synthetic: SyntheticExam, tmp_path: Path
) -> None:
    result = make_result(synthetic)
    geometric = build_computed_b_series(ctx, result.computed[0], result.body_mask).datasets
    pm = build_parametric_map(ctx, result, geometric)
    seg = build_segmentation(ctx, result, geometric)
    notes = (
        "priors peer PACS@pacs:104 could not be asked: connection refused; "
        "compared with the node's local history only",
        "a second note",
    )
    kwargs: dict[str, Any] = {
        "segmentation": seg,
        "parametric_map": pm,
        "evidence": [*geometric, *ctx.source_evidence()],
        "geometric_source": geometric,
    }
    with_notes = build_measurement_report(ctx, result, notes=notes, **kwargs)
    without = build_measurement_report(ctx, result, **kwargs)
    path = tmp_path / "sr.dcm"
    with_notes.save_as(path, enforce_file_format=True)
    back = pydicom.dcmread(path)
    assert report_notes(back) == list(notes)
    assert report_notes(without) == []
    # Other content, another instance; the same notes give the same UID again.
    assert back.SOPInstanceUID != without.SOPInstanceUID
    again = build_measurement_report(ctx, result, notes=notes, **kwargs)
    assert again.SOPInstanceUID == back.SOPInstanceUID
    assert without.SOPInstanceUID == build_measurement_report(ctx, result, **kwargs).SOPInstanceUID
    # The notes group is one more group; everything else is unchanged.
    assert (
        len(back.ContentSequence[-1].ContentSequence)
        == len(without.ContentSequence[-1].ContentSequence) + 1
    )
    read_back = read_measurement_report(back)
    assert read_back.sr_sop_instance_uid == back.SOPInstanceUID
    assert dataclasses.replace(read_back, sr_sop_instance_uid="") == dataclasses.replace(
        read_measurement_report(without), sr_sop_instance_uid=""
    )


def test_report_and_segmentation_must_agree(ctx: WriterContext, synthetic: SyntheticExam) -> None:
    result = make_result(synthetic)
    geometric = build_computed_b_series(ctx, result.computed[0], result.body_mask).datasets
    pm = build_parametric_map(ctx, result, geometric)
    with pytest.raises(WriterError, match="needs its SEG"):
        build_measurement_report(
            ctx,
            result,
            segmentation=None,
            parametric_map=pm,
            evidence=[],
            geometric_source=geometric,
        )
    seg = build_segmentation(ctx, result, geometric)
    empty = make_result(synthetic, empty=True)
    with pytest.raises(WriterError, match="without segmented disease"):
        build_measurement_report(
            ctx,
            empty,
            segmentation=seg,
            parametric_map=pm,
            evidence=[],
            geometric_source=geometric,
        )
    assert np.any(result.tumour_mask)


def _with_comparison(
    ctx: WriterContext, synthetic: SyntheticExam
) -> tuple[ProcessingResult, Comparison]:
    """The synthetic exam compared with an earlier exam whose lesions were half as big."""
    result = make_result(synthetic)
    current = summarize_exam(
        synthetic.exam, result.stats, study_date=str(ctx.patient_study.StudyDate)
    )
    data = current.to_dict()
    prior = ExamSummary.from_dict(
        {
            **data,
            "study_instance_uid": "1.2.826.0.1.3680043.8.498.1",
            "study_date": "20000103",
            "tdv_ml": current.tdv_ml / 2,
            "lesions": [{**item, "volume_ml": item["volume_ml"] / 2} for item in data["lesions"]],
        }
    )
    return result, compare_exams(current, [prior])


def _items(
    group: hd.sr.MeasurementsAndQualitativeEvaluations, value_type: str, concept: str
) -> list[Any]:
    return [
        item
        for item in group[0].ContentSequence
        if item.ValueType == value_type and item.ConceptNameCodeSequence[0].CodeValue == concept
    ]


def test_report_holds_the_comparison_as_suggestions(
    ctx: WriterContext, synthetic: SyntheticExam, tmp_path: Path
) -> None:
    result, comparison = _with_comparison(ctx, synthetic)
    geometric = build_computed_b_series(ctx, result.computed[0], result.body_mask).datasets
    pm = build_parametric_map(ctx, result, geometric)
    seg = build_segmentation(ctx, result, geometric)
    sr = build_measurement_report(
        ctx,
        result,
        segmentation=seg,
        parametric_map=pm,
        evidence=geometric,
        geometric_source=geometric,
        comparison=comparison,
    )
    path = tmp_path / "sr.dcm"
    sr.save_as(path, enforce_file_format=True)
    report = hd.sr.Comprehensive3DSR.from_dataset(pydicom.dcmread(path)).content
    groups = {
        str(g.tracking_identifier): g
        for g in report.get_image_measurement_groups()
        if str(g.tracking_identifier) != TOTAL_GROUP
    }
    assert {g.tracking_uid for g in groups.values()} == {seg.total.tracking_uid}
    _assert_displayable(sr, geometric_uids={ds.SOPInstanceUID for ds in geometric})

    assert comparison.overall_primary is not None
    expected = {"Comparison with the previous exam", "Comparison with the baseline exam"}
    expected |= {"Suggested response category: overall"}
    expected |= {
        f"Suggested response category: {r.region.value}".replace("_", " ")
        for r in comparison.regions
    }
    assert set(groups) == expected
    previous = groups["Comparison with the previous exam"]
    (uid,) = _items(previous, "UIDREF", "110180")
    assert str(uid.UID) == comparison.previous_study_uid
    (date,) = _items(previous, "DATE", "111060")
    assert date.Date == "20000103"
    numbers = _numbers(previous)
    assert numbers[("VOLCHGPCT", None)] == pytest.approx(100.0)
    assert numbers[("VOLCHG", None)] == pytest.approx(result.stats.tdv_ml / 2)
    assert numbers[("ADCMEDCHGPCT", None)] == pytest.approx(0.0, abs=1e-9)

    overall = groups["Suggested response category: overall"]
    assert _categories(overall)["RAC"] == f"RAC{int(comparison.overall_primary)}"
    concept = next(e.name for e in overall.get_qualitative_evaluations() if e.name.value == "RAC")
    assert "radiologist" in concept.meaning
    (note,) = _items(overall, "TEXT", "SUGGESTION")
    assert "suggestion for the radiologist" in note.TextValue
    for region in comparison.regions:
        group = groups[f"Suggested response category: {region.region.value.replace('_', ' ')}"]
        assert _categories(group)["RAC"] == f"RAC{int(region.primary)}"

    lesions = {g.tracking_uid: g for g in report.get_volumetric_roi_measurement_groups()}
    for assessment in comparison.lesions:
        assert assessment.label is not None and assessment.category is not None
        group = lesions[seg.lesions[assessment.label].tracking_uid]
        assert _categories(group) == {"RAC": f"RAC{int(assessment.category)}"}
        assert _numbers(group)[("VOLCHGPCT", None)] == pytest.approx(100.0)
        (rule,) = _items(group, "TEXT", "RACRULE")
        assert assessment.rule in rule.TextValue

    # The parts a later comparison reads are the same as without the comparison.
    plain = build_measurement_report(
        ctx,
        result,
        segmentation=seg,
        parametric_map=pm,
        evidence=geometric,
        geometric_source=geometric,
    )
    assert read_measurement_report(pydicom.dcmread(path)).to_dict() == (
        read_measurement_report(plain).to_dict()
    )


def test_report_refuses_a_comparison_of_another_study(
    ctx: WriterContext, synthetic: SyntheticExam
) -> None:
    result, comparison = _with_comparison(ctx, synthetic)
    geometric = build_computed_b_series(ctx, result.computed[0], result.body_mask).datasets
    pm = build_parametric_map(ctx, result, geometric)
    seg = build_segmentation(ctx, result, geometric)
    other = dataclasses.replace(comparison, current_study_uid="1.2.3")
    with pytest.raises(WriterError, match=r"comparison is of study 1\.2\.3"):
        build_measurement_report(
            ctx,
            result,
            segmentation=seg,
            parametric_map=pm,
            evidence=[],
            geometric_source=geometric,
            comparison=other,
        )


def _doubtful(result: ProcessingResult, severity: Verdict) -> ProcessingResult:
    """``result`` with hand-made reasons for doubt (one review, one of ``severity``)."""
    findings = (
        QualityFinding(
            code="marrow_bright",
            severity=Verdict.REVIEW,
            message="Normal marrow is 3.9 x as bright as muscle at b1000 (limit 3.5).",
            value=3.9,
            limit=3.5,
        ),
        QualityFinding(
            code="snr_low",
            severity=severity,
            message="SNR at the highest b-value is 9 (limit 12).",
            value=9.0,
            limit=12.0,
        ),
    )
    return dataclasses.replace(result, quality=QualityAssessment(findings=findings))


@pytest.mark.parametrize("severity", [Verdict.REVIEW, Verdict.UNRELIABLE])
def test_the_verdict_comes_first_and_marks_every_number(
    ctx: WriterContext, synthetic: SyntheticExam, tmp_path: Path, severity: Verdict
) -> None:
    plain = make_result(synthetic)
    result = _doubtful(plain, severity)
    sr, seg, _ = _write_report(ctx, result, tmp_path)
    assert seg is not None
    code = {Verdict.REVIEW: "RELREVIEW", Verdict.UNRELIABLE: "RELUNREL"}[severity]
    groups = list(sr.ContentSequence[-1].ContentSequence)
    first = groups[0].ContentSequence
    assert _tracking_of(first)[0] == f"{VIEWER_ARROW}:{TOTAL_GROUP}"
    assert _verdict_code(first) == code
    comments = [i.TextValue for i in first if i.ValueType == "TEXT" and _code(i) == "121106"]
    assert comments[0].endswith(f"; reliability {severity.value.upper()}")  # the label
    comments = comments[1:]
    assert comments[0] == f"Reliability {severity.value.upper()}: {severity.meaning}"
    # most severe reason first (ties in their order), each in plain words with its value
    snr = f"{severity.value.upper()}: SNR at the highest b-value is 9 (limit 12)."
    marrow = "REVIEW: Normal marrow is 3.9 x as bright as muscle at b1000 (limit 3.5)."
    expected = [snr, marrow] if severity is Verdict.UNRELIABLE else [marrow, snr]
    assert comments[1:] == expected
    # every group with numbers is marked, and the numbers are those of the plain report
    for group in groups:
        items = group.ContentSequence
        if any(i.ValueType == "NUM" for i in items):
            assert _verdict_code(items) == code, _tracking_of(items)
    plain_sr, _, _ = _write_report(ctx, plain, tmp_path)
    assert read_measurement_report(sr).to_dict() | {"sr_sop_instance_uid": ""} == (
        read_measurement_report(plain_sr).to_dict() | {"sr_sop_instance_uid": ""}
    )
    assert sr.SOPInstanceUID != plain_sr.SOPInstanceUID  # other content, other instance
    assert sr.SeriesDescription == f"Tumour load report ({severity.value.upper()}) wbdwi"
    assert verdict_of_code(code) is severity
    _assert_displayable(sr, geometric_uids={ds.SOPInstanceUID for ds in _geometric(ctx, result)})


def test_other_foci_are_one_measurement(
    ctx: WriterContext, synthetic: SyntheticExam, tmp_path: Path
) -> None:
    """Bounded output: the unlisted components are one 'Other foci' group with count and ml."""
    result = make_result(synthetic)
    last = result.stats.lesions[-1]
    stats = dataclasses.replace(
        result.stats,
        lesions=result.stats.lesions[:-1],
        other_foci_count=1,
        other_foci_ml=last.volume_ml,
    )
    bounded = dataclasses.replace(
        result,
        lesion_labels=np.where(result.lesion_labels == last.label, 0, result.lesion_labels),
        stats=stats,
    )
    sr, seg, _ = _write_report(ctx, bounded, tmp_path)
    assert seg is not None and seg.other is not None
    groups = {g.tracking_uid: g for g in sr.content.get_volumetric_roi_measurement_groups()}
    other = groups[seg.other.tracking_uid]
    assert str(other.tracking_identifier).startswith("Other foci (1)")
    assert _numbers(other) == {
        ("118565006", None): pytest.approx(last.volume_ml, rel=1e-9),
        ("OTHERFOCI", None): 1.0,
    }
    assert len(groups) == 3 + len(stats.lesions) + 1
    _assert_displayable(sr, geometric_uids={ds.SOPInstanceUID for ds in _geometric(ctx, result)})


def test_a_later_version_names_and_replaces_the_earlier_report(
    ctx: WriterContext, synthetic: SyntheticExam, tmp_path: Path
) -> None:
    result = make_result(synthetic)
    earlier, _, _ = _write_report(ctx, result, tmp_path)
    earlier_path = tmp_path / "earlier.dcm"
    earlier.save_as(earlier_path, enforce_file_format=True)
    reference = report_reference(earlier_path)
    later, _, _ = _write_report(ctx, result, tmp_path, predecessors=[reference])
    (study,) = later.PredecessorDocumentsSequence
    assert study.StudyInstanceUID == earlier.StudyInstanceUID
    (series,) = study.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == earlier.SeriesInstanceUID
    (instance,) = series.ReferencedSOPSequence
    assert instance.ReferencedSOPInstanceUID == earlier.SOPInstanceUID
    assert instance.ReferencedSOPClassUID == earlier.SOPClassUID
    (note,) = report_notes(later)
    assert note.startswith("This report replaces the earlier report of ")
    assert earlier.SOPInstanceUID in note
    assert later.SOPInstanceUID != earlier.SOPInstanceUID
    assert int(later.InstanceNumber) == 2  # sorts after the report it replaces
    assert later.SeriesDescription == "Tumour load report (revised) wbdwi"
    with pytest.raises(WriterError, match="not an SR document"):
        report_reference(next(iter(synthetic.exam.sources)).path)


def test_a_location_is_a_pixel_of_the_finding_on_its_largest_slice() -> None:
    voxels = np.zeros((4, 20, 30), dtype=bool)
    voxels[1, 5:8, 10:20] = True  # 3 rows x 10 columns
    voxels[2, 6, 12] = True
    spot = _Spot.inside(voxels)
    assert spot is not None and spot.slice_index == 1
    assert voxels[1, spot.row, spot.column]
    assert spot.row == 6 and spot.column in (14, 15)  # nearest the centroid (6, 14.5)
    np.testing.assert_allclose(spot.point(), [[spot.column + 0.5, 6.5]])
    # a ring: the centroid is outside; the location is still on the finding
    ring = np.zeros((1, 21, 21), dtype=bool)
    yy, xx = np.mgrid[:21, :21]
    ring[0] = np.abs(np.hypot(yy - 10, xx - 10) - 8) < 1
    spot = _Spot.inside(ring)
    assert spot is not None and ring[0, spot.row, spot.column]
    assert _Spot.inside(np.zeros((2, 3, 3), dtype=bool)) is None
