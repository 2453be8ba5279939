"""Where scanners keep the diffusion b-value, and how the node reads it.

Order of trust (the first place that holds a value wins):

1. (0018,9087) Diffusion b-value, the standard attribute (PS3.3 C.8.13.5.9). In
   Enhanced MR Image Storage it sits in the MR Diffusion Sequence (0018,9117) of
   the per-frame (or shared) functional groups; :func:`read_frame_b_value` reads it.
2. Siemens (0019,xx0C) "B_value" (IS) under private creator ``SIEMENS MR HEADER``.
3. Siemens CSA image header (0029,xx10) under ``SIEMENS CSA HEADER``, element
   ``B_value``.
4. GE (0043,xx39) "Slop_int_6" (IS, VM 4) under ``GEMS_PARM_01``: the first value
   is the b-value; some software versions add 10^9 to it, which is removed.
5. Philips (2001,xx03) "Diffusion B-Factor" (FL) under ``Philips Imaging DD 001``.

Private elements are found by their private creator (PS3.5 7.8.1): the creator
may reserve any block ``xx`` from 0x10 to 0xFF, so the element number alone
means nothing and is never used on its own.
"""

from __future__ import annotations

import enum
import math
import struct
from dataclasses import dataclass

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

__all__ = [
    "GE_B_VALUE_OFFSET",
    "GE_PARM",
    "PHILIPS_DD",
    "PRIVATE_B_VALUE_PLACES",
    "SIEMENS_CSA_IMAGE_HEADER",
    "SIEMENS_MR_HEADER",
    "BValue",
    "BValueSource",
    "PrivateTagPlace",
    "find_private_element",
    "parse_siemens_csa",
    "private_creators",
    "read_b_value",
    "read_frame_b_value",
]

GE_B_VALUE_OFFSET = 1_000_000_000
"""GE adds this to the first value of (0043,xx39) in some software versions."""

_DIFFUSION_B_VALUE = 0x00189087
_MR_DIFFUSION_SEQUENCE = "MRDiffusionSequence"


class BValueSource(enum.Enum):
    """Where a b-value was read from."""

    STANDARD = "standard (0018,9087)"
    ENHANCED = "MR Diffusion Sequence (0018,9117)"
    SIEMENS = "Siemens (0019,xx0C)"
    SIEMENS_CSA = "Siemens CSA header (0029,xx10)"
    GE = "GE (0043,xx39)"
    PHILIPS = "Philips (2001,xx03)"


@dataclass(frozen=True, slots=True)
class PrivateTagPlace:
    """A private element identified by group, creator and element offset.

    Parameters
    ----------
    group
        The odd group number, e.g. ``0x0019``.
    creator
        The private creator string that reserves the block.
    offset
        The low byte of the element inside the reserved block (``0x0C`` for
        (0019,xx0C)).
    vr
        The value representation the vendor uses (for writing, and for decoding
        the value when it arrives as UN or implicit VR without a dictionary entry).
    source
        The :class:`BValueSource` this place stands for.
    """

    group: int
    creator: str
    offset: int
    vr: str
    source: BValueSource


SIEMENS_MR_HEADER = PrivateTagPlace(0x0019, "SIEMENS MR HEADER", 0x0C, "IS", BValueSource.SIEMENS)
SIEMENS_CSA_IMAGE_HEADER = PrivateTagPlace(
    0x0029, "SIEMENS CSA HEADER", 0x10, "OB", BValueSource.SIEMENS_CSA
)
GE_PARM = PrivateTagPlace(0x0043, "GEMS_PARM_01", 0x39, "IS", BValueSource.GE)
PHILIPS_DD = PrivateTagPlace(0x2001, "Philips Imaging DD 001", 0x03, "FL", BValueSource.PHILIPS)

PRIVATE_B_VALUE_PLACES: tuple[PrivateTagPlace, ...] = (
    SIEMENS_MR_HEADER,
    SIEMENS_CSA_IMAGE_HEADER,
    GE_PARM,
    PHILIPS_DD,
)
"""The private places, in order of trust (after the standard attribute)."""

