"""Every number the processing uses, with its default and where it comes from.

:class:`ProcessingSettings` is a frozen dataclass: one instance describes one
processing run and :func:`settings_digest` gives it a short stable hash that
goes into the results (and into the result UIDs), so that a change of any
threshold yields new objects in PACS. ``docs/algorithm.md`` explains each
field; each field's documentation (its ``metadata["help"]``, written with
:func:`doc`) gives the short version and the source, and is what the settings
reference (``docs/settings.md``) shows.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields

__all__ = ["HELP_KEY", "ProcessingSettings", "doc", "settings_as_dict", "settings_digest"]

#: The key of a settings field's documentation in its ``metadata``.
HELP_KEY = "help"


def doc(text: str) -> dict[str, str]:
    """A settings field's documentation, as its ``metadata``.

    Every settings dataclass (these and the node's, :mod:`service.settings`)
    documents its fields this way, so that the settings reference is generated
    from the model as data, without reading source code.

    Parameters
    ----------
    text
        What the field does, its unit and where its default comes from.
    """
    return {HELP_KEY: text}


@dataclass(frozen=True, slots=True)
class ProcessingSettings:
    """Thresholds and options of the processing pipeline (see ``docs/algorithm.md``)."""

    # --- noise and ADC fit -------------------------------------------------------
    adc_min_b: float = field(
        default=50.0,
        metadata=doc(
            "Lowest b-value (s/mm2) used by the ADC fit: b 50-100 (Barnes 2018; the TTL case study "
            "used b50/600/900); perfusion inflates ADC below ~100, so raise it (e.g. 100-300) when "
            "b-values allow (PMC3411587)."
        ),
    )
    adc_fit_iterations: int = field(
        default=2,
        metadata=doc(
            "Weighted log-linear passes: 1 = weights from measured S^2, 2 = re-weighted with the "
            "fitted signal (Veraart et al., NeuroImage 2013)."
        ),
    )
    adc_max_um2s: float = field(
        default=5000.0,
        metadata=doc("ADC above this is noise (open-source convention: 5e-3 mm2/s)."),
    )
    signal_floor_sigma: float = field(
        default=0.5,
        metadata=doc("Signal is clipped at this multiple of the noise sigma before the logarithm."),
    )
    adc_min_snr: float = field(
        default=3.0,
        metadata=doc(
            "A voxel's ADC is valid only where the lowest-b signal exceeds this multiple of sigma "
            "(Rician bias of magnitude data becomes severe below SNR ~3; Gudbjartsson & Patz, MRM "
            "1995)."
        ),
    )
    zero_background_fraction: float = field(
        default=0.2,
        metadata=doc(
            "When at least this share of the lowest-b voxels is exactly 0, the air has been masked "
            "(or the data are noise-free) and sigma is taken as 0."
        ),
    )

    # --- computed high-b -----------------------------------------------------------
    computed_b_values: tuple[float, ...] = field(
        default=(1000.0,),
        metadata=doc(
            "Computed-b images produced (s/mm2). TTL case study: b1000-1200; up to 2000 supported."
        ),
    )
    segmentation_b_value: float = field(
        default=1000.0,
        metadata=doc(
            "Computed b-value of the image that is thresholded (TTL case study: 1000-1200)."
        ),
    )

    # --- body mask -----------------------------------------------------------------
    body_threshold_snr: float = field(
        default=5.0,
        metadata=doc(
            "Body = lowest-b signal above this multiple of sigma (Rayleigh air exceeds 5 sigma "
            "with probability exp(-12.5) ~ 4e-6), holes filled per slice."
        ),
    )
    body_threshold_p99_fraction: float = field(
        default=0.02,
        metadata=doc(
            "... or this share of the 99th centile of the lowest-b signal (fluid, spleen, brain at "
            "b50 are ~5-10x muscle, so this is ~0.1-0.2x muscle: above suppressed fat and lung)."
        ),
    )
    body_min_component_fraction: float = field(
        default=0.05,
        metadata=doc(
            "Body components smaller than this share of the largest are dropped (noise, coil "
            "artefacts); arms and legs are connected to the trunk over z."
        ),
    )

    # --- tumour threshold and ADC window --------------------------------------------
    reference_adc_range_um2s: tuple[float, float] = field(
        default=(1200.0, 1800.0),
        metadata=doc(
            "Voxels whose ADC lies in this range (skeletal muscle 1.4-1.6e-3 mm2/s, the most "
            "abundant soft tissue of the body) give the reference signal: the median computed-b "
            "signal of body voxels in this ADC range."
        ),
    )
    threshold_smoothing_mm: float = field(
        default=1.5,
        metadata=doc(
            "In-slice Gaussian smoothing (sigma, mm) of the computed-b image before the threshold: "
            "halves the noise so that organs just below the threshold (liver) do not break into "
            "speckles above it; small next to the 3-4 mm pixels of WB-DWI."
        ),
    )
    threshold_ratio: float = field(
        default=1.4,
        metadata=doc(
            "High-b threshold in multiples of the reference (muscle) signal at the segmentation "
            "b-value. Replaces the TTL case study's fixed ~100 AU, which depends on scanner units. "
            "At b1000, "
            "active bone disease (ADC 0.7-1.0e-3) is 2-5x muscle, but lesions with ADC near "
            "1.5-1.7e-3 (responding, MET-RADS-P) fade to ~1.5x: 1.4 keeps them while normal marrow "
            "(~1.1x) and muscle stay below; brighter normal tissues are removed by the rules "
            "below."
        ),
    )
    adc_window_um2s: tuple[float, float] = field(
        default=(450.0, 2200.0),
        metadata=doc(
            "Tumour voxels have ADC in this window: the lower bound lies just above the normal "
            "marrow's population mean (422 +/- 67 um2/s, PMC8161193; 0.36e-3, Koutoulidis 2017), "
            "so a voxel below it is more likely marrow (or T2-dark noise) than disease in any "
            "patient; the normal marrow above it is removed by the patient's own marrow test "
            "(``marrow_adc_margin_sd``), which lets hypercellular disease of ADC 450-650 through "
            "(500 lost 25-30 % of the tumour volume when lesion ADCs were 0.75 x the phantom's). "
            "The upper bound keeps responding disease (> 1400-1500, MET-RADS-P) and rejects free "
            "fluid (CSF, urine ~3.0e-3)."
        ),
    )

    # --- normal structures ----------------------------------------------------------
    exclude_head: bool = field(
        default=False,
        metadata=doc(
            "Exclude everything cranial to the neck (brain, salivary glands, Waldeyer's ring), as "
            "Blackledge et al. 2014 segment below C4 and the TTL case study removes the brain."
        ),
    )
    skull_shell_mm: float = field(
        default=8.0,
        metadata=doc(
            "With the head included: the cranial vault's shell kept for skull lesions is this deep "
            "below the body outline. On STIR DWI the scalp fat is dark, so the outline is the "
            "skin or the skull; the skull is 5-7 mm thick and the brain lies beyond CSF and "
            "meninges, about 8-12 mm below the outer table."
        ),
    )
    skull_vault_fraction: float = field(
        default=0.5,
        metadata=doc(
            "With the head included: the vault is the upper half of the vertex-to-neck distance "
            "(above the skull base; the external auditory meatus lies about half-way); below it "
            "the face, salivary glands and tonsils are excluded."
        ),
    )
    neck_search_mm: tuple[float, float] = field(
        default=(120.0, 330.0),
        metadata=doc(
            "The neck is the narrowest body cross-section this far below the top of the body "
            "(adult head height vertex-chin ~ 220-250 mm; anthropometric surveys)."
        ),
    )
    neck_max_area_ratio: float = field(
        default=0.75,
        metadata=doc(
            "A neck is accepted only where its cross-section is below this share of the largest "
            "head cross-section above it (otherwise the exam does not start at the head)."
        ),
    )
    cranio_caudal_limit_z_mm: float | None = field(
        default=None,
        metadata=doc("Optional: nothing is segmented cranial to this patient Z (LPS, mm)."),
    )
    cord_min_length_mm: float = field(
        default=75.0,
        metadata=doc(
            "Spinal cord: candidate voxels in cranio-caudal runs at least this long (three "
            "vertebral levels; focal bone lesions are shorter, diffuse disease is wider)."
        ),
    )
    cord_max_area_mm2: float = field(
        default=300.0,
        metadata=doc(
            "... whose in-slice blob is at most this large (cord ~80 mm2, ~1 cm diameter, blurred "
            "by 3-4 mm pixels; a vertebral body is ~1000-1500 mm2)."
        ),
    )
    fluid_adc_um2s: float = field(
        default=1800.0,
        metadata=doc(
            "Regions whose locally averaged ADC reaches this value are kidney (1.94e-3, Jafar "
            "2016) or fluid (CSF, urine, bile, bowel content ~3e-3) and are removed ..."
        ),
    )
    fluid_min_volume_ml: float = field(
        default=5.0,
        metadata=doc(
            "... when at least this large (smaller ones are left to the voxel ADC window)."
        ),
    )
    organ_min_volume_ml: float = field(
        default=100.0,
        metadata=doc(
            "Components at least this large and thick are solid organs (spleen 107-314 ml, "
            "Prassopoulos 1997; liver, brain) ..."
        ),
    )
    organ_min_thickness_mm: float = field(
        default=15.0,
        metadata=doc(
            "... when their largest inscribed sphere has at least this radius (marrow disease is "
            "confined by cortical bone: vertebral bodies, ribs and the iliac wings are thinner)."
        ),
    )

    marrow_adc_um2s: tuple[float, float] = field(
        default=(150.0, 650.0),
        metadata=doc(
            "Normal red marrow: ADC ~ 360-450 um2/s (Koutoulidis 2017), below the 655 "
            "normal/abnormal cut-off (Messiou 2011); the range allows for fit noise."
        ),
    )
    marrow_min_signal_ratio: float = field(
        default=0.15,
        metadata=doc(
            "... and a lowest-b signal of at least this share of the reference (muscle) lowest-b "
            "signal (red marrow ~0.3-0.5 of muscle after STIR; suppressed fat far below)."
        ),
    )
    bone_contact_min_fraction: float = field(
        default=0.025,
        metadata=doc(
            "A component is bone disease only when at least this share of the voxels just around "
            "it is marrow-like (bone lesions are embedded in marrow; bowel, prostate, testes and "
            "nodes are wrapped in fat). Small on purpose: a lesion that fills a thin bone (rib, "
            "transverse process) touches marrow only at its ends. 0 disables the rule."
        ),
    )
    marrow_reference_min_voxels: int = field(
        default=1000,
        metadata=doc(
            "The patient's own normal-marrow signal and ADC (median and robust SD over the "
            "marrow-like voxels) are estimated when at least this many voxels are marrow-like (~50 "
            "ml on a 3.3 x 3.3 x 5 mm grid; an adult's red marrow is > 1000 ml); below it the "
            "marrow rule is skipped and the verdict says so."
        ),
    )
    marrow_signal_margin_sd: float = field(
        default=3.0,
        metadata=doc(
            "A candidate is kept when its smoothed high-b signal exceeds the patient's marrow "
            "median by this many robust SDs (focal lesions are brighter than the surrounding "
            "marrow: MY-RADS, Messiou 2019) ..."
        ),
    )
    marrow_adc_margin_sd: float = field(
        default=3.0,
        metadata=doc(
            "... or its ADC exceeds the marrow median ADC by this many robust SDs (normal marrow "
            "422 +/- 67 um2/s, PMC8161193; disease raises it, Messiou 2011). A voxel within the "
            "marrow's own distribution in both is normal marrow, however bright the marrow is "
            "(normal marrow is 3.2 +/- 0.9 x muscle at b900, PMC8161193). 3 SD: ~0.3 % of normal "
            "marrow voxels pass each test by chance, as scattered voxels the minimum volume drops."
        ),
    )
    marrow_bright_adc_margin_sd: float = field(
        default=0.5,
        metadata=doc(
            "The signal test also needs an ADC above the marrow median by this many robust SDs: a "
            "marrow voxel next to a lesion is brightened by the in-slice smoothing (and partial "
            "volume) but keeps the marrow's ADC; disease raises the ADC (Messiou 2011)."
        ),
    )
    marrow_level_mm: float = field(
        default=100.0,
        metadata=doc(
            "The marrow median and SD of the two tests above are taken over the marrow-like voxels "
            "within this cranio-caudal window around each slice (red marrow of spine and pelvis "
            "is brighter than the fatty marrow of skull and femora; one body-wide spread would put "
            "the limit far above the spine's marrow). 0: the whole exam."
        ),
    )
    marrow_level_min_voxels: int = field(
        default=300,
        metadata=doc("A window with fewer marrow-like voxels uses the whole exam's median and SD."),
    )

    # --- components -----------------------------------------------------------------
    min_lesion_volume_ml: float = field(
        default=0.5,
        metadata=doc(
            "Smallest reported component: about a 1 cm sphere (0.52 ml). Focal lesions are > 5 mm "
            "(IMWG / MY-RADS) and >= 1 ml is 'clinically relevant'; below ~10 voxels of a 3x3x5 mm "
            "grid, noise clusters dominate."
        ),
    )
    lesion_connectivity: int = field(
        default=3,
        metadata=doc(
            "Connectivity rank of lesions: 1 = faces (6-neighbourhood), 3 = faces, edges and "
            "corners (26-neighbourhood, as lesion-wise metrics such as autoPET use)."
        ),
    )

    # --- body regions of lesions ------------------------------------------------------
    region_levels: tuple[float, float, float, float, float] = field(
        default=(0.07, 0.44, 0.60, 0.67, 0.80),
        metadata=doc(
            "Vertebral/pelvic levels as fractions of the neck-to-crotch distance: T1, L1, iliac "
            "crest, L5/S1, hip joint. From adult segment proportions (Drillis & Contini 1966: neck "
            "~0.85 H, iliac crest ~0.59 H, greater trochanter ~0.53 H, crotch ~0.48 H; lumbar "
            "spine ~0.10 H). Expect errors of one or two vertebral levels."
        ),
    )
    spine_halfwidth_mm: float = field(
        default=35.0,
        metadata=doc(
            "The spine column: within this distance of the trunk midline (vertebral bodies are "
            "30-50 mm wide) ..."
        ),
    )
    spine_anterior_margin_mm: float = field(
        default=30.0,
        metadata=doc(
            "... and not more than this anterior to the trunk's centroid (the lumbar lordosis "
            "brings L4-L5 forward to about the middle of the antero-posterior depth)."
        ),
    )
    lateral_fraction: float = field(
        default=0.6,
        metadata=doc(
            "At hip level, lesions farther than this share of the trunk half-width from the "
            "midline are femoral (limbs); between L1 and the iliac crest they are lower ribs "
            "(thorax)."
        ),
    )

    # --- statistics -----------------------------------------------------------------
    histogram_range_um2s: tuple[float, float] = field(
        default=(0.0, 3000.0),
        metadata=doc("ADC histogram range (the TTL case study's histograms span 0-3000 um2/s)."),
    )
    histogram_bin_um2s: float = field(default=25.0, metadata=doc("ADC histogram bin width."))
    green_lower_um2s: float = field(
        default=1500.0,
        metadata=doc(
            "Green class: ADC >= 1500 ('highly likely responding', TTL case study; "
            "MET-RADS-P > 1400)."
        ),
    )
    yellow_lower_default_um2s: float = field(
        default=1000.0,
        metadata=doc(
            "Yellow lower bound when no baseline p95 is known: MET-RADS-P RAC 2 counts a rise from "
            "<= 1000 as response (Padhani 2017); the TTL case study's baselines gave 1127 and "
            "1256."
        ),
    )

    # --- bounded output ---------------------------------------------------------------
    max_reported_lesions: int = field(
        default=20,
        metadata=doc(
            "Lesions listed one by one (lesion table, SEG lesion segments, SR lesion groups): the "
            'largest this many components. The others are counted and summed as "other foci" '
            "(``ExamStats.other_foci_count`` / ``other_foci_ml``); they stay in the tumour mask, "
            "the tDV, the histogram and the ADC classes, and the verdict says that the table is "
            'not complete. A noisy exam must not become hundreds of "lesions".'
        ),
    )

    # --- reliability verdict (processing.quality; (review, unreliable) limits) ----------
    quality_marrow_ratio_limits: tuple[float, float] = field(
        default=(4.0, 6.0),
        metadata=doc(
            "Normal marrow over muscle at the segmentation b-value: above 4 (the edge of the "
            "validated envelope; population 3.2 +/- 0.9 at b900, PMC8161193) review, above 6 "
            "unreliable (only lesions far brighter than marrow stand out)."
        ),
    )
    quality_marrow_adc_limits_um2s: tuple[float, float] = field(
        default=(600.0, 700.0),
        metadata=doc(
            "Median ADC of the marrow-like voxels: normal marrow 422 +/- 67 um2/s (PMC8161193); "
            "above 600 it nears the 655 normal/abnormal cut-off (Messiou 2011) and the ADC no "
            "longer separates marrow from disease (review); above 700 unreliable."
        ),
    )
    quality_snr_limits: tuple[float, float] = field(
        default=(8.0, 5.0),
        metadata=doc(
            "Muscle SNR at the highest acquired b-value (background sigma): below 8 review, "
            "below 5 unreliable. The measure reads 0.8-1.0 x the phantom's nominal SNR; on the "
            "robustness sweep nominal SNR 10 kept tDV within 4 % in all 40 cases and SNR 5 gave "
            "up to -50 %; SNR 10-20 at the highest b is ordinary in WB-DWI, so a limit at 12 "
            "flagged ordinary exams (the reference preset reads 12.0)."
        ),
    )
    quality_marrow_segmented_limits: tuple[float, float] = field(
        default=(0.10, 0.30),
        metadata=doc("Share of the marrow-like voxels that end in the tumour mask."),
    )
    quality_adc_edge_um2s: float = field(
        default=50.0,
        metadata=doc("Width of the band at each end of the ADC window (two histogram bins) ..."),
    )
    quality_adc_edge_limits: tuple[float, float] = field(
        default=(0.35, 0.60),
        metadata=doc(
            "... and the share of the segmented volume in that band that raises review / "
            "unreliable (mass piled against an edge: the window cuts through a tissue)."
        ),
    )
    quality_marrow_body_fraction: float = field(
        default=0.05,
        metadata=doc(
            "Expected marrow volume as a share of the body volume in the field of view (ICRP "
            "Publication 89 reference adults: bone marrow ~5 % of body mass) ..."
        ),
    )
    quality_tdv_marrow_limits: tuple[float, float] = field(
        default=(0.25, 0.60),
        metadata=doc(
            "... and tDV over that volume that raises review / unreliable (whole bones or organs "
            "segmented)."
        ),
    )
    quality_small_components_limits: tuple[float, float] = field(
        default=(150.0, 400.0),
        metadata=doc(
            "Candidate components dropped as under ``min_lesion_volume_ml``: many are noise "
            "clusters, the sign of a noisy high-b image."
        ),
    )
    quality_marrow_gap_area_mm2: float = field(
        default=300.0,
        metadata=doc(
            "A trunk slice (between neck and thighs) 'has no marrow' when its marrow-like voxels "
            "cover less than this (a vertebral body is 1000-1500 mm2; every trunk level holds "
            "vertebrae, posterior elements even at disc levels) ..."
        ),
    )
    quality_marrow_gap_limits_mm: tuple[float, float] = field(
        default=(50.0, 100.0),
        metadata=doc(
            "... and a cranio-caudal run of such slices longer than this raises review / "
            "unreliable (an intervertebral disc is 5-12 mm high: longer gaps mean marrow replaced "
            "by diffuse infiltration, MY-RADS 'diffuse', which the bone-contact rule cannot "
            "segment)."
        ),
    )
    quality_largest_component_limits_ml: tuple[float, float] = field(
        default=(100.0, 300.0),
        metadata=doc(
            "Largest segmented component: above 100 ml (the solid-organ rule's size) review, above "
            "300 ml unreliable (bowel or an organ against bone, or bulky disease to confirm)."
        ),
    )
    quality_pixel_limits_mm: tuple[float, float] = field(
        default=(4.5, 6.0),
        metadata=doc(
            "In-plane pixel size: WB-DWI protocols use 1.5-4 mm; coarser voxels merge lesions with "
            "marrow and organs."
        ),
    )
    quality_slice_limits_mm: tuple[float, float] = field(
        default=(8.0, 10.0), metadata=doc("Slice thickness: WB-DWI protocols use 4-8 mm.")
    )

    def __post_init__(self) -> None:
        problems = [
            *self._quality_limit_problems(),
            *self._count_problems(),
            *self._range_problems(),
        ]
        if problems:
            raise ValueError("invalid processing settings: " + "; ".join(problems))

    def _quality_limit_problems(self) -> list[str]:
        """The (review, unreliable) limit pairs of the quality checks."""
        problems: list[str] = []
        for name in (
            "quality_marrow_ratio_limits",
            "quality_marrow_adc_limits_um2s",
            "quality_marrow_segmented_limits",
            "quality_adc_edge_limits",
            "quality_tdv_marrow_limits",
            "quality_small_components_limits",
            "quality_marrow_gap_limits_mm",
            "quality_largest_component_limits_ml",
            "quality_pixel_limits_mm",
            "quality_slice_limits_mm",
        ):
            review, unreliable = getattr(self, name)
            if not 0 <= review <= unreliable:
                problems.append(f"{name} must be (review, unreliable), 0 <= review <= unreliable")
        snr_review, snr_unreliable = self.quality_snr_limits
        if not snr_review >= snr_unreliable >= 0:
            problems.append(
                "quality_snr_limits must be (review, unreliable), review >= unreliable >= 0"
            )
        return problems

    def _count_problems(self) -> list[str]:
        """Lengths, voxel counts, iterations and b-values."""
        problems: list[str] = []
        if self.marrow_level_mm < 0:
            problems.append("marrow_level_mm must be >= 0")
        if self.marrow_reference_min_voxels < 1 or self.marrow_level_min_voxels < 1:
            problems.append("marrow_reference_min_voxels and marrow_level_min_voxels must be >= 1")
        if self.adc_fit_iterations < 1:
            problems.append("adc_fit_iterations must be >= 1")
        if not self.computed_b_values:
            problems.append("computed_b_values must not be empty")
        problems.extend(
            f"computed b-value {b} must be in (0, 5000]"
            for b in (*self.computed_b_values, self.segmentation_b_value)
            if not 0 < b <= 5000
        )
        return problems

    def _range_problems(self) -> list[str]:
        """ADC ranges, connectivity, histogram bins and the quantities that must be positive."""
        problems: list[str] = []
        for name in ("reference_adc_range_um2s", "adc_window_um2s", "histogram_range_um2s"):
            low, high = getattr(self, name)
            if not low < high:
                problems.append(f"{name} must be (low, high) with low < high, got {(low, high)}")
        if self.lesion_connectivity not in (1, 2, 3):
            problems.append("lesion_connectivity must be 1, 2 or 3")
        if self.histogram_bin_um2s <= 0:
            problems.append("histogram_bin_um2s must be positive")
        if self.max_reported_lesions < 1:
            problems.append("max_reported_lesions must be >= 1")
        low_mm, high_mm = self.neck_search_mm
        if not 0 <= low_mm < high_mm:
            problems.append("neck_search_mm must be (low, high) with 0 <= low < high")
        for name in (
            "threshold_ratio",
            "min_lesion_volume_ml",
            "cord_min_length_mm",
            "cord_max_area_mm2",
            "fluid_min_volume_ml",
            "organ_min_volume_ml",
            "organ_min_thickness_mm",
            "skull_shell_mm",
            "marrow_min_signal_ratio",
            "marrow_signal_margin_sd",
            "marrow_adc_margin_sd",
            "marrow_bright_adc_margin_sd",
            "quality_adc_edge_um2s",
            "quality_marrow_body_fraction",
            "quality_marrow_gap_area_mm2",
            "adc_max_um2s",
            "body_threshold_snr",
        ):
            if not getattr(self, name) > 0:
                problems.append(f"{name} must be positive")
        return problems


def settings_digest(settings: ProcessingSettings) -> str:
    """A 12-hex-digit SHA-256 digest of every field (stable across runs and platforms)."""
    payload = {f.name: _canonical(getattr(settings, f.name)) for f in fields(settings)}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def _canonical(value: object) -> object:
    if isinstance(value, tuple):
        return [_canonical(v) for v in value]
    if isinstance(value, float):
        return repr(value)
    return value


def settings_as_dict(settings: ProcessingSettings) -> dict[str, object]:
    """Every field as JSON-ready values (tuples become lists)."""
    return {name: _plain(value) for name, value in asdict(settings).items()}


def _plain(value: object) -> object:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value
