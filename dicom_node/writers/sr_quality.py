"""The reliability verdict (:mod:`processing.quality`) in the report and on the key images.

Issue 10: every result says how far its numbers can be trusted, never
silently. The verdict reaches the reader in three places written here:

- the **first measurement group** of the SR, "Reliability of the automatic
  result" (TID 1501): a coded qualitative evaluation ``99WBDWI RELIAB``
  "Reliability of the automatic result" = ``RELOK`` / ``RELREVIEW`` /
  ``RELUNREL``, then TEXT items DCM 121106 "Comment": the verdict's meaning in
  one sentence and each reason in plain words with its measured value (most
  severe first). DICOM has no code for the reliability of an automatic
  segmentation (CID 6137/7460 and the "Quality Control" codes describe image
  quality, not a result's), hence the private scheme;
- the same CODE evaluation on every measurement group that holds numbers
  when the verdict is not ``ok`` (the numbers are still reported, marked);
- a coloured **banner** on every key image when the verdict is not ``ok``
  (:func:`banner_text`; drawn by :func:`dicom_node.writers.rendering.add_banner`),
  and the verdict in the SR's and key images' Series Description.
"""

from __future__ import annotations

import highdicom as hd
from pydicom.sr.coding import Code

from processing.quality import QualityAssessment, QualityFinding, Verdict

__all__ = [
    "BANNER_RGB",
    "RELIABILITY",
    "RELIABILITY_GROUP",
    "VERDICT_CODES",
    "banner_text",
    "description_suffix",
    "reliability_evaluation",
    "reliability_texts",
    "verdict_of_code",
]

_SCHEME = "99WBDWI"
RELIABILITY_GROUP = "Reliability of the automatic result"
RELIABILITY = Code("RELIAB", _SCHEME, "Reliability of the automatic result")
VERDICT_CODES: dict[Verdict, Code] = {
    Verdict.OK: Code("RELOK", _SCHEME, "No reason found to doubt the automatic result"),
    Verdict.REVIEW: Code("RELREVIEW", _SCHEME, "Review the segmentation before using the numbers"),
    Verdict.UNRELIABLE: Code(
        "RELUNREL", _SCHEME, "Unreliable: segmentation likely wrong, numbers for reference"
    ),
}
BANNER_RGB: dict[Verdict, tuple[int, int, int]] = {
    Verdict.REVIEW: (190, 100, 0),
    Verdict.UNRELIABLE: (170, 0, 0),
}
_HEADLINE = {
    Verdict.REVIEW: "REVIEW: check the segmentation before using these numbers",
    Verdict.UNRELIABLE: "UNRELIABLE: the segmentation is likely wrong; numbers for reference only",
}


def verdict_of_code(value: str) -> Verdict:
    """The verdict whose code value is ``value`` (``RELOK`` ...); ``ValueError`` if none."""
    for verdict, code in VERDICT_CODES.items():
        if code.value == value:
            return verdict
    raise ValueError(f"no reliability verdict has the code {value!r}")


def _ordered(quality: QualityAssessment) -> list[QualityFinding]:
    return sorted(quality.findings, key=lambda f: -f.severity.severity)


def _reason(finding: QualityFinding) -> str:
    return f"{finding.severity.value.upper()}: {finding.message}"


def reliability_evaluation(quality: QualityAssessment) -> hd.sr.QualitativeEvaluation:
    """``RELIAB`` = the verdict's code."""
    return hd.sr.QualitativeEvaluation(RELIABILITY, VERDICT_CODES[quality.verdict])


def reliability_texts(quality: QualityAssessment) -> list[str]:
    """The verdict's meaning, then each reason (most severe first), for TEXT Comments."""
    verdict = quality.verdict
    first = f"Reliability {verdict.value.upper()}: {verdict.meaning}"
    return [first, *(_reason(finding) for finding in _ordered(quality))]


def banner_text(quality: QualityAssessment) -> tuple[str, list[str]] | None:
    """Headline and reasons of the key-image banner; ``None`` when the verdict is ``ok``."""
    verdict = quality.verdict
    if verdict is Verdict.OK:
        return None
    return _HEADLINE[verdict], [finding.message for finding in _ordered(quality)]


def description_suffix(quality: QualityAssessment) -> str:
    """`` (REVIEW)`` or `` (UNRELIABLE)`` for Series Descriptions; ``""`` when ``ok``."""
    verdict = quality.verdict
    return "" if verdict is Verdict.OK else f" ({verdict.value.upper()})"