_PRIVATE_GROUPS = tuple(sorted({place.group for place in PRIVATE_B_VALUE_PLACES}))


@dataclass(frozen=True, slots=True)
class BValue:
    """A b-value in s/mm2 and the place it was read from."""

    value: float
    source: BValueSource


def _creator_text(value: object) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("ascii", errors="replace")
    return value.strip(" \x00") if isinstance(value, str) else None


def private_creators(ds: Dataset, groups: tuple[int, ...]) -> dict[tuple[int, str], list[int]]:
    """Map ``(group, creator)`` to the blocks it reserves, in one pass over ``ds``.

    Creator elements are (gggg,0010) to (gggg,00FF) (PS3.5 7.8.1).
    """
    found: dict[tuple[int, str], list[int]] = {}
    for tag in ds.keys():  # noqa: SIM118 (iterating a Dataset yields decoded elements)
        group = tag >> 16
        element = tag & 0xFFFF
        if group not in groups or not 0x10 <= element <= 0xFF:
            continue
        creator = _creator_text(ds[tag].value)
        if creator:
            found.setdefault((group, creator), []).append(element)
    return found


def find_private_element(
    ds: Dataset,
    place: PrivateTagPlace,
    creators: dict[tuple[int, str], list[int]] | None = None,
) -> DataElement | None:
    """Return the element of ``place`` in ``ds``, found through its private creator.

    Parameters
    ----------
    ds
        The dataset to search.
    place
        Group, creator and element offset.
    creators
        The result of :func:`private_creators` for ``ds``, when the caller looks
        up several places (saves a pass over the dataset per place).

    Creator matching ignores padding spaces and is case-sensitive, as PS3.5 requires.
    """
    if creators is None:
        creators = private_creators(ds, (place.group,))
    for block in creators.get((place.group, place.creator), []):
        element = ds.get((place.group << 16) | (block << 8) | place.offset)
        if element is not None:
            return element
    return None


#: struct formats of the binary VRs a b-value is stored in (little endian, PS3.5 7.3).
_BINARY_FORMATS = {"FL": "<f", "FD": "<d"}


def _first_of_text(text: str) -> float | None:
    """The first of the backslash-separated numbers in ``text``, ``None`` when empty."""
    first = text.split("\\", maxsplit=1)[0].strip()
    return float(first) if first else None


def _number_from_bytes(raw: bytes | bytearray, vr: str) -> float | None:
    """The first number of an undecoded value: binary for FL and FD, text otherwise."""
    binary_format = _BINARY_FORMATS.get(vr)
    if binary_format is None:
        return _first_of_text(raw.decode("ascii", errors="replace").strip(" \x00"))
    size = struct.calcsize(binary_format)
    if len(raw) < size:
        return None
    return float(struct.unpack(binary_format, raw[:size])[0])


def _first_number(raw: object, vr: str) -> float | None:
    """The first numeric value of an element value that may arrive decoded or as bytes."""
    if raw is None:
        return None
    if isinstance(raw, bytes | bytearray):
        return _number_from_bytes(raw, vr)
    if isinstance(raw, str):
        return _first_of_text(raw)
    if isinstance(raw, list | tuple) or type(raw).__name__ == "MultiValue":
        values = list(raw)  # type: ignore[call-overload]
        return _first_number(values[0], vr) if values else None
    if isinstance(raw, int | float):
        return float(raw)
    return None


def _checked(value: float | None, source: BValueSource) -> BValue | None:
    if value is None or not math.isfinite(value):
        return None
    if source is BValueSource.GE and value >= GE_B_VALUE_OFFSET:
        value = math.fmod(value, GE_B_VALUE_OFFSET)
    if value < 0:
        return None
    return BValue(value, source)


