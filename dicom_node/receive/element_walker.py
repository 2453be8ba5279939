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
    "PIXEL_DATA",
    "ByteString",
    "read_top_level_elements",
    "walk_data_set",
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


def read_top_level_elements(  # noqa: C901, PLR0912 - the parser's per-element loop; a call per element costs time
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


# PS3.5 Table 6.2-1: binary VRs whose value is a whole number of fixed-size numbers.
_FIXED_SIZE = {b"US": 2, b"SS": 2, b"UL": 4, b"SL": 4, b"FL": 4, b"FD": 8, b"AT": 4}
_ENCAPSULATED_VRS = frozenset({b"OB", b"OW"})
# PS3.5 Table 7.1-1: the VRs with a 32-bit length (this edition); walk_data_set refuses others.
_LONG_LENGTH_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
PIXEL_DATA = 0x7FE00010
_PIXEL_DATA = PIXEL_DATA


def _sequence_tags() -> frozenset[int]:
    """Tags whose dictionary VR is SQ (to walk defined-length sequences in implicit VR)."""
    from pydicom._dicom_dict import DicomDictionary

    return frozenset(tag for tag, entry in DicomDictionary.items() if entry[0] == "SQ")


_SQ_TAGS = _sequence_tags()


def walk_data_set(
    data: ByteString, *, implicit_vr: bool, wanted: Collection[int], max_depth: int
) -> dict[int, bytes]:
    """Walk a whole little-endian data set, items included; the ``wanted`` top-level values.

    Unlike :func:`read_top_level_elements`, nothing is skipped unchecked: every
    element's header and length must fit the data, tags must ascend within the
    data set and within each item (PS3.5 7.1), the items of every sequence
    (defined or undefined length; in implicit VR a defined-length sequence is
    known by its dictionary VR) are walked to their exact end or delimiter,
    binary values of fixed-size VRs (explicit VR) hold a whole number of values,
    and sequences may nest at most ``max_depth`` levels. The data must end
    exactly after the last element.

    Returns the raw values of the ``wanted`` top-level tags and, for top-level
    Pixel Data (7FE0,0010), its length (0xFFFFFFFF: encapsulated) as a 4-byte
    little-endian number under the Pixel Data tag (the value itself is not copied).

    Raises
    ------
    MalformedDataSetError
        The first problem found, with its offset.
    """
    walker = _Walker(data, implicit_vr, max_depth)
    found: dict[int, bytes] = {}
    walker.elements(0, len(data), 0, found, wanted, delimited=False)
    return found


class _Walker:
    """The state of one :func:`walk_data_set`: the data, its VR encoding, the depth limit."""

    __slots__ = ("data", "implicit_vr", "max_depth")

    def __init__(self, data: ByteString, implicit_vr: bool, max_depth: int) -> None:
        self.data = data
        self.implicit_vr = implicit_vr
        self.max_depth = max_depth

    def elements(  # noqa: C901, PLR0912 - the parser's per-element loop; a call per element costs time
        self,
        position: int,
        end: int,
        depth: int,
        found: dict[int, bytes] | None,
        wanted: Collection[int],
        *,
        delimited: bool,
    ) -> int:
        """Walk elements from ``position`` to ``end`` (or to an Item Delimitation Item)."""
        data = self.data
        previous = -1
        short_vrs = _SHORT_LENGTH_VRS
        fixed = _FIXED_SIZE
        unpack_short = _TAG_VR_SHORT.unpack_from
        explicit = not self.implicit_vr
        while position < end:
            if explicit and position + 8 <= end:
                # Fast path (explicit VR, short-length VRs): one unpack per element.
                group, element, vr, length = unpack_short(data, position)
                if vr in short_vrs:
                    tag = (group << 16) | element
                    if tag <= previous:
                        raise MalformedDataSetError(_order_problem(tag, previous, position))
                    previous = tag
                    value_at = position + 8
                    position = value_at + length
                    if position > end:
                        raise MalformedDataSetError(_truncated(tag, value_at, length, end))
                    size = fixed.get(vr)
                    if size is not None and length % size:
                        raise MalformedDataSetError(_length_problem(tag, vr, length, value_at))
                    if found is not None and tag in wanted:
                        found[tag] = bytes(data[value_at:position])
                    continue
            tag, vr_or_none, length, value_at = _element_header(
                data, position, end, self.implicit_vr
            )
            if tag >> 16 == 0xFFFE:
                if delimited and tag == _ITEM_DELIMITATION:
                    return value_at
                raise MalformedDataSetError(
                    f"item or delimiter tag ({tag >> 16:04X},{tag & 0xFFFF:04X}) among the "
                    f"elements at offset {position}"
                )
            if tag <= previous:
                raise MalformedDataSetError(_order_problem(tag, previous, position))
            previous = tag
            position = self.value(tag, vr_or_none, length, value_at, end=end, depth=depth)
            if found is not None:
                if tag == _PIXEL_DATA:
                    found[_PIXEL_DATA] = _LONG_LENGTH.pack(length)  # its length, not its value
                elif tag in wanted and length != _UNDEFINED_LENGTH:
                    found[tag] = bytes(data[value_at:position])
        if delimited:
            raise MalformedDataSetError(
                f"item without a delimitation item (data end at offset {end})"
            )
        return position

    def value(
        self, tag: int, vr: bytes | None, length: int, value_at: int, *, end: int, depth: int
    ) -> int:
        """Check (and walk, for a sequence) one long-form value; the offset after it."""
        if vr is not None and vr not in _LONG_LENGTH_VRS and vr not in _SHORT_LENGTH_VRS:
            raise MalformedDataSetError(
                f"({tag >> 16:04X},{tag & 0xFFFF:04X}) at offset {value_at - 12} has the unknown "
                f"VR {vr.decode('latin-1')!r}"
            )
        if length == _UNDEFINED_LENGTH:
            if vr is not None and vr not in _UNDEFINED_LENGTH_VRS:
                raise MalformedDataSetError(
                    f"element at offset {value_at - 12} has VR {vr.decode()} and undefined length"
                )
            fragments = tag == _PIXEL_DATA or vr in _ENCAPSULATED_VRS
            if vr == b"UN" and not self.implicit_vr:
                nested = _Walker(self.data, True, self.max_depth)  # PS3.5 6.2.2
                return nested.items(value_at, end, depth + 1, fragments=False, item_end=None)
            return self.items(value_at, end, depth + 1, fragments=fragments, item_end=None)
        stop = value_at + length
        if stop > end:
            raise MalformedDataSetError(_truncated(tag, value_at, length, end))
        if length and (vr == b"SQ" or (vr is None and tag in _SQ_TAGS)):
            self.items(value_at, stop, depth + 1, fragments=False, item_end=stop)
        elif vr is not None and length % _FIXED_SIZE.get(vr, 1):
            raise MalformedDataSetError(_length_problem(tag, vr, length, value_at))
        return stop

    def items(  # noqa: C901 - the parser's per-item loop (items, fragments, delimiters)
        self, position: int, end: int, depth: int, *, fragments: bool, item_end: int | None
    ) -> int:
        """Walk the items of a sequence (or the fragments of encapsulated pixel data).

        ``item_end`` is the end of a defined-length sequence; ``None`` means the
        items run to a Sequence Delimitation Item. Returns the offset after the value.
        """
        if depth > self.max_depth:
            raise MalformedDataSetError(f"sequences nested deeper than {self.max_depth} levels")
        data = self.data
        limit = end if item_end is None else item_end
        while True:
            if item_end is not None and position == item_end:
                return position
            if position + 8 > limit:
                raise MalformedDataSetError(
                    f"sequence without a delimitation item (data end at offset {limit})"
                    if item_end is None
                    else f"sequence item header truncated at offset {position}"
                )
            group, element, length = _TAG_LENGTH.unpack_from(data, position)
            tag = (group << 16) | element
            position += 8
            if tag == _SEQUENCE_DELIMITATION and item_end is None:
                return position
            if tag != _ITEM:
                raise MalformedDataSetError(
                    f"expected an item in a sequence at offset {position - 8}, "
                    f"found ({group:04X},{element:04X})"
                )
            if length == _UNDEFINED_LENGTH:
                if fragments:
                    raise MalformedDataSetError(
                        f"pixel data fragment of undefined length at offset {position - 8}"
                    )
                position = self.elements(position, limit, depth, None, (), delimited=True)
                continue
            item_stop = position + length
            if item_stop > limit:
                raise MalformedDataSetError(f"item at offset {position - 8} truncated")
            if not fragments:
                self.elements(position, item_stop, depth, None, (), delimited=False)
            position = item_stop


def _truncated(tag: int, value_at: int, length: int, end: int) -> str:
    return (
        f"value of ({tag >> 16:04X},{tag & 0xFFFF:04X}) at offset {value_at} is truncated "
        f"({length} bytes declared, {end - value_at} present)"
    )


def _length_problem(tag: int, vr: bytes, length: int, value_at: int) -> str:
    size = _FIXED_SIZE.get(vr, 1)
    return (
        f"({tag >> 16:04X},{tag & 0xFFFF:04X}) at offset {value_at} has VR {vr.decode()} "
        f"and a length of {length}, not a multiple of {size}"
    )


def _order_problem(tag: int, previous: int, position: int) -> str:
    return (
        f"({tag >> 16:04X},{tag & 0xFFFF:04X}) at offset {position} does not follow "
        f"({previous >> 16:04X},{previous & 0xFFFF:04X}) in ascending tag order"
    )
