"""Codes of the lesion items the Measurement Report carries so that a prior can be compared.

Comparing a new exam with one rebuilt from PACS (issue 6) needs, per lesion,
what the comparison uses locally: volume, ADC mean and median, body region
(standard items of the report), and the lesion's **centroid** in patient
coordinates and its **mean computed high-b signal**, which have no standard
code. They are NUM items of each lesion's measurement group (TID 1411) in the
node's private coding scheme, declared in the SR's Coding Scheme
Identification Sequence (PS3.3 C.12.1.1.3):

========================  =====  ===============================================
concept                   unit   meaning
========================  =====  ===============================================
``99WBDWI CENTROIDX``     mm     lesion centroid, patient X (LPS, to the left)
``99WBDWI CENTROIDY``     mm     lesion centroid, patient Y (to posterior)
``99WBDWI CENTROIDZ``     mm     lesion centroid, patient Z (to head)
``99WBDWI HIGHBMEAN``     1      mean computed high-b signal in the lesion
========================  =====  ===============================================

The report also carries the exam grid's voxel volume (the sampling-noise
floor of lesion growth, see ``processing.response``) in the "Total tumour
load" group:

========================  =====  ===============================================
``99WBDWI VOXELVOL``      ml     volume of one voxel of the exam grid
========================  =====  ===============================================

and, when the exam was compared with earlier ones
(:mod:`dicom_node.writers.sr_comparison`), the changes and the **suggested**
response categories:

==========================  ==========  ==========================================
concept                     unit/value  meaning
==========================  ==========  ==========================================
``99WBDWI VOLCHG``          ml          volume change against the reference exam
``99WBDWI VOLCHGPCT``       %           relative volume change
``99WBDWI ADCMEANCHG``      10-6.mm2/s  change of the mean ADC
``99WBDWI ADCMEANCHGPCT``   %           relative change of the mean ADC
``99WBDWI ADCMEDCHG``       10-6.mm2/s  change of the median ADC
``99WBDWI ADCMEDCHGPCT``    %           relative change of the median ADC
``99WBDWI RAC``             CODE        suggested response category (primary)
``99WBDWI RAC2ND``          CODE        suggested response category (secondary)
``99WBDWI RACRULE``         TEXT        the rule behind a lesion's category, why
``99WBDWI SUGGESTION``      TEXT        "a suggestion for the radiologist ..."
``99WBDWI RAC1`` ... 5      (values)    MET-RADS-P RAC 1-5 with their wording
==========================  ==========  ==========================================

This module imports nothing from the writers, so that the SR writer
(:mod:`dicom_node.writers.sr`) and the reader (:mod:`dicom_node.readers.report_reader`)
share the codes without an import cycle.
"""

from __future__ import annotations

from pydicom.sr.coding import Code

__all__ = [
    "ADC_MEAN_CHANGE",
    "ADC_MEAN_CHANGE_PCT",
    "ADC_MEDIAN_CHANGE",
    "ADC_MEDIAN_CHANGE_PCT",
    "ARBITRARY_UNIT",
    "CENTROID_CODES",
    "LOCAL_CODING_SCHEME",
    "MEAN_HIGH_B",
    "MILLIMETRE",
    "PERCENT",
    "RESPONSE_CATEGORY",
    "RESPONSE_CATEGORY_SECONDARY",
    "RESPONSE_RULE",
    "SUGGESTION",
    "VOLUME_CHANGE",
    "VOLUME_CHANGE_PCT",
    "VOXEL_VOLUME",
    "response_category_code",
]

#: The node's private coding scheme (same designator as the SR writer's).
LOCAL_CODING_SCHEME = "99WBDWI"

#: Centroid coordinates, in patient X, Y, Z order.
CENTROID_CODES: tuple[Code, Code, Code] = (
    Code("CENTROIDX", LOCAL_CODING_SCHEME, "Lesion centroid patient X (LPS)"),
    Code("CENTROIDY", LOCAL_CODING_SCHEME, "Lesion centroid patient Y (LPS)"),
    Code("CENTROIDZ", LOCAL_CODING_SCHEME, "Lesion centroid patient Z (LPS)"),
)

#: Mean computed high-b signal of a lesion (units of the computed image).
MEAN_HIGH_B = Code("HIGHBMEAN", LOCAL_CODING_SCHEME, "Mean computed high-b signal")

#: UCUM millimetre, the unit of the centroid items.
MILLIMETRE = Code("mm", "UCUM", "millimeter")

#: UCUM arbitrary unit, the unit of the computed high-b signal.
ARBITRARY_UNIT = Code("[arb'U]", "UCUM", "arbitrary unit")

#: UCUM percent, the unit of the relative changes.
PERCENT = Code("%", "UCUM", "percent")

#: Volume of one voxel of the exam grid (ml), in the "Total tumour load" group.
VOXEL_VOLUME = Code("VOXELVOL", LOCAL_CODING_SCHEME, "Voxel volume of the exam grid")

#: Changes against a reference exam (whole body in the comparison groups, per lesion).
VOLUME_CHANGE = Code("VOLCHG", LOCAL_CODING_SCHEME, "Volume change")
VOLUME_CHANGE_PCT = Code("VOLCHGPCT", LOCAL_CODING_SCHEME, "Relative volume change")
ADC_MEAN_CHANGE = Code("ADCMEANCHG", LOCAL_CODING_SCHEME, "Mean ADC change")
ADC_MEAN_CHANGE_PCT = Code("ADCMEANCHGPCT", LOCAL_CODING_SCHEME, "Relative mean ADC change")
ADC_MEDIAN_CHANGE = Code("ADCMEDCHG", LOCAL_CODING_SCHEME, "Median ADC change")
ADC_MEDIAN_CHANGE_PCT = Code("ADCMEDCHGPCT", LOCAL_CODING_SCHEME, "Relative median ADC change")

#: Suggested categories; the concept names say that the radiologist decides.
RESPONSE_CATEGORY = Code(
    "RAC",
    LOCAL_CODING_SCHEME,
    "Suggested response category, to be confirmed by the radiologist",
)
RESPONSE_CATEGORY_SECONDARY = Code(
    "RAC2ND",
    LOCAL_CODING_SCHEME,
    "Suggested secondary response category (radiologist to confirm)",
)
RESPONSE_RULE = Code("RACRULE", LOCAL_CODING_SCHEME, "Rule of the suggested category")
SUGGESTION = Code("SUGGESTION", LOCAL_CODING_SCHEME, "Status of the response categories")

_RAC_MEANINGS = {
    1: "highly likely responding",
    2: "likely responding",
    3: "no change",
    4: "likely progressing",
    5: "highly likely progressing",
}


def response_category_code(category: int) -> Code:
    """The value code of MET-RADS-P response category ``category`` (1-5).

    Raises
    ------
    ValueError
        When ``category`` is not 1-5.
    """
    if category not in _RAC_MEANINGS:
        raise ValueError(f"response category must be 1-5, got {category!r}")
    return Code(f"RAC{category}", LOCAL_CODING_SCHEME, f"RAC {category} {_RAC_MEANINGS[category]}")
