"""Vendor identity and vendor b-value tags, as the simulated scanner writes them.

The reading side lives in :mod:`dicom_node.assembly.bvalues`; both use the same
:class:`~dicom_node.assembly.bvalues.PrivateTagPlace` descriptors so the two cannot drift.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from pydicom.dataset import Dataset

from dicom_node.assembly.bvalues import (
    GE_B_VALUE_OFFSET,
    GE_PARM,
    PHILIPS_DD,
    SIEMENS_CSA_IMAGE_HEADER,
    SIEMENS_MR_HEADER,
    PrivateTagPlace,
)

__all__ = [
    "Vendor",
    "VendorIdentity",
    "add_private_b_value",
    "build_siemens_csa",
    "vendor_identity",
]


class Vendor(enum.Enum):
    """The header flavours the simulated scanner can write."""

    STANDARD = "standard"
    SIEMENS = "siemens"
    GE = "ge"
    PHILIPS = "philips"
    ENHANCED = "enhanced"


@dataclass(frozen=True, slots=True)
class VendorIdentity:
    """Equipment attributes written by one vendor flavour."""

    manufacturer: str
    model_name: str
    software_versions: str
    station_name: str


_IDENTITIES: dict[Vendor, VendorIdentity] = {
    Vendor.STANDARD: VendorIdentity("WBDWI Simulated Scanner", "SimMR 1.5T", "sim 1.0", "SIMMR01"),
    Vendor.SIEMENS: VendorIdentity("SIEMENS", "MAGNETOM Sola", "syngo MR XA51", "MRC40123"),
    Vendor.GE: VendorIdentity("GE MEDICAL SYSTEMS", "SIGNA Artist", "29\\LX\\MR Software", "GEMR1"),
    Vendor.PHILIPS: VendorIdentity("Philips Medical Systems", "Ingenia", "5.7.1\\5.7.1.2", "PHMR1"),
    Vendor.ENHANCED: VendorIdentity(
        "WBDWI Simulated Scanner", "SimMR 3T Enhanced", "sim 1.0", "SIMMR02"
    ),
}


def vendor_identity(vendor: Vendor) -> VendorIdentity:
    """The equipment attributes of ``vendor``."""
    return _IDENTITIES[vendor]


def _reserve(ds: Dataset, place: PrivateTagPlace, block: int) -> int:
    """Write the private creator of ``place`` into ``block`` and return the element tag."""
    if not 0x10 <= block <= 0xFF:
        raise ValueError(f"private block must be in 0x10..0xFF, got {block:#x}")
    creator_tag = (place.group << 16) | block
    existing = ds.get(creator_tag)
    if existing is not None and str(existing.value).strip() != place.creator:
        raise ValueError(
            f"block ({place.group:04X},{block:04X}) already reserved by {existing.value!r}"
        )
    ds.add_new(creator_tag, "LO", place.creator)
    return (place.group << 16) | (block << 8) | place.offset


def add_private_b_value(
    ds: Dataset,
    vendor: Vendor,
    b_value: float,
    *,
    block: int = 0x10,
    ge_offset: bool = False,
    siemens_csa: bool = True,
    siemens_mr_header: bool = True,
) -> None:
    """Write ``b_value`` where ``vendor`` keeps it, in private ``block``.

    Parameters
    ----------
    ds
        The image header to extend.
    vendor
        Siemens, GE or Philips; other flavours use the standard attribute and
        this function does nothing for them.
    b_value
        In s/mm2.
    block
        The private block (0x10..0xFF) the creator reserves; 0x10 is what the
        vendors use, any other value proves that a reader looks creators up.
    ge_offset
        GE only: write ``b + 10^9`` as some GE software versions do.
    siemens_csa, siemens_mr_header
        Siemens only: write the CSA image header (0029,xx10) and/or the
        (0019,xx0C) element.
    """
    if vendor is Vendor.SIEMENS:
        if siemens_mr_header:
            tag = _reserve(ds, SIEMENS_MR_HEADER, block)
            ds.add_new(tag, "IS", str(round(b_value)))
        if siemens_csa:
            tag = _reserve(ds, SIEMENS_CSA_IMAGE_HEADER, block)
            csa = build_siemens_csa(
                {"B_value": [str(round(b_value))], "SliceNormalVector": ["0", "0", "1"]}
            )
            ds.add_new(tag, "OB", csa)
    elif vendor is Vendor.GE:
        tag = _reserve(ds, GE_PARM, block)
        first = round(b_value) + (GE_B_VALUE_OFFSET if ge_offset else 0)
        ds.add_new(tag, "IS", [str(first), "8", "0", "0"])
    elif vendor is Vendor.PHILIPS:
        tag = _reserve(ds, PHILIPS_DD, block)
        ds.add_new(tag, "FL", float(b_value))


def build_siemens_csa(elements: dict[str, list[str]]) -> bytes:
    """Encode a Siemens CSA2 (``SV10``) header holding string items.

    The inverse of :func:`dicom_node.assembly.bvalues.parse_siemens_csa` (see its docstring
    for the layout).
    """
    out = bytearray(b"SV10\x04\x03\x02\x01")
    out += struct.pack("<II", len(elements), 77)
    for name, items in elements.items():
        encoded_name = name.encode("ascii")[:63].ljust(64, b"\x00")
        out += encoded_name
        out += struct.pack("<i4sii i", len(items), b"IS\x00\x00", 6, len(items), 77)
        for item in items:
            value = item.encode("ascii") + b"\x00"
            length = len(value)
            out += struct.pack("<4i", length, length, 77, length)
            out += value.ljust((length + 3) // 4 * 4, b"\x00")
    return bytes(out)
