"""Read a few top-level elements of an encoded data set without decoding it.

The receive path needs the SOP Instance, Study and Series Instance UIDs (and
the Series Description) of every instance it stores, but nothing else: the
data set is written to the spool as received. :func:`read_top_level_elements`
walks the little-endian element stream (PS3.5 7.1), explicit or implicit VR,
returning the raw values of the wanted tags and skipping everything else by
its length. Elements of undefined length (sequences, PS3.5 7.5.2, and
encapsulated pixel data, PS3.5 A.4) are skipped by walking their items to the
delimiters; the contents of an ``UN`` element of undefined length are implicit
VR little endian (PS3.5 6.2.2). The walk stops at the first top-level tag
after ``stop_after``: elements are in ascending tag order, so pixel data are
never reached when the wanted tags come first.

Anything that does not parse raises :class:`MalformedDataSetError` naming the
offset and the reason.
"""

from __future__ import annotations

import struct
from collections.abc import Collection

from dicom_node.errors import MalformedDataSetError

__all__ = [
    "ByteString",
    "read_top_level_elements",
]

ByteString = bytes | bytearray | memoryview

_UNDEFINED_LENGTH = 0xFFFFFFFF
_ITEM = 0xFFFEE000
_ITEM_DELIMITATION = 0xFFFEE00D
_SEQUENCE_DELIMITATION = 0xFFFEE0DD
_MAX_NESTING = 64

# PS3.5 Table 7.1-2: VRs whose length is a 16-bit field; every other VR (OB, OD,
# OF, OL, OV, OW, SQ, SV, UC, UN, UR, UT, UV and VRs added later) has two reserved
# bytes and a 32-bit length.
_SHORT_LENGTH_VRS = frozenset(
    {
        b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO",
        b"LT", b"PN", b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US",
    }
)  # fmt: skip
# VRs that may have an undefined length: sequences, UN (an implicit VR sequence)
# and the encapsulated pixel data formats.
_UNDEFINED_LENGTH_VRS = frozenset({b"SQ", b"UN", b"OB", b"OW"})

_TAG = struct.Struct("<HH")
_TAG_LENGTH = struct.Struct("<HHI")
_TAG_VR_SHORT = struct.Struct("<HH2sH")
_LONG_LENGTH = struct.Struct("<I")


def _element_header(
    data: ByteString, position: int, end: int, implicit_vr: bool
) -> tuple[int, bytes | None, int, int]:
    """``(tag, VR or None, value length, value offset)`` of the element at ``position``."""
    if position + 8 > end:
        raise MalformedDataSetError(f"element header truncated at offset {position}")
    if implicit_vr:
        group, element, length = _TAG_LENGTH.unpack_from(data, position)
        return (group << 16) | element, None, length, position + 8
    group, element, vr, length = _TAG_VR_SHORT.unpack_from(data, position)
    tag = (group << 16) | element
    if group == 0xFFFE:  # items and delimiters have no VR in any transfer syntax
        length = _LONG_LENGTH.unpack_from(data, position + 4)[0]
        return tag, None, length, position + 8
    if vr in _SHORT_LENGTH_VRS:
        return tag, vr, length, position + 8
    if not (vr.isalpha() and vr.isupper()):
        raise MalformedDataSetError(
            f"element ({group:04X},{element:04X}) at offset {position} has no valid VR ({vr!r})"
        )
    if position + 12 > end:
        raise MalformedDataSetError(f"element header truncated at offset {position}")
    return tag, vr, _LONG_LENGTH.unpack_from(data, position + 8)[0], position + 12


def _skip_undefined_length(
    data: ByteString, position: int, end: int, implicit_vr: bool, depth: int
) -> int:
    """Skip the items of an undefined-length value up to its Sequence Delimitation Item."""
    if depth > _MAX_NESTING:
        raise MalformedDataSetError(f"sequences nested deeper than {_MAX_NESTING} levels")
    while True:
        if position + 8 > end:
            raise MalformedDataSetError(
                f"sequence without a delimitation item (data end at offset {end})"
            )
        group, element, length = _TAG_LENGTH.unpack_from(data, position)
        tag = (group << 16) | element
        position += 8
        if tag == _SEQUENCE_DELIMITATION:
            return position
        if tag != _ITEM:
            raise MalformedDataSetError(
                f"expected an item in a sequence at offset {position - 8}, "
                f"found ({group:04X},{element:04X})"
            )
        if length == _UNDEFINED_LENGTH:
            position = _skip_item_elements(data, position, end, implicit_vr, depth + 1)
        else:
            position += length
            if position > end:
                raise MalformedDataSetError(f"item at offset {position - length - 8} truncated")


