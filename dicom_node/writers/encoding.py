"""Part 10 encoding of a derived series, with the elements its slices share encoded once.

A derived MR series is a few hundred single-frame instances that share most of
their elements (patient, study, equipment, Contributing Equipment, Real World
Value Mapping: the same :class:`~pydicom.dataelem.DataElement` objects, see
:mod:`dicom_node.writers.derived_mr`). ``pydicom.dcmwrite`` encodes them again
for every file, which is most of the time spent writing results. Here each
shared element is encoded once and its bytes reused; the per-slice elements
(UIDs, position, source references, pixels) are encoded per file. The output
is byte-for-byte what ``Dataset.save_as(..., enforce_file_format=True)`` writes
(the unit tests compare both), for Explicit VR Little Endian only.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import (
    correct_ambiguous_vr,
    correct_ambiguous_vr_element,
    write_data_element,
    write_file_meta_info,
)
from pydicom.uid import ExplicitVRLittleEndian

from dicom_node.writers.errors import WriterError

__all__ = ["encode_series"]

_PREAMBLE = b"\0" * 128 + b"DICM"


def _buffer() -> DicomBytesIO:
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = False
    return buffer


def _encode_element(dataset: Dataset, tag: int) -> bytes:
    element = correct_ambiguous_vr_element(dataset[tag], dataset, True)
    buffer = _buffer()
    # Text is encoded in the dataset's Specific Character Set (PS3.5 6.1), as
    # pydicom's own dataset writer does; without it non-ASCII names become '?'.
    write_data_element(buffer, element, dataset.get("SpecificCharacterSet"))
    return bytes(buffer.getvalue())


def encode_series(datasets: Sequence[Dataset]) -> Iterator[bytes]:
    """Yield the DICOM file (Part 10) bytes of each dataset, in order.

    Raises
    ------
    WriterError
        When a dataset is not Explicit VR Little Endian.
    """
    if not datasets:
        return
    for dataset in datasets:
        syntax = dataset.file_meta.get("TransferSyntaxUID")
        if syntax != ExplicitVRLittleEndian:
            raise WriterError(
                f"series encoding supports Explicit VR Little Endian only, "
                f"got {syntax} for {dataset.SOPInstanceUID}"
            )
    first = datasets[0]
    correct_ambiguous_vr(first, True)  # resolves shared elements in place for every slice
    first_tags = sorted(first.keys())  # iterating a Dataset yields elements, not tags
    shared = {
        tag
        for tag in first_tags
        if all(other.get_item(tag) is first.get_item(tag) for other in datasets[1:])
    }
    cache: dict[int, bytes] = {}
    for dataset in datasets:
        buffer = _buffer()
        buffer.write(_PREAMBLE)
        write_file_meta_info(buffer, dataset.file_meta, enforce_standard=True)
        for tag in sorted(dataset.keys()):
            if tag in shared:
                encoded = cache.get(tag)
                if encoded is None:
                    encoded = cache[tag] = _encode_element(dataset, tag)
            else:
                encoded = _encode_element(dataset, tag)
            buffer.write(encoded)
        yield bytes(buffer.getvalue())
