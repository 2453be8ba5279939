"""The numerical WB-DWI phantom: geometry, signal model, noise, truth and scenarios."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import ndimage

from processing.exam import DwiExam, index_to_patient
from processing.phantom import (
    MARROW_TISSUES,
    PRESETS,
    SCENARIOS,
    TISSUE_PROPERTIES,
    Phantom,
    Tissue,
    make_phantom,
    write_truth,
)

PATIENT = "PHANTOM-0001"


@pytest.fixture(scope="module")
def small() -> Phantom:
    return make_phantom("small", seed=3, patient_id=PATIENT)


@pytest.fixture(scope="module")
def small_clean() -> Phantom:
    return make_phantom("small", snr=0.0, patient_id=PATIENT)


@pytest.fixture(scope="module")
def reference_clean() -> Phantom:
    return make_phantom("reference", snr=0.0, patient_id=PATIENT)


@pytest.fixture(scope="module")
def time_points() -> dict[str, Phantom]:
    return {
        name: make_phantom("small", snr=0.0, patient_id=PATIENT, scenario=name, seed=1)
        for name in SCENARIOS
    }


def _lesions(phantom: Phantom) -> dict[int, dict[str, Any]]:
    return {int(row["label"]): row for row in phantom.truth["lesions"]}


def test_same_inputs_give_the_same_phantom() -> None:
    first = make_phantom("small", seed=5, patient_id="P-DET", scenario="response")
    second = make_phantom("small", seed=5, patient_id="P-DET", scenario="response")
    np.testing.assert_array_equal(first.signal, second.signal)
    np.testing.assert_array_equal(first.tissue_labels, second.tissue_labels)
    np.testing.assert_array_equal(first.lesion_labels, second.lesion_labels)
    assert first.truth == second.truth
    assert first.study_instance_uid == second.study_instance_uid


def test_seed_changes_noise_and_position_but_not_the_patient() -> None:
    first = make_phantom("small", seed=1, patient_id="P-SEED")
    second = make_phantom("small", seed=2, patient_id="P-SEED")
    assert not np.array_equal(first.signal, second.signal)
    assert first.truth["patient_shift_mm"] != second.truth["patient_shift_mm"]
    for key in ("key", "bone", "nominal_volume_ml", "nominal_adc_um2s"):
        assert [r[key] for r in first.truth["lesions"]] == [r[key] for r in second.truth["lesions"]]
    other_patient = make_phantom("small", seed=1, patient_id="P-OTHER")
    assert [r["nominal_volume_ml"] for r in other_patient.truth["lesions"]] != [
        r["nominal_volume_ml"] for r in first.truth["lesions"]
    ]


def test_noise_free_signal_is_the_monoexponential_model(small_clean: Phantom) -> None:
    for plane, b in zip(small_clean.signal, small_clean.b_values, strict=True):
        expected = small_clean.s0 * np.exp(-b * small_clean.true_adc.astype(np.float64) * 1e-6)
        np.testing.assert_allclose(plane, expected, rtol=1e-5, atol=1e-4)
    background = small_clean.tissue_labels == Tissue.BACKGROUND
    assert np.all(small_clean.signal[:, background] == 0.0)


def test_tissue_maps_follow_the_property_table(small_clean: Phantom) -> None:
    for tissue in Tissue:
        if tissue is Tissue.LESION:
            continue
        mask = small_clean.tissue_labels == tissue
        props = TISSUE_PROPERTIES[tissue]
        np.testing.assert_allclose(small_clean.s0[mask], props.s0, rtol=1e-6)
        np.testing.assert_allclose(small_clean.true_adc[mask], props.adc_um2s, rtol=1e-6)
    lesion = small_clean.lesion_labels > 0
    np.testing.assert_array_equal(lesion, small_clean.tissue_labels == Tissue.LESION)


def test_every_structure_is_present(small: Phantom) -> None:
    present = set(np.unique(small.tissue_labels).tolist())
    missing = [t.name for t in Tissue if int(t) not in present]
    assert missing == []


def test_stations_overlap_and_cover_the_grid(small: Phantom) -> None:
    for name, preset in PRESETS.items():
        phantom = small if name == "small" else None
        n_slices = preset.n_slices if phantom is None else phantom.signal.shape[1]
        stations = [
            (i * (preset.slices_per_station - preset.overlap_slices), preset.slices_per_station)
            for i in range(preset.n_stations)
        ]
        assert stations[0][0] == 0
        assert stations[-1][0] + stations[-1][1] == n_slices
    covered = np.zeros(small.signal.shape[1], dtype=int)
    for current, following in zip(small.stations, small.stations[1:], strict=False):
        overlap = current.first_slice + current.n_slices - following.first_slice
        assert overlap >= 2
    for station in small.stations:
        covered[station.first_slice : station.first_slice + station.n_slices] += 1
    assert covered.min() == 1
    assert small.truth["stations"] == [
        {"first_slice": s.first_slice, "n_slices": s.n_slices} for s in small.stations
    ]


def test_preset_sizes_match_the_issue() -> None:
    reference, large = PRESETS["reference"], PRESETS["large"]
    assert (reference.n_stations, reference.slices_per_station, reference.matrix) == (5, 50, 128)
    assert reference.b_values == (50.0, 600.0, 900.0)
    assert (large.n_stations, large.slices_per_station, large.matrix) == (6, 50, 256)
    assert large.b_values == (50.0, 400.0, 900.0, 1400.0)
    for preset in PRESETS.values():
        length = preset.n_slices * preset.slice_mm
        assert 1100.0 <= length <= 1250.0, preset.name


def test_geometry_is_head_first_axial(small: Phantom) -> None:
    affine = small.affine
    dz, dy, dx = small.spacing_mm
    np.testing.assert_allclose(affine[:3, 0], [0.0, 0.0, -dz])  # slices go down (feet)
    np.testing.assert_allclose(affine[:3, 1], [0.0, dy, 0.0])  # rows advance posterior
    np.testing.assert_allclose(affine[:3, 2], [dx, 0.0, 0.0])  # columns advance left
    # The brain is in the first slices, the femora in the last.
    brain_z = np.argwhere(small.tissue_labels == Tissue.BRAIN)[:, 0]
    femur_z = np.argwhere(small.tissue_labels == Tissue.MARROW_FEMUR)[:, 0]
    assert brain_z.max() < femur_z.min()
    assert brain_z.min() > 0  # a margin above the vertex
    # The liver is on the patient's right (negative X), the spleen on the left.
    liver = index_to_patient(affine, np.argwhere(small.tissue_labels == Tissue.LIVER).mean(0))
    spleen = index_to_patient(affine, np.argwhere(small.tissue_labels == Tissue.SPLEEN).mean(0))
    assert liver[0] < 0.0 < spleen[0]


def test_truth_is_exact_on_the_grid(small: Phantom) -> None:
    truth = small.truth
    voxel_ml = float(np.prod(small.spacing_mm)) / 1000.0
    labels = small.lesion_labels
    assert sorted(_lesions(small)) == list(range(1, int(labels.max()) + 1))
    for label, row in _lesions(small).items():
        mask = labels == label
        assert row["volume_ml"] == pytest.approx(mask.sum() * voxel_ml, rel=1e-12)
        assert row["mean_adc_um2s"] == pytest.approx(float(small.true_adc[mask].mean()), rel=1e-6)
        centroid = index_to_patient(small.affine, np.argwhere(mask).mean(axis=0))
        np.testing.assert_allclose(row["centroid_mm"], centroid, atol=1e-9)
    all_lesion = labels > 0
    assert truth["total_lesion_volume_ml"] == pytest.approx(all_lesion.sum() * voxel_ml)
    assert truth["median_adc_um2s"] == pytest.approx(
        float(np.median(small.true_adc[all_lesion])), rel=1e-6
    )
    for key in ("preset", "seed", "snr", "patient_id", "scenario", "patient_shift_mm"):
        assert key in truth
    assert truth["b_values"] == list(small.b_values)


def test_lesion_sizes_adc_and_sites(reference_clean: Phantom) -> None:
    rows = reference_clean.truth["lesions"]
    nominal = [r["nominal_volume_ml"] for r in rows]
    assert min(nominal) >= 0.3 - 1e-9
    assert min(nominal) <= 0.45
    assert 45.0 <= max(nominal) <= 50.0
    assert max(r["volume_ml"] for r in rows) > 35.0
    assert min(r["volume_ml"] for r in rows) < 1.0
    for row in rows:
        assert 600.0 <= row["nominal_adc_um2s"] <= 1700.0
        assert row["mean_adc_um2s"] == pytest.approx(row["nominal_adc_um2s"], rel=1e-5)
        assert row["bone_fraction"] >= 0.25, row
    assert np.mean([r["bone_fraction"] >= 0.85 for r in rows]) >= 0.8
    regions = {r["region"] for r in rows}
    assert {"lumbosacral_spine", "dorsal_spine", "pelvis", "thorax", "limbs"} <= regions
    bones = " ".join(r["bone"] for r in rows)
    for word in ("vertebra", "rib", "femur", "ilium", "sacrum"):
        assert word in bones


@pytest.mark.parametrize(
    ("organ", "note", "max_gap_mm"),
    [(Tissue.KIDNEY, "kidney", 15.0), (Tissue.BLADDER, "bladder", 12.0)],
)
def test_lesions_close_to_kidney_and_bladder(
    reference_clean: Phantom, organ: Tissue, note: str, max_gap_mm: float
) -> None:
    close = [r for r in reference_clean.truth["lesions"] if note in r["note"]]
    assert len(close) == 1
    distance = ndimage.distance_transform_edt(
        reference_clean.tissue_labels != organ, sampling=reference_clean.spacing_mm
    )
    gap = distance[reference_clean.lesion_labels == close[0]["label"]].min()
    assert 0.0 < gap <= max_gap_mm


def test_lesions_are_separate_components(reference_clean: Phantom, small: Phantom) -> None:
    for phantom in (reference_clean, small):
        components, count = ndimage.label(phantom.lesion_labels > 0, np.ones((3, 3, 3)))
        assert count == len(phantom.truth["lesions"])
        for label in _lesions(phantom):
            assert len(np.unique(components[phantom.lesion_labels == label])) == 1


def test_lesions_replace_marrow_not_other_lesions(small_clean: Phantom) -> None:
    marrow_ids = [int(t) for t in MARROW_TISSUES]
    assert np.isin(small_clean.tissue_labels, marrow_ids).any()
    assert small_clean.true_adc[small_clean.lesion_labels > 0].min() > 400.0


def test_snr_is_measured_in_muscle_at_the_lowest_b(small: Phantom) -> None:
    muscle = small.tissue_labels == Tissue.MUSCLE
    interior = ndimage.binary_erosion(muscle, iterations=1)
    values = small.signal[0][interior].astype(np.float64)
    measured = values.mean() / values.std()
    assert measured == pytest.approx(small.snr, rel=0.10)
    sigma = small.truth["noise_sigma"]
    background = small.tissue_labels == Tissue.BACKGROUND
    rayleigh_mean = sigma * np.sqrt(np.pi / 2.0)
    assert small.signal[0][background].mean() == pytest.approx(rayleigh_mean, rel=0.03)


def test_to_exam_is_a_valid_exam(small: Phantom) -> None:
    exam = small.to_exam()
    assert isinstance(exam, DwiExam)
    assert exam.shape == small.signal.shape
    np.testing.assert_array_equal(exam.affine, small.affine)
    assert exam.b_values == small.b_values
    assert exam.spacing_mm == small.spacing_mm
    assert exam.stations == len(small.stations)
    assert exam.patient_id == PATIENT
    assert exam.study_instance_uid.startswith("2.25.")
    assert exam.sources == ()
    assert exam.voxel_volume_ml == pytest.approx(small.truth["voxel_volume_ml"])


def test_write_truth_round_trips(small: Phantom, tmp_path: Path) -> None:
    write_truth(small, tmp_path / "truth")
    stored = json.loads((tmp_path / "truth" / "truth.json").read_text(encoding="utf-8"))
    assert stored == small.truth
    with np.load(tmp_path / "truth" / "truth.npz") as arrays:
        np.testing.assert_array_equal(arrays["lesion_labels"], small.lesion_labels)
        np.testing.assert_array_equal(arrays["true_adc"], small.true_adc)
        np.testing.assert_array_equal(arrays["tissue_labels"], small.tissue_labels)


@pytest.mark.parametrize("scenario", ["response", "partial", "progression", "stable"])
def test_scenarios_change_the_lesions_as_specified(
    time_points: dict[str, Phantom], scenario: str
) -> None:
    baseline, follow_up = time_points["baseline"], time_points[scenario]
    definition = SCENARIOS[scenario]
    before = _lesions(baseline)
    after = _lesions(follow_up)
    old = {label: row for label, row in after.items() if not row["new"]}
    assert sorted(old) == sorted(before)
    for label, row in old.items():
        assert row["baseline_label"] == label
        assert row["key"] == before[label]["key"]
        ratio = row["nominal_adc_um2s"] / before[label]["nominal_adc_um2s"]
        assert ratio == pytest.approx(definition.adc_factor, rel=1e-9)
        grid_ratio = row["mean_adc_um2s"] / before[label]["mean_adc_um2s"]
        assert grid_ratio == pytest.approx(definition.adc_factor, rel=1e-5)
        if before[label]["volume_ml"] >= 10.0:
            volume_ratio = row["volume_ml"] / before[label]["volume_ml"]
            assert volume_ratio == pytest.approx(definition.volume_factor, rel=0.2)
    total_before = sum(before[label]["volume_ml"] for label in old)
    total_after = sum(row["volume_ml"] for row in old.values())
    assert total_after / total_before == pytest.approx(definition.volume_factor, rel=0.12)
    new = [row for row in after.values() if row["new"]]
    if scenario == "progression":
        assert 2 <= len(new) <= 3
        assert all(row["baseline_label"] is None for row in new)
        assert min(row["label"] for row in new) > max(before)
        assert follow_up.truth["changes"]["new_lesion_labels"] == [row["label"] for row in new]
    else:
        assert new == []
    assert follow_up.truth["changes"]["adc_factor"] == definition.adc_factor
    assert follow_up.truth["changes"]["volume_factor"] == definition.volume_factor


def test_time_points_shift_the_patient(time_points: dict[str, Phantom]) -> None:
    shifts = {name: tuple(p.truth["patient_shift_mm"]) for name, p in time_points.items()}
    assert len(set(shifts.values())) == len(shifts)
    for shift in shifts.values():
        assert np.linalg.norm(shift) >= 1.0
        assert max(abs(v) for v in shift) <= 8.0
    baseline, stable = time_points["baseline"], time_points["stable"]
    moved = np.subtract(shifts["stable"], shifts["baseline"])
    spacing = np.array(stable.spacing_mm)
    for label, row in _lesions(stable).items():
        before = _lesions(baseline)[label]
        if before["volume_ml"] < 5.0:
            continue
        displacement = np.subtract(row["centroid_mm"], before["centroid_mm"])
        assert np.all(np.abs(displacement - moved) <= spacing[[2, 1, 0]] / 2.0 + 1e-6)
    assert baseline.study_instance_uid != stable.study_instance_uid


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"preset": "huge"}, "unknown phantom preset"),
        ({"scenario": "cured"}, "unknown phantom scenario"),
        ({"b_values": [900.0, 50.0]}, "strictly increasing"),
        ({"b_values": []}, "must not be empty"),
        ({"snr": -1.0}, "snr must be >= 0"),
        ({"seed": -2}, "seed must be a non-negative integer"),
        ({"patient_id": ""}, "patient_id must not be empty"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_phantom(**kwargs)  # type: ignore[arg-type]


def test_custom_b_values_are_used() -> None:
    phantom = make_phantom("small", b_values=[0, 400, 1400], snr=0.0)
    assert phantom.b_values == (0.0, 400.0, 1400.0)
    assert phantom.signal.shape[0] == 3
    np.testing.assert_allclose(phantom.signal[0], phantom.s0, rtol=1e-6)


def test_lesion_adc_varies_inside_larger_lesions(reference_clean: Phantom) -> None:
    spreads = []
    for label, row in _lesions(reference_clean).items():
        if row["volume_ml"] >= 5.0:
            values = reference_clean.true_adc[reference_clean.lesion_labels == label]
            spreads.append(float(values.max() - values.min()) / row["mean_adc_um2s"])
    assert spreads
    assert max(spreads) > 0.1
    assert max(spreads) <= 0.5 + 1e-6  # |g| <= 0.25 over r^2 in [0, 1]


@pytest.mark.slow
def test_large_preset_is_feasible() -> None:
    phantom = make_phantom("large", patient_id=PATIENT)
    assert phantom.signal.shape == (4, 280, 256, 256)
    assert phantom.signal.dtype == np.float32
    assert phantom.signal.nbytes < 320e6
    assert len(phantom.truth["lesions"]) == len(_lesions(phantom)) >= 12
    assert not phantom.signal.flags.writeable
