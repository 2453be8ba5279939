"""The reliability verdict of one exam's result: ``ok``, ``review`` or ``unreliable``.

A result is only worth what the reader knows about its limits. Each check that
can predict a wrong tumour load (normal marrow too bright or too close to the
lesions' ADC, low SNR at the highest b, segmented volume implausible against the
skeleton, many small components, incomplete coverage of the body, ...) adds a
:class:`QualityFinding` with its measured value, its limit and a sentence in
plain words. The verdict is the most severe finding's; no finding is ``ok``.

The checks run in :mod:`processing.pipeline` (image-based signals) and in the
node (coverage of the exam: stations or b-values missing), which merges its own
findings with :meth:`QualityAssessment.with_findings`. The numbers are always
reported; the verdict says how far to trust them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import Any

from processing.settings import ProcessingSettings

__all__ = ["ImageSignals", "QualityAssessment", "QualityFinding", "Verdict", "assess_image"]


class Verdict(Enum):
    """How far the numbers of one result can be trusted (ordered by severity)."""

    OK = "ok"
    REVIEW = "review"
    UNRELIABLE = "unreliable"

    @property
    def severity(self) -> int:
        """0 for ``ok``, 1 for ``review``, 2 for ``unreliable``."""
        return _SEVERITY[self]

    @property
    def meaning(self) -> str:
        """One sentence for the reader."""
        return _MEANING[self]


_SEVERITY = {Verdict.OK: 0, Verdict.REVIEW: 1, Verdict.UNRELIABLE: 2}
_MEANING = {
    Verdict.OK: "No check found a reason to doubt the automatic segmentation.",
    Verdict.REVIEW: (
        "The automatic segmentation may be wrong: check the segmentation before using the numbers."
    ),
    Verdict.UNRELIABLE: (
        "The automatic segmentation is likely wrong: the numbers are reported for reference "
        "only and must not be used without correcting the segmentation."
    ),
}


@dataclass(frozen=True, slots=True)
class QualityFinding:
    """One reason for doubt, with the measured value and the limit it crossed.

    ``code`` is a stable identifier (for metrics, tests and translations);
    ``message`` is a complete sentence in plain words that names the value.
    """

    code: str
    severity: Verdict
    message: str
    value: float | None = None
    limit: float | None = None

    def __post_init__(self) -> None:
        if self.severity is Verdict.OK:
            raise ValueError(
                f"a quality finding must be review or unreliable, not ok ({self.code})"
            )
        if not self.code or not self.message:
            raise ValueError("a quality finding needs a code and a message")

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready copy."""
        return {
            "code": self.code,
            "severity": self.severity.value,
            "message": self.message,
            "value": self.value,
            "limit": self.limit,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QualityFinding:
        """Inverse of :meth:`as_dict`."""
        value = data.get("value")
        limit = data.get("limit")
        return cls(
            code=str(data["code"]),
            severity=Verdict(data["severity"]),
            message=str(data["message"]),
            value=None if value is None else float(value),
            limit=None if limit is None else float(limit),
        )


@dataclass(frozen=True, slots=True)
class QualityAssessment:
    """The verdict, the findings behind it and every measured signal.

    ``measures`` holds each signal the checks looked at (also those that passed),
    so that a reader or an audit can see how close a result was to a limit.
    """

    findings: tuple[QualityFinding, ...] = ()
    measures: Mapping[str, float | int | None] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def verdict(self) -> Verdict:
        """The most severe finding's severity; ``ok`` without findings."""
        worst = Verdict.OK
        for finding in self.findings:
            if finding.severity.severity > worst.severity:
                worst = finding.severity
        return worst

    def with_findings(
        self,
        findings: Iterable[QualityFinding],
        measures: Mapping[str, float | int | None] | None = None,
    ) -> QualityAssessment:
        """A copy with more findings (a finding whose code is already present replaces it)."""
        extra = tuple(findings)
        codes = {f.code for f in extra}
        kept = tuple(f for f in self.findings if f.code not in codes)
        merged = dict(self.measures)
        merged.update(measures or {})
        return QualityAssessment(findings=kept + extra, measures=MappingProxyType(merged))

    def as_dict(self) -> dict[str, Any]:
        """The ``quality`` object of ``measurements.json``."""
        verdict = self.verdict
        return {
            "verdict": verdict.value,
            "meaning": verdict.meaning,
            "reasons": [f.as_dict() for f in self.findings],
            "measures": dict(self.measures),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QualityAssessment:
        """Inverse of :meth:`as_dict` (the verdict is recomputed from the reasons)."""
        findings = tuple(QualityFinding.from_dict(r) for r in data.get("reasons", ()))
        measures = {str(k): v for k, v in dict(data.get("measures", {})).items()}
        return cls(findings=findings, measures=MappingProxyType(measures))


@dataclass(frozen=True, slots=True)
class ImageSignals:
    """What the pipeline measured on one exam's images that predicts a wrong tumour load.

    Every value is a plain number measured by :func:`processing.pipeline.process_exam`
    (``None`` where it could not be measured); :func:`assess_image` turns them into
    findings. Signal ratios are at the segmentation b-value.

    Attributes
    ----------
    marrow_signal_ratio
        Median (smoothed) high-b signal of the marrow-like voxels / muscle reference.
    marrow_adc_um2s
        Median ADC of the marrow-like voxels.
    marrow_voxels
        Number of marrow-like voxels (the patient's marrow reference needs enough).
    snr_high_b
        Muscle signal at the highest acquired b-value / background sigma
        (``None`` when the background is masked or noise-free: sigma unknown).
    marrow_segmented_fraction
        Share of the marrow-like voxels that ended in the tumour mask.
    adc_low_edge_fraction, adc_high_edge_fraction
        Share of the segmented volume whose ADC lies within ``quality_adc_edge_um2s``
        of the lower / upper bound of the ADC window.
    tdv_ml
        Total diffusion volume.
    body_ml
        Volume of the body mask.
    small_components
        Candidate components dropped for being under ``min_lesion_volume_ml`` (noise).
    components
        Components in the final mask.
    largest_component_ml
        Volume of the largest of them.
    marrow_gap_mm
        Longest cranio-caudal run of trunk slices (neck to thighs) with almost no
        marrow-like voxels (under ``quality_marrow_gap_area_mm2``).
    spacing_mm
        Voxel size (slice, row, column).
    neck_found, crotch_found
        Whether the body outline showed a neck (exam starts at the head) and separate
        thighs (exam reaches the thighs).
    """

    marrow_signal_ratio: float | None
    marrow_adc_um2s: float | None
    marrow_voxels: int
    snr_high_b: float | None
    marrow_segmented_fraction: float | None
    adc_low_edge_fraction: float
    adc_high_edge_fraction: float
    tdv_ml: float
    body_ml: float
    small_components: int
    components: int
    largest_component_ml: float
    marrow_gap_mm: float
    spacing_mm: tuple[float, float, float]
    neck_found: bool
    crotch_found: bool

    def measures(self) -> dict[str, float | int | None]:
        """Every signal as a flat JSON-ready mapping (the ``measures`` of the verdict)."""
        dz, dy, dx = self.spacing_mm
        return {
            "marrow_signal_ratio": _rounded(self.marrow_signal_ratio),
            "marrow_adc_um2s": _rounded(self.marrow_adc_um2s),
            "marrow_voxels": self.marrow_voxels,
            "snr_high_b": _rounded(self.snr_high_b),
            "marrow_segmented_fraction": _rounded(self.marrow_segmented_fraction),
            "adc_low_edge_fraction": _rounded(self.adc_low_edge_fraction),
            "adc_high_edge_fraction": _rounded(self.adc_high_edge_fraction),
            "tdv_ml": _rounded(self.tdv_ml),
            "body_ml": _rounded(self.body_ml),
            "small_components": self.small_components,
            "components": self.components,
            "largest_component_ml": _rounded(self.largest_component_ml),
            "marrow_gap_mm": _rounded(self.marrow_gap_mm),
            "slice_mm": _rounded(dz),
            "pixel_mm": _rounded(max(dy, dx)),
            "neck_found": int(self.neck_found),
            "crotch_found": int(self.crotch_found),
        }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)


def _grade(value: float, limits: tuple[float, float], *, above: bool = True) -> Verdict:
    """``review`` past the first limit, ``unreliable`` past the second (above or below)."""
    review, unreliable = limits
    if above:
        if value > unreliable:
            return Verdict.UNRELIABLE
        return Verdict.REVIEW if value > review else Verdict.OK
    if value < unreliable:
        return Verdict.UNRELIABLE
    return Verdict.REVIEW if value < review else Verdict.OK


def _graded(
    code: str,
    value: float,
    limits: tuple[float, float],
    message: Callable[[float], str],
    *,
    above: bool = True,
) -> list[QualityFinding]:
    """The finding ``code`` when ``value`` is past a limit; ``message`` is given that limit."""
    severity = _grade(value, limits, above=above)
    if severity is Verdict.OK:
        return []
    limit = limits[1] if severity is Verdict.UNRELIABLE else limits[0]
    return [QualityFinding(code, severity, message(limit), value=value, limit=limit)]


def _marrow_findings(signals: ImageSignals, settings: ProcessingSettings) -> list[QualityFinding]:
    """The patient's normal marrow: found, how bright, what ADC."""
    findings: list[QualityFinding] = []
    if signals.marrow_voxels < settings.marrow_reference_min_voxels:
        findings.append(
            QualityFinding(
                "marrow_not_found",
                Verdict.REVIEW,
                f"Only {signals.marrow_voxels} voxels look like normal marrow (at least "
                f"{settings.marrow_reference_min_voxels} needed): the patient's marrow signal "
                "could not be estimated, so normal marrow may be segmented as disease.",
                value=float(signals.marrow_voxels),
                limit=float(settings.marrow_reference_min_voxels),
            )
        )
    if (ratio := signals.marrow_signal_ratio) is not None:
        findings += _graded(
            "marrow_bright",
            ratio,
            settings.quality_marrow_ratio_limits,
            lambda limit: (
                f"Normal marrow is {ratio:.1f} x muscle on the computed "
                f"b{settings.segmentation_b_value:g} image (limit {limit:g}): "
                "lesions no brighter than this marrow cannot be told from it."
            ),
        )
    if (adc := signals.marrow_adc_um2s) is not None:
        findings += _graded(
            "marrow_adc_high",
            adc,
            settings.quality_marrow_adc_limits_um2s,
            lambda limit: (
                f"Normal marrow has a median ADC of {adc:.0f} um2/s (limit "
                f"{limit:g}): close to that of active disease, so the ADC "
                "separates them poorly (diffuse infiltration or red-marrow reconversion?)."
            ),
        )
    return findings


def _snr_findings(signals: ImageSignals, settings: ProcessingSettings) -> list[QualityFinding]:
    """SNR at the highest b."""
    findings: list[QualityFinding] = []
    if (snr := signals.snr_high_b) is not None:
        findings += _graded(
            "low_snr",
            snr,
            settings.quality_snr_limits,
            lambda limit: (
                f"The signal-to-noise ratio of muscle at the highest b-value is "
                f"{snr:.1f} (limit {limit:g}): noise may be "
                "segmented and the ADC is biased."
            ),
            above=False,
        )
    return findings


def _segmentation_findings(
    signals: ImageSignals, settings: ProcessingSettings
) -> list[QualityFinding]:
    """What was segmented: marrow in the mask, ADC window edges, volumes, noise, marrow gaps."""
    findings: list[QualityFinding] = []
    if (segmented := signals.marrow_segmented_fraction) is not None:
        findings += _graded(
            "marrow_segmented",
            segmented,
            settings.quality_marrow_segmented_limits,
            lambda limit: (
                f"{100 * segmented:.1f} % of the normal-looking marrow is in "
                f"the tumour mask (limit {100 * limit:g} %): normal marrow may "
                "be segmented as disease."
            ),
        )
    low, high = settings.adc_window_um2s
    edge = settings.quality_adc_edge_um2s
    for code, fraction, where in (
        ("adc_low_edge", signals.adc_low_edge_fraction, f"{low:g}-{low + edge:g}"),
        ("adc_high_edge", signals.adc_high_edge_fraction, f"{high - edge:g}-{high:g}"),
    ):
        if signals.tdv_ml <= 0:
            continue

        def edge_message(limit: float, fraction: float = fraction, where: str = where) -> str:
            return (
                f"{100 * fraction:.0f} % of the segmented volume has an ADC of {where} um2/s, at "
                f"the edge of the ADC window (limit {100 * limit:g} %): the window "
                "is cutting through a tissue (normal marrow or fluid) rather than around lesions."
            )

        findings += _graded(code, fraction, settings.quality_adc_edge_limits, edge_message)
    marrow_ml = settings.quality_marrow_body_fraction * signals.body_ml
    if marrow_ml > 0:
        ratio = signals.tdv_ml / marrow_ml
        findings += _graded(
            "tdv_implausible",
            ratio,
            settings.quality_tdv_marrow_limits,
            lambda limit: (
                f"The tumour volume ({signals.tdv_ml:.0f} ml) is {100 * ratio:.0f} % of the marrow "
                f"volume expected for this body ({marrow_ml:.0f} ml; limit "
                f"{100 * limit:g} %): whole bones or organs may be segmented."
            ),
        )
    findings += _graded(
        "many_small_components",
        float(signals.small_components),
        settings.quality_small_components_limits,
        lambda limit: (
            f"{signals.small_components} candidate regions were smaller than "
            f"{settings.min_lesion_volume_ml:g} ml (limit {limit:g}): the "
            "high-b image is noisy and noise clusters may be counted as lesions."
        ),
    )
    findings += _graded(
        "marrow_gap",
        signals.marrow_gap_mm,
        settings.quality_marrow_gap_limits_mm,
        lambda limit: (
            f"Over {signals.marrow_gap_mm:.0f} mm of the trunk (limit "
            f"{limit:g} mm) almost no voxel looks like normal marrow, "
            "although every trunk level holds vertebrae: diffuse infiltration may have replaced "
            "the marrow there, and diffuse disease is not segmented by this method (it has no "
            "normal marrow around it)."
        ),
    )
    findings += _graded(
        "large_component",
        signals.largest_component_ml,
        settings.quality_largest_component_limits_ml,
        lambda limit: (
            f"The largest segmented region holds {signals.largest_component_ml:.0f} ml (limit "
            f"{limit:g} ml): check that it is disease and not bowel or an "
            "organ lying against bone."
        ),
    )
    return findings


def _geometry_findings(signals: ImageSignals, settings: ProcessingSettings) -> list[QualityFinding]:
    """Voxel size and the body levels the exam covers."""
    findings: list[QualityFinding] = []
    dz, dy, dx = signals.spacing_mm
    for code, size, limits, what in (
        ("coarse_pixels", max(dy, dx), settings.quality_pixel_limits_mm, "pixel"),
        ("thick_slices", dz, settings.quality_slice_limits_mm, "slice thickness"),
    ):

        def size_message(limit: float, size: float = size, what: str = what) -> str:
            return (
                f"The {what} is {size:.1f} mm (limit {limit:g} mm): voxels this "
                "coarse merge lesions with marrow and organs, and the marrow-contact and skull "
                "rules need about 3-4 mm."
            )

        findings += _graded(code, size, limits, size_message)
    if not signals.neck_found:
        findings.append(
            QualityFinding(
                "no_neck",
                Verdict.REVIEW,
                "No neck was found on the body outline: the exam may not start at the vertex, so "
                "the head rule (brain, salivary glands) was not applied and body levels are "
                "estimated.",
            )
        )
    if not signals.crotch_found:
        findings.append(
            QualityFinding(
                "no_thighs",
                Verdict.REVIEW,
                "The exam does not reach separate thighs: the pelvis or femora may be cut off and "
                "body levels are estimated.",
            )
        )
    return findings


def assess_image(signals: ImageSignals, settings: ProcessingSettings) -> QualityAssessment:
    """The image-based findings of one exam (limits in ``settings``, ``docs/algorithm.md``)."""
    findings = [
        *_marrow_findings(signals, settings),
        *_snr_findings(signals, settings),
        *_segmentation_findings(signals, settings),
        *_geometry_findings(signals, settings),
    ]
    return QualityAssessment(
        findings=tuple(findings), measures=MappingProxyType(signals.measures())
    )
