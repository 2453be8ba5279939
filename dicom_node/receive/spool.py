"""The durable spool: every acknowledged instance is on disk, named by its UIDs.

A received C-STORE data set is written exactly as it arrived (no decode, no
re-encode), behind a DICOM file meta header built here, to a temporary file in
the spool's own ``.incoming`` folder (as its fragments arrive:
:meth:`Spool.open_incoming`, :class:`IncomingInstance`); it is then parsed whole
(:func:`check_instance`) and refused, its file removed, when it could not be
processed; otherwise the file is fsynced and renamed
atomically to ``<root>/<study UID>/<series UID>/<SOP instance UID>.dcm``, the
folder is fsynced, the instance is recorded through an
:class:`InstanceRecorder`, and only then may the SCP answer success.

The spool, not the job store, is the truth: :meth:`Spool.scan` lists what is
on disk so that a restart indexes files whose row was lost (a power cut
between the rename and the database commit).

The temporary files are created ahead of need by a background thread (a small
pool of empty, open files): creating a file in a folder that the previous
instance's fsync has just committed waits on the file system's journal, and
that wait is better spent while the network delivers the next data set. The
pool makes its files in batches that alternate between two folders under
``.incoming``, so that a rename out of one folder never waits for the folder
lock that a file being created in it holds (measured here: 20 us against
230-330 us per rename).

UIDs become path parts only after they match the UID grammar of PS3.5 9.1.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import mmap
import os
import queue
import re
import struct
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pydicom.charset import decode_bytes
from pydicom.filereader import read_file_meta_info

from dicom_node.errors import (
    InstanceRefusedError,
    InvalidInstanceError,
    MalformedDataSetError,
    SpoolWriteError,
)
from dicom_node.receive.element_walker import (
    PIXEL_DATA,
    ByteString,
    read_top_level_elements,
    walk_data_set,
)
from dicom_node.receive.ul.pdu import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME

__all__ = [
    "STATUS_CANNOT_UNDERSTAND",
    "STATUS_DATA_SET_DOES_NOT_MATCH_SOP_CLASS",
    "STATUS_OUT_OF_RESOURCES",
    "IncomingInstance",
    "InstanceHeader",
    "InstanceLimits",
    "InstanceRecorder",
    "Spool",
    "SpooledInstance",
    "check_instance",
    "encode_file_meta",
    "is_valid_uid",
    "read_instance_header",
]

_UID_GRAMMAR = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
_SPECIFIC_CHARACTER_SET = 0x00080005
_SOP_CLASS_UID = 0x00080016
_SAMPLES_PER_PIXEL = 0x00280002
_NUMBER_OF_FRAMES = 0x00280008
_ROWS = 0x00280010
_COLUMNS = 0x00280011
_BITS_ALLOCATED = 0x00280100
_PHOTOMETRIC_INTERPRETATION = 0x00280004
_BITS_STORED = 0x00280101
_HIGH_BIT = 0x00280102
_PIXEL_REPRESENTATION = 0x00280103
_BITS_ALLOCATED_VALUES = frozenset({1, 8, 16, 32, 64})
# PS3.3 C.7.6.3.1.2 (the defined terms, retired ones included: old scanners send them).
_PHOTOMETRIC_INTERPRETATIONS = frozenset(
    {
        "MONOCHROME1", "MONOCHROME2", "PALETTE COLOR", "RGB", "YBR_FULL", "YBR_FULL_422",
        "YBR_PARTIAL_422", "YBR_PARTIAL_420", "YBR_ICT", "YBR_RCT", "HSV", "ARGB", "CMYK",
    }
)  # fmt: skip
_SOP_INSTANCE_UID = 0x00080018
_SERIES_DESCRIPTION = 0x0008103E
_STUDY_INSTANCE_UID = 0x0020000D
_SERIES_INSTANCE_UID = 0x0020000E  # everything we need comes before it
_HEADER_TAGS = frozenset(
    {
        _SPECIFIC_CHARACTER_SET,
        _SOP_INSTANCE_UID,
        _SERIES_DESCRIPTION,
        _STUDY_INSTANCE_UID,
        _SERIES_INSTANCE_UID,
    }
)
_CHECKED_TAGS = _HEADER_TAGS | {
    _SOP_CLASS_UID,
    _SAMPLES_PER_PIXEL,
    _NUMBER_OF_FRAMES,
    _PHOTOMETRIC_INTERPRETATION,
    _BITS_STORED,
    _HIGH_BIT,
    _PIXEL_REPRESENTATION,
    _ROWS,
    _COLUMNS,
    _BITS_ALLOCATED,
}
_NATIVE_SYNTAXES = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99"})
_INFLATE_CHUNK = 1 << 20
_FLUSH_BYTES = 1 << 18
# PS3.4 B.2.3 (C-STORE statuses).
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_DATA_SET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
STATUS_CANNOT_UNDERSTAND = 0xC211
_LATIN1_CHARSETS = frozenset({"", "ISO_IR 6", "ISO_IR 100", "ISO 2022 IR 6", "ISO 2022 IR 100"})
_IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
_DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99"
INCOMING = ".incoming"


def is_valid_uid(value: str) -> bool:
    """True when ``value`` is a DICOM UID (PS3.5 9.1): digits and dots, <= 64 chars."""
    return 0 < len(value) <= 64 and _UID_GRAMMAR.match(value) is not None


@dataclass(frozen=True, slots=True)
class InstanceHeader:
    """The identifying attributes of a received instance, read without decoding pixels."""

    sop_instance_uid: str
    study_uid: str
    series_uid: str
    series_description: str


@dataclass(frozen=True, slots=True)
class SpooledInstance:
    """An instance that is safely in the spool (what the job store records)."""

    sop_instance_uid: str
    sop_class_uid: str
    study_uid: str
    series_uid: str
    series_description: str
    transfer_syntax_uid: str
    calling_ae: str
    path: Path
    size_bytes: int
    received_at: float


class InstanceRecorder(Protocol):
    """Where the spool records instances (the service's job store)."""

    def has_instance(self, sop_instance_uid: str) -> bool:
        """True when this SOP instance is already stored."""
        ...

    def record_instance(self, instance: SpooledInstance) -> bool:
        """Record a stored instance; False when it was already recorded."""
        ...


def _element(group: int, element: int, vr: bytes, value: bytes, pad: bytes) -> bytes:
    if len(value) % 2:
        value += pad
    return struct.pack("<HH2sH", group, element, vr, len(value)) + value


def encode_file_meta(
    sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str, source_ae: str
) -> bytes:
    """Preamble, ``DICM`` and the File Meta Information group (PS3.10 7.1), explicit VR LE."""
    body = b"".join(
        (
            struct.pack("<HH2sHI", 0x0002, 0x0001, b"OB", 0, 2) + b"\x00\x01",
            _element(0x0002, 0x0002, b"UI", sop_class_uid.encode("ascii"), b"\x00"),
            _element(0x0002, 0x0003, b"UI", sop_instance_uid.encode("ascii"), b"\x00"),
            _element(0x0002, 0x0010, b"UI", transfer_syntax_uid.encode("ascii"), b"\x00"),
            _element(0x0002, 0x0012, b"UI", IMPLEMENTATION_CLASS_UID.encode("ascii"), b"\x00"),
            _element(0x0002, 0x0013, b"SH", IMPLEMENTATION_VERSION_NAME.encode("ascii"), b" "),
            _element(0x0002, 0x0016, b"AE", source_ae.strip().encode("ascii", "replace"), b" "),
        )
    )
    group_length = struct.pack("<HH2sHI", 0x0002, 0x0000, b"UL", 4, len(body))
    return b"\x00" * 128 + b"DICM" + group_length + body


def _uid_text(raw: bytes | None) -> str:
    return "" if raw is None else raw.decode("latin-1").rstrip("\x00 ").strip()


def _description_text(raw: bytes | None, character_sets: bytes | None) -> str:
    """Series Description decoded with the data set's Specific Character Set (PS3.5 6.1)."""
    if not raw:
        return ""
    terms = [term.strip() for term in (character_sets or b"").decode("latin-1").split("\\")]
    if all(term in _LATIN1_CHARSETS for term in terms):
        text = raw.decode("latin-1")
    elif terms == ["ISO_IR 192"]:
        text = raw.decode("utf-8", errors="replace")
    else:
        text = decode_bytes(raw, terms, set())
    return text.rstrip("\x00 ").strip()


def read_instance_header(encoded: ByteString, transfer_syntax_uid: str) -> InstanceHeader:
    """Read SOP instance, study and series UIDs (and description) from encoded bytes.

    The top-level elements up to (0020,000E) are walked without pydicom
    (:mod:`dicom_node.receive.element_walker`); pixel data are never touched. A deflated
    data set is inflated first. Raises :class:`InvalidInstanceError` when the
    header cannot be read or a UID is missing or malformed.
    """
    stream: ByteString = encoded
    if transfer_syntax_uid == _DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
        try:
            stream = zlib.decompressobj(-zlib.MAX_WBITS).decompress(encoded)
        except zlib.error as error:
            raise InvalidInstanceError(f"deflated data set cannot be inflated: {error}") from None
    try:
        values = read_top_level_elements(
            stream,
            implicit_vr=transfer_syntax_uid == _IMPLICIT_VR_LITTLE_ENDIAN,
            wanted=_HEADER_TAGS,
            stop_after=_SERIES_INSTANCE_UID,
        )
        header = InstanceHeader(
            sop_instance_uid=_uid_text(values.get(_SOP_INSTANCE_UID)),
            study_uid=_uid_text(values.get(_STUDY_INSTANCE_UID)),
            series_uid=_uid_text(values.get(_SERIES_INSTANCE_UID)),
            series_description=_description_text(
                values.get(_SERIES_DESCRIPTION), values.get(_SPECIFIC_CHARACTER_SET)
            ),
        )
    except (MalformedDataSetError, UnicodeDecodeError, LookupError) as error:
        raise InvalidInstanceError(f"data set header cannot be parsed: {error}") from None
    for name in ("sop_instance_uid", "study_uid", "series_uid"):
        value = getattr(header, name)
        if not is_valid_uid(value):
            raise InvalidInstanceError(f"{name} {value!r} is missing or not a valid UID")
    return header


@dataclass(frozen=True, slots=True)
class InstanceLimits:
    """What a received data set may cost before it is refused (``receive`` settings)."""

    max_instance_bytes: int = 2 << 30
    max_inflation_ratio: int = 200
    max_sequence_depth: int = 16


def _inflate(encoded: ByteString, limits: InstanceLimits, emit: Callable[[bytes], object]) -> None:
    """Inflate a deflated data set into ``emit``, refusing it past the limits or when cut short."""
    ceiling = min(
        limits.max_instance_bytes, max(len(encoded), 1 << 16) * limits.max_inflation_ratio
    )
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total = 0
    pending: ByteString = encoded
    try:
        while True:
            piece = inflater.decompress(pending, _INFLATE_CHUNK)
            total += len(piece)
            if total > ceiling:
                raise InstanceRefusedError(
                    f"deflated data set inflates to more than {ceiling} bytes (limits: "
                    f"{limits.max_inflation_ratio}x the deflated size, "
                    f"{limits.max_instance_bytes} bytes)",
                    status=STATUS_OUT_OF_RESOURCES,
                    reason="inflation",
                )
            emit(piece)
            pending = inflater.unconsumed_tail
            if inflater.eof or (not pending and not piece):
                break
    except zlib.error as error:
        raise InstanceRefusedError(
            f"deflated data set cannot be inflated: {error}",
            status=STATUS_CANNOT_UNDERSTAND,
            reason="malformed",
        ) from None
    if not inflater.eof:
        raise InstanceRefusedError(
            "deflated data set is cut short (the deflate stream does not end)",
            status=STATUS_CANNOT_UNDERSTAND,
            reason="truncated",
        )
    if inflater.unused_data.strip(b"\x00"):
        raise InstanceRefusedError(
            f"{len(inflater.unused_data)} bytes follow the end of the deflate stream",
            status=STATUS_CANNOT_UNDERSTAND,
            reason="malformed",
        )


@contextlib.contextmanager
def _inflated(
    encoded: ByteString, limits: InstanceLimits, scratch_dir: str | None
) -> Iterator[ByteString]:
    """The inflated data set: in memory, or (``scratch_dir``) in an unnamed file, mapped.

    In a file, memory holds one chunk of the inflation at a time, and the walk
    touches only the pages with element headers.
    """
    if scratch_dir is None:
        pieces: list[bytes] = []
        _inflate(encoded, limits, pieces.append)
        yield b"".join(pieces)
        return
    with tempfile.TemporaryFile(dir=scratch_dir) as scratch:
        _inflate(encoded, limits, scratch.write)
        scratch.flush()
        if scratch.tell() == 0:
            yield b""
            return
        mapping = mmap.mmap(scratch.fileno(), 0, access=mmap.ACCESS_READ)
        view = memoryview(mapping)
        try:
            yield view
        finally:
            view.release()
            with contextlib.suppress(BufferError):  # a traceback holds a slice: unmapped later
                mapping.close()


def _unsigned_short(values: dict[int, bytes], tag: int) -> int | None:
    raw = values.get(tag)
    if raw is None or len(raw) < 2:
        return None
    value: int = struct.unpack_from("<H", raw)[0]
    return value


def _pixel_module_problem(values: dict[int, bytes]) -> str:
    """Why the Image Pixel attributes (PS3.3 C.7.6.3) cannot describe the Pixel Data, or ''."""
    rows = _unsigned_short(values, _ROWS)
    columns = _unsigned_short(values, _COLUMNS)
    allocated = _unsigned_short(values, _BITS_ALLOCATED)
    stored = _unsigned_short(values, _BITS_STORED)
    high_bit = _unsigned_short(values, _HIGH_BIT)
    representation = _unsigned_short(values, _PIXEL_REPRESENTATION)
    photometric = values.get(_PHOTOMETRIC_INTERPRETATION, b"").decode("latin-1").strip("\x00 ")
    checks = (
        (bool(rows and columns), "Rows or Columns is missing or zero"),
        (
            allocated in _BITS_ALLOCATED_VALUES,
            f"Bits Allocated {allocated} is not 1, 8, 16, 32 or 64",
        ),
        (
            stored is not None and allocated is not None and 0 < stored <= allocated,
            f"Bits Stored {stored} is not 1 to Bits Allocated ({allocated})",
        ),
        (
            stored is not None and high_bit == stored - 1,
            f"High Bit {high_bit} is not Bits Stored - 1",
        ),
        (representation in (0, 1), f"Pixel Representation {representation} is not 0 or 1"),
        (
            photometric in _PHOTOMETRIC_INTERPRETATIONS,
            f"Photometric Interpretation {photometric!r} is missing or unknown",
        ),
    )
    return next((problem for holds, problem in checks if not holds), "")


def _check_pixel_data(values: dict[int, bytes], *, native: bool) -> None:
    """Pixel Data must be described by the Image Pixel attributes, and (native) be as long."""
    raw_length = values.get(PIXEL_DATA)
    if raw_length is None:
        return
    problem = _pixel_module_problem(values)
    if problem:
        raise InstanceRefusedError(
            f"Pixel Data cannot be decoded: {problem}",
            status=STATUS_CANNOT_UNDERSTAND,
            reason="pixel_module",
        )
    present: int = struct.unpack("<I", raw_length)[0]
    if not native or present == 0xFFFFFFFF:
        return
    rows = _unsigned_short(values, _ROWS) or 0
    columns = _unsigned_short(values, _COLUMNS) or 0
    bits = _unsigned_short(values, _BITS_ALLOCATED) or 0
    samples = _unsigned_short(values, _SAMPLES_PER_PIXEL) or 1
    frames_text = values.get(_NUMBER_OF_FRAMES, b"1").decode("latin-1").strip("\x00 ")
    try:
        frames = int(frames_text or "1")
    except ValueError:
        raise InstanceRefusedError(
            f"Number of Frames {frames_text!r} is not a number",
            status=STATUS_CANNOT_UNDERSTAND,
            reason="malformed",
        ) from None
    expected = (rows * columns * samples * max(frames, 1) * bits + 7) // 8
    if present < expected:
        raise InstanceRefusedError(
            f"Pixel Data holds {present} bytes; {rows} rows x {columns} columns x {samples} "
            f"samples x {frames} frames x {bits} bits need {expected}",
            status=STATUS_CANNOT_UNDERSTAND,
            reason="pixel_data",
        )


def check_instance(
    encoded: ByteString,
    *,
    transfer_syntax_uid: str,
    sop_class_uid: str,
    sop_instance_uid: str,
    limits: InstanceLimits,
    scratch_dir: str | None = None,
) -> InstanceHeader:
    """Parse a whole received data set and refuse what could not be processed.

    The whole element stream is walked (:func:`~dicom_node.receive.element_walker.walk_data_set`:
    truncation, element order, lengths, nesting); a deflated data set is inflated
    first within the size and ratio limits. The data set's SOP Class UID must be
    the presentation context's abstract syntax (``sop_class_uid``), its SOP
    Instance UID the command's (``sop_instance_uid``), and native Pixel Data must
    be as long as its image attributes declare.

    A deflated data set is inflated into an unnamed file in ``scratch_dir``
    when given (memory then stays small whatever it inflates to), else in memory.

    Raises
    ------
    InstanceRefusedError
        With the C-STORE failure status and a reason for the log and metrics.
    """
    if len(encoded) > limits.max_instance_bytes:
        raise InstanceRefusedError(
            f"data set of {len(encoded)} bytes exceeds receive.max_instance_bytes "
            f"({limits.max_instance_bytes})",
            status=STATUS_OUT_OF_RESOURCES,
            reason="too_large",
        )
    try:
        if transfer_syntax_uid == _DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
            with _inflated(encoded, limits, scratch_dir) as stream:
                values = walk_data_set(
                    stream, implicit_vr=False, wanted=_CHECKED_TAGS,
                    max_depth=limits.max_sequence_depth,
                )  # fmt: skip
        else:
            values = walk_data_set(
                encoded,
                implicit_vr=transfer_syntax_uid == _IMPLICIT_VR_LITTLE_ENDIAN,
                wanted=_CHECKED_TAGS,
                max_depth=limits.max_sequence_depth,
            )
    except MalformedDataSetError as error:
        text = str(error)
        reason = "truncated" if "truncated" in text or "data end" in text else "malformed"
        raise InstanceRefusedError(
            f"data set cannot be parsed: {text}", status=STATUS_CANNOT_UNDERSTAND, reason=reason
        ) from None
    data_set_class = _uid_text(values.get(_SOP_CLASS_UID))
    if data_set_class != sop_class_uid:
        raise InstanceRefusedError(
            f"SOP Class UID differs from the context's: data set {data_set_class!r}, "
            f"context {sop_class_uid}"
            if data_set_class
            else "data set has no SOP Class UID",
            status=STATUS_DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
            reason="sop_class",
        )
    data_set_instance = _uid_text(values.get(_SOP_INSTANCE_UID))
    if data_set_instance != sop_instance_uid:
        raise InstanceRefusedError(
            f"SOP Instance UID differs from the request's: data set {data_set_instance!r}, "
            f"request {sop_instance_uid}",
            status=STATUS_CANNOT_UNDERSTAND,
            reason="sop_instance",
        )
    _check_pixel_data(values, native=transfer_syntax_uid in _NATIVE_SYNTAXES)
    try:
        header = InstanceHeader(
            sop_instance_uid=data_set_instance,
            study_uid=_uid_text(values.get(_STUDY_INSTANCE_UID)),
            series_uid=_uid_text(values.get(_SERIES_INSTANCE_UID)),
            series_description=_description_text(
                values.get(_SERIES_DESCRIPTION), values.get(_SPECIFIC_CHARACTER_SET)
            ),
        )
    except (UnicodeDecodeError, LookupError) as error:
        raise InstanceRefusedError(
            f"Series Description cannot be decoded: {error}",
            status=STATUS_CANNOT_UNDERSTAND,
            reason="malformed",
        ) from None
    for name in ("sop_instance_uid", "study_uid", "series_uid"):
        value = getattr(header, name)
        if not is_valid_uid(value):
            raise InstanceRefusedError(
                f"{name} {value!r} is missing or not a valid UID",
                status=STATUS_CANNOT_UNDERSTAND,
                reason="malformed",
            )
    return header


LOGGER = logging.getLogger(__name__)

_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC


class _TemporaryFilePool:
    """Empty temporary files, created and opened ahead of need by a background thread.

    :meth:`take` returns one from the pool, or creates one at once when the pool
    is empty (so an error such as a full disk surfaces in the caller, as before).
    """

    def __init__(self, folders: tuple[str, str], prefix: str, size: int = 4) -> None:
        self._folders = folders
        self._prefix = prefix
        self._size = size
        self._ready: queue.Queue[tuple[str, int]] = queue.Queue(maxsize=size)
        self._sequence = itertools.count()
        self._pooled: set[str] = set()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def create(self) -> tuple[str, int]:
        # A batch as long as the pool: the file taken next (the oldest in the pool)
        # is always in the other folder than the one being created.
        number = next(self._sequence)
        folder = self._folders[(number // self._size) % 2]
        path = f"{folder}/{self._prefix}{number}.part"
        return path, os.open(path, _OPEN_FLAGS, 0o640)

    def take(self) -> tuple[str, int]:
        if self._thread is None:
            with self._lock:
                if self._thread is None and not self._stopped.is_set():
                    self._thread = threading.Thread(
                        target=self._fill, name="spool-tempfiles", daemon=True
                    )
                    self._thread.start()
        try:
            path, descriptor = self._ready.get_nowait()
        except queue.Empty:
            return self.create()
        with self._lock:
            self._pooled.discard(path)
        return path, descriptor

    def is_pooled(self, path: str) -> bool:
        with self._lock:
            return path in self._pooled

    def _fill(self) -> None:
        while not self._stopped.is_set():
            try:
                path, descriptor = self.create()
            except FileNotFoundError:
                # The spool folder is gone (removed with its owner, e.g. a test's
                # temporary folder): nothing to fill; take() creates files inline and
                # reports the error itself.
                LOGGER.warning("spool: %s is gone; no temporary files made ahead", self._folders)
                break
            except OSError as error:
                LOGGER.warning("spool: cannot create a temporary file ahead: %s", error)
                self._stopped.wait(1.0)
                continue
            with self._lock:
                self._pooled.add(path)
            while not self._stopped.is_set():
                try:
                    self._ready.put((path, descriptor), timeout=0.5)
                    break
                except queue.Full:
                    if not os.path.isdir(self._folders[0]):
                        self._stopped.set()  # the spool is gone: let the files go
            else:
                self._discard(path, descriptor)
        self._drain()

    def stop(self) -> None:
        """Stop the filler, close and delete the files it made that were not used."""
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._drain()

    def _drain(self) -> None:
        while True:
            try:
                path, descriptor = self._ready.get_nowait()
            except queue.Empty:
                break
            self._discard(path, descriptor)

    def _discard(self, path: str, descriptor: int) -> None:
        os.close(descriptor)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        with self._lock:
            self._pooled.discard(path)


class IncomingInstance:
    """A C-STORE data set being received, written to a temporary file as it arrives.

    Fragments are gathered into a buffer of at most ``_FLUSH_BYTES`` and
    written when it fills, so memory stays bounded whatever the instance's
    size, and tiny fragments cost one system call per buffer, not each. Past
    ``limit`` bytes nothing more is written: :meth:`finish` then refuses the
    instance (0xA700). A write error is kept and raised by :meth:`finish`
    (:class:`SpoolWriteError`), so that the rest of the message is still read.
    """

    __slots__ = (
        "_buffer",
        "_descriptor",
        "_error",
        "_flushed",
        "_limit",
        "calling_ae",
        "data_bytes",
        "meta_length",
        "path",
        "sop_class_uid",
        "sop_instance_uid",
        "transfer_syntax_uid",
    )

    def __init__(
        self,
        path: str,
        descriptor: int,
        *,
        meta_length: int,
        limit: int,
        sop_class_uid: str,
        sop_instance_uid: str,
        transfer_syntax_uid: str,
        calling_ae: str,
    ) -> None:
        self.path = path
        self._descriptor: int | None = descriptor
        self._buffer = bytearray()
        self._limit = limit
        self._error: OSError | None = None
        self._flushed = False
        self.meta_length = meta_length
        self.data_bytes = 0
        self.sop_class_uid = sop_class_uid
        self.sop_instance_uid = sop_instance_uid
        self.transfer_syntax_uid = transfer_syntax_uid
        self.calling_ae = calling_ae

    def write(self, fragment: ByteString) -> None:
        """Append a fragment of the data set (never raises)."""
        self.data_bytes += len(fragment)
        if self.data_bytes > self._limit or self._error is not None:
            return
        buffer = self._buffer
        buffer += fragment
        if len(buffer) >= _FLUSH_BYTES:
            self._flush()

    def _flush(self) -> None:
        buffer = self._buffer
        if not buffer or self._descriptor is None:
            return
        self._flushed = True
        try:
            with memoryview(buffer) as whole:
                written = 0
                while written < len(whole):
                    written += os.write(self._descriptor, whole[written:])
        except OSError as error:
            self._error = error
        buffer.clear()

    def received(self) -> None:
        """Raise when the data set went past the size limit while it arrived."""
        if self.data_bytes > self._limit:
            raise InstanceRefusedError(
                f"data set of more than {self._limit} bytes exceeds receive.max_instance_bytes",
                status=STATUS_OUT_OF_RESOURCES,
                reason="too_large",
            )

    def finish(self) -> None:
        """Write what is buffered; raise what went wrong while writing."""
        self._flush()
        if self._error is not None:
            raise SpoolWriteError(
                f"cannot store {self.sop_instance_uid}.dcm: {self._error.strerror or self._error}"
            )

    @contextlib.contextmanager
    def mapped(self) -> Iterator[ByteString]:
        """The data set (after the file meta): still in the buffer, or memory-mapped read-only.

        A data set smaller than the buffer was never written yet: it is read
        where it is (no system call), and written once it passed the checks.
        """
        if self.data_bytes == 0:
            yield b""
            return
        if not self._flushed:
            with memoryview(self._buffer) as whole:
                body = whole[self.meta_length :]
                try:
                    yield body
                finally:
                    body.release()
            return
        self.finish()
        with open(self.path, "rb") as handle:
            mapping = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        view = memoryview(mapping)
        body = view[self.meta_length :]
        try:
            yield body
        finally:
            body.release()
            view.release()
            try:
                mapping.close()
            except BufferError:
                # A slice of the view is still referenced (a traceback's frame): the
                # mapping is unmapped when that is collected.
                LOGGER.debug("spool: mapping of %s closed later", self.path)

    def release(self) -> int:
        """Hand the open descriptor over (to be synced and closed by the spool)."""
        descriptor = self._descriptor
        assert descriptor is not None
        self._descriptor = None
        return descriptor

    def discard(self) -> None:
        """Close and delete the temporary file unless it was handed over and renamed."""
        if self._descriptor is not None:
            os.close(self._descriptor)
            self._descriptor = None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        self._buffer = bytearray()


class Spool:
    """Files of received instances under one root folder.

    Parameters
    ----------
    root
        The spool folder (created when missing).
    fsync
        fsync each file and its folder before an instance counts as stored.
    limits
        What a received data set may cost (size, inflation, sequence nesting).
    """

    def __init__(
        self, root: Path, *, fsync: bool = True, limits: InstanceLimits | None = None
    ) -> None:
        self.root = root
        self.fsync = fsync
        self.limits = limits or InstanceLimits()
        self._incoming = root / INCOMING
        batches = (self._incoming / "a", self._incoming / "b")
        for folder in batches:
            folder.mkdir(parents=True, exist_ok=True)
        # The hot path works on strings: pathlib costs tens of microseconds per instance.
        self._root_text = str(root)
        self._incoming_text = str(self._incoming)
        self._temporary_files = _TemporaryFilePool(
            (str(batches[0]), str(batches[1])), f"{os.getpid()}."
        )
        self._known_dirs: set[str] = set()

    def close(self) -> None:
        """Stop creating temporary files ahead and delete the unused ones."""
        self._temporary_files.stop()

    def path_for(self, study_uid: str, series_uid: str, sop_instance_uid: str) -> Path:
        """Where an instance lives; every UID must pass :func:`is_valid_uid`."""
        for value in (study_uid, series_uid, sop_instance_uid):
            if not is_valid_uid(value):
                raise InvalidInstanceError(f"{value!r} is not a valid UID; refusing it as a path")
        return self.root / study_uid / series_uid / f"{sop_instance_uid}.dcm"

    def store(
        self,
        encoded_dataset: ByteString,
        *,
        sop_class_uid: str,
        sop_instance_uid: str,
        transfer_syntax_uid: str,
        calling_ae: str,
        recorder: InstanceRecorder,
    ) -> tuple[SpooledInstance | None, bool]:
        """Store a received data set durably and record it.

        Returns ``(instance, is_new)``; a SOP instance that is already stored is not
        written again (``is_new`` False, instance ``None``).

        Raises
        ------
        InvalidInstanceError
            The data set's UIDs are malformed or do not match the request
            (:class:`InstanceRefusedError`: the data set cannot be parsed whole, or
            breaks a limit; it carries the C-STORE status).
        SpoolWriteError
            Writing, syncing or renaming failed (disk full, permissions).
        """
        if not is_valid_uid(sop_class_uid):
            raise InvalidInstanceError(f"SOP class UID {sop_class_uid!r} is not a valid UID")
        header = check_instance(
            encoded_dataset,
            transfer_syntax_uid=transfer_syntax_uid,
            sop_class_uid=sop_class_uid,
            sop_instance_uid=sop_instance_uid,
            limits=self.limits,
            scratch_dir=self._incoming_text,
        )
        if recorder.has_instance(sop_instance_uid):
            return None, False
        # The header's UIDs passed the UID grammar: safe as path parts.
        folder = f"{self._root_text}/{header.study_uid}/{header.series_uid}"
        meta = encode_file_meta(sop_class_uid, sop_instance_uid, transfer_syntax_uid, calling_ae)
        path = self._write_atomically(folder, f"{sop_instance_uid}.dcm", meta, encoded_dataset)
        instance = SpooledInstance(
            sop_instance_uid=sop_instance_uid,
            sop_class_uid=sop_class_uid,
            study_uid=header.study_uid,
            series_uid=header.series_uid,
            series_description=header.series_description,
            transfer_syntax_uid=str(transfer_syntax_uid),
            calling_ae=calling_ae.strip(),
            path=Path(path),
            size_bytes=len(meta) + len(encoded_dataset),
            received_at=time.time(),
        )
        return instance, recorder.record_instance(instance)

    def open_incoming(
        self,
        *,
        sop_class_uid: str,
        sop_instance_uid: str,
        transfer_syntax_uid: str,
        calling_ae: str,
    ) -> IncomingInstance | None:
        """A temporary file for a data set that is about to arrive, its file meta written.

        ``None`` when the command's UIDs are not UIDs (the data set is then
        received in memory and refused by :meth:`store`). Raises
        :class:`SpoolWriteError` when no temporary file can be made.
        """
        if not (is_valid_uid(sop_class_uid) and is_valid_uid(sop_instance_uid)):
            return None
        meta = encode_file_meta(sop_class_uid, sop_instance_uid, transfer_syntax_uid, calling_ae)
        try:
            temporary, descriptor = self._temporary_files.take()
        except OSError as error:
            raise SpoolWriteError(
                f"cannot store {sop_instance_uid}.dcm: {error.strerror or error}"
            ) from error
        incoming = IncomingInstance(
            temporary,
            descriptor,
            meta_length=len(meta),
            limit=self.limits.max_instance_bytes,
            sop_class_uid=sop_class_uid,
            sop_instance_uid=sop_instance_uid,
            transfer_syntax_uid=transfer_syntax_uid,
            calling_ae=calling_ae,
        )
        incoming.write(meta)
        incoming.data_bytes = 0
        return incoming

    def store_incoming(
        self, incoming: IncomingInstance, recorder: InstanceRecorder
    ) -> tuple[SpooledInstance | None, bool]:
        """Check and store a data set received into :meth:`open_incoming`'s file.

        The same checks as :meth:`store`, on the file (memory-mapped, never read
        into memory whole); the temporary file is removed whatever the outcome
        unless it becomes the spooled instance.
        """
        try:
            incoming.received()
            with incoming.mapped() as data_set:
                header = check_instance(
                    data_set,
                    transfer_syntax_uid=incoming.transfer_syntax_uid,
                    sop_class_uid=incoming.sop_class_uid,
                    sop_instance_uid=incoming.sop_instance_uid,
                    limits=self.limits,
                    scratch_dir=self._incoming_text,
                )
            if recorder.has_instance(incoming.sop_instance_uid):
                incoming.discard()
                return None, False
            folder = f"{self._root_text}/{header.study_uid}/{header.series_uid}"
            name = f"{incoming.sop_instance_uid}.dcm"
            incoming.finish()
            try:
                self._prepare_folder(folder)
                descriptor = incoming.release()
                path = self._commit(folder, name, incoming.path, descriptor)
            except OSError as error:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(incoming.path)
                raise SpoolWriteError(f"cannot store {name}: {error.strerror or error}") from error
        finally:
            incoming.discard()
        instance = SpooledInstance(
            sop_instance_uid=incoming.sop_instance_uid,
            sop_class_uid=incoming.sop_class_uid,
            study_uid=header.study_uid,
            series_uid=header.series_uid,
            series_description=header.series_description,
            transfer_syntax_uid=str(incoming.transfer_syntax_uid),
            calling_ae=incoming.calling_ae.strip(),
            path=Path(path),
            size_bytes=incoming.meta_length + incoming.data_bytes,
            received_at=time.time(),
        )
        return instance, recorder.record_instance(instance)

    def _prepare_folder(self, folder: str) -> None:
        if folder not in self._known_dirs:
            os.makedirs(folder, exist_ok=True)

    def _commit(self, folder: str, name: str, temporary: str, descriptor: int) -> str:
        """fdatasync and close the written temporary file, rename it, fsync the folders."""
        path = f"{folder}/{name}"
        try:
            if self.fsync:
                os.fdatasync(descriptor)
        finally:
            os.close(descriptor)
        os.replace(temporary, path)
        if self.fsync:
            self._fsync_dir(folder)
            if folder not in self._known_dirs:
                series_parent = os.path.dirname(folder)
                self._fsync_dir(series_parent)
                self._fsync_dir(os.path.dirname(series_parent))
        self._known_dirs.add(folder)
        return path

    def _write_atomically(self, folder: str, name: str, meta: bytes, body: ByteString) -> str:
        """Temporary file, write, fdatasync, atomic rename, fsync of the series folder.

        A series folder created by this process has its parent folders fsynced once,
        so that the new folder entries survive a power cut as well. Returns the path.
        """
        temporary = ""
        try:
            self._prepare_folder(folder)
            temporary, descriptor = self._temporary_files.take()
            try:
                total = len(meta) + len(body)
                written = os.writev(descriptor, (meta, body))
                if written < total:  # a short write (signal, nearly full disk): finish it
                    rest = memoryview(meta + bytes(body))[written:]
                    while rest:
                        rest = rest[os.write(descriptor, rest) :]
            except OSError:
                os.close(descriptor)
                raise
            path = self._commit(folder, name, temporary, descriptor)
        except OSError as error:
            if temporary:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temporary)
            raise SpoolWriteError(f"cannot store {name}: {error.strerror or error}") from error
        return path

    @staticmethod
    def _fsync_dir(folder: str | Path) -> None:
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)

    def discard_incomplete(self) -> int:
        """Delete temporary files left by a crash mid-write; returns how many."""
        count = 0
        for leftover in self._incoming.rglob("*.part"):
            if self._temporary_files.is_pooled(str(leftover)):
                continue  # made ahead by this process, not left by a crash
            leftover.unlink(missing_ok=True)
            count += 1
        return count

    def scan(self) -> Iterator[Path]:
        """Every stored instance file (``<study>/<series>/<sop>.dcm``)."""
        for study in self.root.iterdir():
            if study.name == INCOMING or not study.is_dir():
                continue
            for series in study.iterdir():
                if series.is_dir():
                    yield from series.glob("*.dcm")

    def read_spooled(self, path: Path) -> SpooledInstance:
        """Rebuild the record of a spooled file from its file meta and header."""
        try:
            meta = read_file_meta_info(path)
            with path.open("rb") as handle:
                handle.seek(132)
                group_length_bytes = handle.read(12)
                group_length = struct.unpack("<I", group_length_bytes[8:12])[0]
                handle.seek(132 + 12 + group_length)
                encoded = handle.read()
        except (OSError, ValueError, struct.error) as error:
            raise InvalidInstanceError(f"spooled file {path} cannot be read: {error}") from None
        syntax = str(meta.get("TransferSyntaxUID", ""))
        header = read_instance_header(encoded, syntax)
        return SpooledInstance(
            sop_instance_uid=header.sop_instance_uid,
            sop_class_uid=str(meta.get("MediaStorageSOPClassUID", "")),
            study_uid=header.study_uid,
            series_uid=header.series_uid,
            series_description=header.series_description,
            transfer_syntax_uid=syntax,
            calling_ae=str(meta.get("SourceApplicationEntityTitle", "") or "").strip(),
            path=path,
            size_bytes=path.stat().st_size,
            received_at=path.stat().st_mtime,
        )
