"""SR references to SEG segments, from one pass over each SEG's frames.

highdicom's :meth:`highdicom.sr.ReferencedSegment.from_segmentation` walks every
frame of the SEG for each segment it is asked about, so a report on ``n``
lesions of a SEG with ``f`` frames costs ``n * f`` frame visits (minutes and
gigabytes on a noisy exam with a thousand candidate lesions). :class:`SegmentReferences`
indexes each SEG once (segment number -> the source images of its frames, in
frame order, each instance once) and builds the same content item from that
index: the written bytes do not change, the cost is ``n + f``.
"""

from __future__ import annotations

from dataclasses import dataclass

import highdicom as hd
from pydicom.dataset import Dataset

from dicom_node.writers.errors import WriterError

__all__ = ["SegmentReferences"]


@dataclass(frozen=True, slots=True)
class _Source:
    sop_class_uid: str
    sop_instance_uid: str
    frame_numbers: tuple[int, ...] | None


class SegmentReferences:
    """``ReferencedSegment`` items for the segments of one or more SEGs, each SEG indexed once."""

    def __init__(self) -> None:
        self._indices: dict[str, dict[int, list[_Source]]] = {}
        # one content item per source image, shared by the segments that cite it (same bytes)
        self._items: dict[_Source, hd.sr.SourceImageForSegmentation] = {}

    def reference(self, seg: Dataset, segment_number: int) -> hd.sr.ReferencedSegment:
        """The TID 1411 Referenced Segment of ``segment_number`` in ``seg``.

        Identical to ``ReferencedSegment.from_segmentation(seg, segment_number)``
        (the source images named by the Derivation Image Sequence of the
        segment's frames, first occurrence first). A segment without frames, or
        whose frames name no source image, is left to highdicom (it raises, or
        falls back to the Referenced Series Sequence).
        """
        uid = str(seg.SOPInstanceUID)
        index = self._indices.get(uid)
        if index is None:
            index = self._indices[uid] = _index(seg)
        sources = index.get(segment_number)
        if not sources:
            if segment_number in index:  # frames naming no source image: the series, as highdicom
                return hd.sr.ReferencedSegment.from_segmentation(seg, segment_number)
            raise WriterError(f"the SEG has no frame of segment {segment_number}")
        return hd.sr.ReferencedSegment(
            sop_class_uid=seg.SOPClassUID,
            sop_instance_uid=seg.SOPInstanceUID,
            segment_number=segment_number,
            source_images=[self._item(source) for source in sources],
        )

    def _item(self, source: _Source) -> hd.sr.SourceImageForSegmentation:
        item = self._items.get(source)
        if item is None:
            item = self._items[source] = hd.sr.SourceImageForSegmentation(
                referenced_sop_class_uid=source.sop_class_uid,
                referenced_sop_instance_uid=source.sop_instance_uid,
                referenced_frame_numbers=(
                    list(source.frame_numbers) if source.frame_numbers is not None else None
                ),
            )
        return item


def _index(seg: Dataset) -> dict[int, list[_Source]]:
    """Segment number -> its frames' source images, in frame order, each instance once."""
    index: dict[int, list[_Source]] = {}
    seen: dict[int, set[str]] = {}
    shared = (
        seg.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in seg else None
    )
    for frame in seg.PerFrameFunctionalGroupsSequence:
        # a SEG of one segment may name it once, in the shared functional groups
        identification = frame if "SegmentIdentificationSequence" in frame else shared
        if identification is None or "SegmentIdentificationSequence" not in identification:
            raise WriterError("a SEG frame names no segment (Segment Identification Sequence)")
        number = int(identification.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        sources = index.setdefault(number, [])
        named = seen.setdefault(number, set())
        for derivation in getattr(frame, "DerivationImageSequence", []):
            for image in getattr(derivation, "SourceImageSequence", []):
                instance = str(image.ReferencedSOPInstanceUID)
                if instance in named:
                    continue
                named.add(instance)
                frames = getattr(image, "ReferencedFrameNumber", None)
                numbers: tuple[int, ...] | None = None
                if frames is not None:
                    values = [frames] if image["ReferencedFrameNumber"].VM == 1 else frames
                    numbers = tuple(int(v) for v in values)
                sources.append(_Source(str(image.ReferencedSOPClassUID), instance, numbers))
    return index
