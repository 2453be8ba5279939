"""Histogram statistics, ADC classes, per-lesion measures and the settings digest."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import scipy.stats

from processing.backend import Device, select_backend
from processing.results import AdcClass
from processing.settings import ProcessingSettings, settings_as_dict, settings_digest
from processing.statistics import (
    adc_histogram,
    adc_statistics,
    class_volumes,
    classify_adc,
    lesion_measures,
    segment_sums,
)

CPU = select_backend(Device.CPU)


def test_adc_statistics_match_numpy_and_scipy() -> None:
    rng = np.random.default_rng(3)
    values = rng.gamma(4.0, 200.0, size=5000).astype(np.float32)
    stats = adc_statistics(values, CPU)
    assert stats is not None
    data = values.astype(np.float64)
    assert stats.mean == pytest.approx(data.mean())
    assert stats.sd == pytest.approx(data.std(ddof=1))
    assert stats.median == pytest.approx(np.median(data))
    for name, q in [("p5", 5), ("p10", 10), ("p25", 25), ("p75", 75), ("p90", 90), ("p95", 95)]:
        assert getattr(stats, name) == pytest.approx(np.percentile(data, q))
    assert stats.skewness == pytest.approx(scipy.stats.skew(data))
    assert stats.kurtosis == pytest.approx(scipy.stats.kurtosis(data))  # excess (Fisher)
    assert stats.kurtosis > 0  # a gamma(4) distribution is leptokurtic


def test_adc_statistics_of_nothing_is_none_and_constant_is_flat() -> None:
    assert adc_statistics(np.zeros(0, dtype=np.float32), CPU) is None
    flat = adc_statistics(np.full(10, 700.0, dtype=np.float32), CPU)
    assert flat is not None
    assert (flat.sd, flat.skewness, flat.kurtosis) == (0.0, 0.0, 0.0)


def test_histogram_counts_every_voxel_with_open_end_bins() -> None:
    values = np.array([-5.0, 0.0, 24.9, 25.0, 2999.0, 3000.0, 4500.0], dtype=np.float32)
    hist = adc_histogram(
        values,
        lower_um2s=0.0,
        upper_um2s=3000.0,
        bin_width_um2s=25.0,
        voxel_volume_ml=0.05,
        backend=CPU,
    )
    assert len(hist.counts) == 120
    assert len(hist.bin_edges_um2s) == 121
    assert hist.bin_edges_um2s[1] == 25.0
    assert sum(hist.counts) == values.size
    assert hist.counts[0] == 3  # -5 (clipped), 0, 24.9
    assert hist.counts[1] == 1
    assert hist.counts[-1] == 3  # 2999, 3000 and 4500 (clipped)
    with pytest.raises(ValueError, match="empty"):
        adc_histogram(
            values,
            lower_um2s=10.0,
            upper_um2s=0.0,
            bin_width_um2s=25.0,
            voxel_volume_ml=0.05,
            backend=CPU,
        )


def test_classes_and_volumes() -> None:
    adc = np.array([[[400.0, 999.0, 1000.0, 1499.0, 1500.0, 2500.0]]], dtype=np.float32)
    mask = np.ones(adc.shape, dtype=bool)
    mask[0, 0, 5] = False
    labels = classify_adc(adc, mask, 1000.0, 1500.0, CPU)
    expected = [
        AdcClass.RED.value,
        AdcClass.RED.value,
        AdcClass.YELLOW.value,
        AdcClass.YELLOW.value,
        AdcClass.GREEN.value,
        0,
    ]
    assert labels[0, 0].tolist() == expected
    volumes = class_volumes(
        labels,
        voxel_volume_ml=0.5,
        yellow_lower_um2s=1000.0,
        green_lower_um2s=1500.0,
        yellow_lower_source="default",
        backend=CPU,
    )
    assert (volumes.red_ml, volumes.yellow_ml, volumes.green_ml) == (1.0, 1.0, 0.5)
    assert volumes.yellow_lower_source == "default"


def test_lesion_measures_match_per_label_numpy() -> None:
    rng = np.random.default_rng(4)
    labels = np.zeros((6, 8, 8), dtype=np.int32)
    labels[0:2, 0:3, 0:3] = 1
    labels[3:6, 4:8, 5:7] = 2
    labels[5, 0, 0] = 3
    adc = rng.uniform(500, 1500, labels.shape).astype(np.float32)
    high_b = rng.uniform(10, 100, labels.shape).astype(np.float32)
    measures = lesion_measures(labels, 3, adc, high_b, CPU)
    for label in (1, 2, 3):
        mask = labels == label
        i = label - 1
        assert measures.voxel_counts[i] == mask.sum()
        assert measures.adc_mean[i] == pytest.approx(adc[mask].astype(np.float64).mean())
        assert measures.adc_median[i] == pytest.approx(np.median(adc[mask].astype(np.float64)))
        assert measures.high_b_mean[i] == pytest.approx(high_b[mask].astype(np.float64).mean())
        np.testing.assert_allclose(measures.centroid_index[i], np.argwhere(mask).mean(axis=0))


def test_settings_digest_is_stable_and_sensitive() -> None:
    base = ProcessingSettings()
    assert settings_digest(base) == settings_digest(ProcessingSettings())
    assert len(settings_digest(base)) == 12
    changed = dataclasses.replace(base, threshold_ratio=base.threshold_ratio + 0.1)
    assert settings_digest(changed) != settings_digest(base)
    as_dict = settings_as_dict(base)
    assert as_dict["computed_b_values"] == [1000.0]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("adc_window_um2s", (2000.0, 500.0)),
        ("computed_b_values", ()),
        ("lesion_connectivity", 4),
        ("threshold_ratio", 0.0),
        ("computed_b_values", (1000.0, 6000.0)),
    ],
)
def test_invalid_settings_are_rejected(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field.split("_", maxsplit=1)[0]):
        ProcessingSettings(**{field: value})  # type: ignore[arg-type]


def test_segment_sums_are_pairwise_and_exact_where_a_running_sum_is_not() -> None:
    # 1e16 + 1 rounds back to 1e16: a running sum loses every 1, the pairwise tree
    # adds (1e16 + 1) + (1 + 1) and keeps them.
    columns = np.array([[1e16], [1.0], [1.0], [1.0], [5.0], [7.0]])
    counts = np.array([4, 0, 2], dtype=np.int64)
    sums = segment_sums(columns, counts, CPU)
    assert sums[:, 0].tolist() == [1e16 + 2.0, 0.0, 12.0]
    assert float(np.cumsum(columns[:4, 0])[-1]) == 1e16  # what a running sum gives


def test_segment_sums_match_exact_sums_on_random_segments() -> None:
    rng = np.random.default_rng(11)
    counts = rng.integers(0, 300, size=40).astype(np.int64)
    columns = rng.normal(1000.0, 400.0, size=(int(counts.sum()), 3))
    sums = segment_sums(columns, counts, CPU)
    ends = np.cumsum(counts)
    for index, (start, end) in enumerate(zip(ends - counts, ends, strict=True)):
        for column in range(3):
            exact = math.fsum(columns[start:end, column])
            assert sums[index, column] == pytest.approx(exact, rel=1e-14, abs=1e-9)


def test_lesion_measures_do_not_depend_on_how_the_labels_are_numbered() -> None:
    rng = np.random.default_rng(12)
    labels = rng.integers(0, 5, size=(8, 16, 16)).astype(np.int32)
    adc = rng.uniform(300, 2500, labels.shape).astype(np.float32)
    high_b = rng.uniform(10, 100, labels.shape).astype(np.float32)
    measures = lesion_measures(labels, 4, adc, high_b, CPU)
    swapped = np.choose(labels, [0, 4, 3, 2, 1]).astype(np.int32)
    again = lesion_measures(swapped, 4, adc, high_b, CPU)
    # Per-label sums see the same voxels in the same (flat-index) order: bit-identical.
    assert again.adc_mean.tolist() == measures.adc_mean[::-1].tolist()
    assert again.high_b_mean.tolist() == measures.high_b_mean[::-1].tolist()
    assert again.centroid_index.tolist() == measures.centroid_index[::-1].tolist()
