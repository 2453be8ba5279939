"""TID 1500 Measurement Report: holds the numbers of the statistics, references the SEG."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

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
from dicom_node.writers.sr import adc_statistic_codes
from processing.results import AdcClass, ProcessingResult
from tests.writer_fixtures import SyntheticExam, make_result, write_synthetic_exam

Numbers = dict[tuple[str, str | None], float]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> SyntheticExam:
    return write_synthetic_exam(tmp_path_factory.mktemp("exam"))


@pytest.fixture(scope="module")
def ctx(synthetic: SyntheticExam) -> WriterContext:
    identity = WriterIdentity(software_version="9.9", device_serial_number="SN-42")
    return WriterContext.create(synthetic.exam, identity, "d", computed_b_values=[1000.0])


def _write_report(
    ctx: WriterContext, result: ProcessingResult, tmp_path: Path
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


def test_report_holds_the_statistics(
    ctx: WriterContext, synthetic: SyntheticExam, tmp_path: Path
) -> None:
    result = make_result(synthetic)
    sr, seg, pm = _write_report(ctx, result, tmp_path)
    assert seg is not None
    report = sr.content
    groups = {g.tracking_uid: g for g in report.get_volumetric_roi_measurement_groups()}
    total = _numbers(groups[seg.total.tracking_uid])
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
        reference = group.referenced_segment
        assert reference.referenced_sop_instance_uid == seg.dataset.SOPInstanceUID
        assert reference.referenced_segment_numbers == [info.number]
    assert len(groups) == 1 + 3 + len(stats.lesions)
    # ADC values point at the Parametric Map they come from
    adc_mean = next(
        m for m in groups[seg.total.tracking_uid].get_measurements() if m.name.value == "113041"
    )
    assert adc_mean.referenced_images[0].referenced_sop_instance_uid == pm.SOPInstanceUID
    observer = report.get_observer_contexts()[0]
    assert observer.observer_type.value == "121007"  # Device
    evidence = {uid for _, _, uid in ((*item,) for item in _evidence(sr))}
    assert seg.dataset.SOPInstanceUID in evidence
    assert {ref.sop_instance_uid for ref in synthetic.exam.sources} <= evidence
    assert sr.CodingSchemeIdentificationSequence[0].CodingSchemeDesignator == "99WBDWI"


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
    image_groups = sr.content.get_image_measurement_groups()
    assert [g.tracking_uid for g in image_groups] == [seg.classes[AdcClass.GREEN].tracking_uid]
    assert _numbers(image_groups[0]) == {("118565006", None): 0.0}


def test_empty_mask_gives_a_report_that_says_no_disease(
    ctx: WriterContext, synthetic: SyntheticExam, tmp_path: Path
) -> None:
    result = make_result(synthetic, empty=True)
    sr, seg, _ = _write_report(ctx, result, tmp_path)
    assert seg is None
    report = sr.content
    assert report.get_volumetric_roi_measurement_groups() == []
    (group,) = report.get_image_measurement_groups()
    assert _numbers(group) == {("118565006", None): 0.0}
    assert group.finding_type.value == "111286"  # No abnormality
    statements = {
        (item.ConceptNameCodeSequence[0].CodeValue, item.ConceptCodeSequence[0].CodeValue)
        for item in group[0].ContentSequence
        if item.ValueType == "CODE"
    }
    assert ("14799000", "272519000") in statements  # Neoplasm, secondary: Absent
    assert "CodingSchemeIdentificationSequence" not in sr


def test_report_and_segmentation_must_agree(ctx: WriterContext, synthetic: SyntheticExam) -> None:
    result = make_result(synthetic)
    geometric = build_computed_b_series(ctx, result.computed[0], result.body_mask).datasets
    pm = build_parametric_map(ctx, result, geometric)
    with pytest.raises(WriterError, match="needs its SEG"):
        build_measurement_report(ctx, result, segmentation=None, parametric_map=pm, evidence=[])
    seg = build_segmentation(ctx, result, geometric)
    empty = make_result(synthetic, empty=True)
    with pytest.raises(WriterError, match="without segmented disease"):
        build_measurement_report(ctx, empty, segmentation=seg, parametric_map=pm, evidence=[])
    assert np.any(result.tumour_mask)
