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

This module imports nothing from the writers, so that the SR writer
(:mod:`dicom_node.writers.sr`) and the reader (:mod:`dicom_node.report_reader`)
share the codes without an import cycle.
"""

from __future__ import annotations

from pydicom.sr.coding import Code

__all__ = [
    "CENTROID_CODES",
    "LOCAL_CODING_SCHEME",
    "MEAN_HIGH_B",
    "MILLIMETRE",
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