def _skip_item_elements(
    data: ByteString, position: int, end: int, implicit_vr: bool, depth: int
) -> int:
    """Skip the elements of an undefined-length item up to its Item Delimitation Item."""
    while True:
        tag, vr, length, value_at = _element_header(data, position, end, implicit_vr)
        if tag == _ITEM_DELIMITATION:
            return value_at
        if tag >> 16 == 0xFFFE:
            raise MalformedDataSetError(f"unexpected item tag inside an item at offset {position}")
        if length == _UNDEFINED_LENGTH:
            if vr is not None and vr not in _UNDEFINED_LENGTH_VRS:
                raise MalformedDataSetError(
                    f"element at offset {position} has VR {vr.decode()} and undefined length"
                )
            position = _skip_undefined_length(
                data, value_at, end, implicit_vr or vr == b"UN", depth
            )
        else:
            position = value_at + length
            if position > end:
                raise MalformedDataSetError(f"element value at offset {value_at} truncated")


def read_top_level_elements(
    data: ByteString, *, implicit_vr: bool, wanted: Collection[int], stop_after: int
) -> dict[int, bytes]:
    """Raw values of the ``wanted`` top-level tags of a little-endian data set.

    Parameters
    ----------
    data
        The encoded data set (no preamble or file meta), already inflated when
        it was deflated.
    implicit_vr
        Implicit VR little endian (else explicit VR little endian).
    wanted
        Tags (``group << 16 | element``) whose values to return.
    stop_after
        The walk ends at the first top-level tag greater than this.

    Returns
    -------
    dict
        Tag to value bytes (padding kept) for each wanted tag present.

    Raises
    ------
    MalformedDataSetError
        The bytes do not form a data set up to the point where the walk stops.
    """
    found: dict[int, bytes] = {}
    end = len(data)
    position = 0
    short_vrs = _SHORT_LENGTH_VRS
    unpack_short = _TAG_VR_SHORT.unpack_from
    while position < end:
        if not implicit_vr and position + 8 <= end:
            # Fast path (explicit VR, the common case): one unpack per element.
            group, element, vr, length = unpack_short(data, position)
            tag = (group << 16) | element
            if tag > stop_after:
                break
            if vr in short_vrs:
                value_at = position + 8
                position = value_at + length
                if position > end:
                    raise MalformedDataSetError(
                        f"value of ({group:04X},{element:04X}) at offset {value_at} is truncated"
                    )
                if tag in wanted:
                    found[tag] = bytes(data[value_at:position])
                continue
        elif position + 4 <= end:
            group, element = _TAG.unpack_from(data, position)
            if (group << 16) | element > stop_after:
                break
        tag, vr_or_none, length, value_at = _element_header(data, position, end, implicit_vr)
        if tag >> 16 == 0xFFFE:
            raise MalformedDataSetError(f"item or delimiter tag at top level, offset {position}")
        if length == _UNDEFINED_LENGTH:
            if vr_or_none is not None and vr_or_none not in _UNDEFINED_LENGTH_VRS:
                raise MalformedDataSetError(
                    f"element at offset {position} has VR {vr_or_none!r} and undefined length"
                )
            position = _skip_undefined_length(
                data, value_at, end, implicit_vr or vr_or_none == b"UN", 1
            )
            continue
        position = value_at + length
        if position > end:
            raise MalformedDataSetError(
                f"value of ({tag >> 16:04X},{tag & 0xFFFF:04X}) at offset {value_at} is truncated"
            )
        if tag in wanted:
            found[tag] = bytes(data[value_at:position])
    return found
