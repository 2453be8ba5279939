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

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import Any

__all__ = ["QualityAssessment", "QualityFinding", "Verdict"]


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