def read_b_value(ds: Dataset) -> BValue | None:
    """Read the b-value of a single-frame image from every known place.

    Parameters
    ----------
    ds
        The image header (pixel data need not be loaded).

    Returns
    -------
    BValue or None
        The value from the most trusted place that has one, or ``None`` when no
        place holds a usable number. A value that cannot be parsed counts as
        absent, so that a less trusted place can still answer.
    """
    standard = ds.get(_DIFFUSION_B_VALUE)
    if standard is not None:
        found = _checked(_safe_number(standard.value, "FD"), BValueSource.STANDARD)
        if found is not None:
            return found
    creators = private_creators(ds, _PRIVATE_GROUPS)
    for place in PRIVATE_B_VALUE_PLACES:
        element = find_private_element(ds, place, creators)
        if element is None:
            continue
        if place is SIEMENS_CSA_IMAGE_HEADER:
            raw = element.value
            if not isinstance(raw, bytes | bytearray):
                continue
            try:
                items = parse_siemens_csa(bytes(raw)).get("B_value", [])
            except ValueError:
                # A damaged CSA header counts as absent; the next place is tried.
                continue
            number = _safe_number(items[0], "IS") if items else None
        else:
            number = _safe_number(element.value, place.vr)
        found = _checked(number, place.source)
        if found is not None:
            return found
    return None


def read_frame_b_value(
    frame_groups: Dataset | None, shared_groups: Dataset | None
) -> BValue | None:
    """Read the b-value of one frame of an Enhanced MR image (PS3.3 C.8.13.5.9).

    The per-frame MR Diffusion Sequence wins over the shared one.
    """
    for groups in (frame_groups, shared_groups):
        if groups is None or _MR_DIFFUSION_SEQUENCE not in groups:
            continue
        sequence = groups[_MR_DIFFUSION_SEQUENCE].value
        if not sequence:
            continue
        element = sequence[0].get(_DIFFUSION_B_VALUE)
        if element is None:
            continue
        found = _checked(_safe_number(element.value, "FD"), BValueSource.ENHANCED)
        if found is not None:
            return found
    return None


def _safe_number(raw: object, vr: str) -> float | None:
    try:
        return _first_number(raw, vr)
    except (ValueError, TypeError, struct.error):
        # A malformed value is treated as absent so that the next place is tried;
        # if none answers, the caller raises MissingBValueError naming the series.
        return None


def parse_siemens_csa(raw: bytes) -> dict[str, list[str]]:
    """Parse a Siemens CSA2 (``SV10``) header into element name -> string items.

    Only the ``SV10`` layout is read (used since syngo MR B15). Each element is a
    64-byte name, VM, 4-byte VR, syngo datatype, item count and a check value
    (77 or 205); each item is four int32 (the second is the length) followed by
    the value, padded to a multiple of four bytes.

    Raises
    ------
    ValueError
        When the bytes are not a well-formed CSA2 header.
    """
    if len(raw) < 16 or raw[:4] != b"SV10":
        raise ValueError("not a Siemens CSA2 header (no 'SV10' signature)")
    (n_elements,) = struct.unpack_from("<I", raw, 8)
    if n_elements > 1000:
        raise ValueError(f"implausible CSA element count {n_elements}")
    offset = 16
    result: dict[str, list[str]] = {}
    for _ in range(n_elements):
        if offset + 84 > len(raw):
            raise ValueError("CSA header truncated inside an element header")
        name = raw[offset : offset + 64].split(b"\x00", 1)[0].decode("ascii", errors="replace")
        _vm, _vr, _syngodt, n_items, check = struct.unpack_from("<i4sii i", raw, offset + 64)
        if check not in (77, 205):
            raise ValueError(f"CSA element {name!r} has bad check value {check}")
        offset += 84
        items: list[str] = []
        for _ in range(n_items):
            if offset + 16 > len(raw):
                raise ValueError(f"CSA header truncated in element {name!r}")
            length = struct.unpack_from("<4i", raw, offset)[1]
            offset += 16
            if length < 0 or offset + length > len(raw):
                raise ValueError(f"CSA item of {name!r} runs past the end")
            value = raw[offset : offset + length].split(b"\x00", 1)[0]
            text = value.decode("ascii", errors="replace").strip()
            if text:
                items.append(text)
            offset += (length + 3) // 4 * 4
        result[name] = items
    return result
