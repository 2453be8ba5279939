"""A seeded mutation run of a recorded storage association against the node's receiver.

:func:`recorded_session` builds what a scanner sends in one association (an
A-ASSOCIATE-RQ, C-STOREs of small MR images in explicit, implicit and deflated
explicit VR little endian, an A-RELEASE-RQ); :func:`run_mutations` replays it
many times, each time with one seeded mutation, either of a data set (then
framed correctly, so that the node's reassembly is not in question: what it
stores must be that mutated data set byte for byte) or of the raw byte stream
(framing included). Each case is sent whole, the sending side is shut, and the
node's answers are read until it closes; a case that takes longer than
``case_timeout`` is a hang.

Used by ``tests/integration/test_mutation_run.py`` (a few hundred cases) and
``python -m benchmarks mutation_run`` (more).
"""

from __future__ import annotations

import random
import socket
import struct
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
)

from dicom_node.receive.scp import DicomReceiver
from dicom_node.receive.ul.pdu import (
    AssociationRequest,
    PresentationContextProposal,
    encode_associate_rq,
    encode_p_data,
    encode_release_rq,
    iter_pdvs,
)
from tests.helpers.scp_harness import encode_data_set, mr_data_set, store_command

__all__ = ["MutationReport", "recorded_session", "run_mutations"]

_CONTEXTS = (
    PresentationContextProposal(1, MRImageStorage, (ExplicitVRLittleEndian,)),
    PresentationContextProposal(3, MRImageStorage, (ImplicitVRLittleEndian,)),
    PresentationContextProposal(5, MRImageStorage, (DeflatedExplicitVRLittleEndian,)),
)
_PDU = 16384


@dataclass(frozen=True, slots=True)
class _Case:
    stream: bytes
    # message id -> the data set bytes that a correct reassembly yields (None: unknown)
    sent: dict[int, bytes | None]
    uids: dict[int, str]


@dataclass(slots=True)
class MutationReport:
    """What a run found; :meth:`problems` lists every broken expectation."""

    cases: int = 0
    acknowledged: int = 0
    refused: int = 0
    seconds: float = 0.0
    slowest_case_seconds: float = 0.0
    failures: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        """The failures, one line each (empty when the run held)."""
        return self.failures


def _context_id(number: int) -> int:
    """Instance ``number`` (from 1) goes in explicit, implicit, deflated VR LE in turn."""
    return _CONTEXTS[(number - 1) % len(_CONTEXTS)].context_id


def _sequence_data_set(uid: str, number: int) -> bytes:
    ds = mr_data_set(uid, series=f"1.2.826.1.{number % 2 + 1}")
    ds.Rows = ds.Columns = 8
    ds.PixelData = bytes((i * 7 + number) % 256 for i in range(128))
    code = Dataset()
    code.CodeValue = "113691"
    code.CodingSchemeDesignator = "DCM"
    code.CodeMeaning = "IHE Radiation Dose Structured Report"
    ds.ProcedureCodeSequence = Sequence([code])
    context = _context_id(number)
    encoded = encode_data_set(ds, implicit=context == 3)
    if context == 5:
        compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
        encoded = compressor.compress(encoded) + compressor.flush()
    return encoded


def recorded_session(instances: int = 2, prefix: str = "1.2.826.5") -> list[tuple[str, bytes]]:
    """``(SOP Instance UID, encoded data set)`` of the instances one association sends."""
    return [
        (f"{prefix}.{n}", _sequence_data_set(f"{prefix}.{n}", n)) for n in range(1, instances + 1)
    ]


def _frame(session: list[tuple[str, bytes]], data_sets: list[bytes]) -> bytes:
    request = AssociationRequest(
        protocol_version=1,
        called_ae="WBDWI",
        calling_ae="SCANNER",
        application_context="1.2.840.10008.3.1.1.1",
        contexts=_CONTEXTS,
        max_pdu_length=_PDU,
    )
    parts = [encode_associate_rq(request)]
    for number, ((uid, _), data) in enumerate(zip(session, data_sets, strict=True), start=1):
        parts.append(
            encode_p_data(
                _context_id(number),
                store_command(number, uid),
                is_command=True,
                max_pdu_length=_PDU,
            )
        )
        parts.append(
            encode_p_data(_context_id(number), data, is_command=False, max_pdu_length=_PDU)
        )
    parts.append(encode_release_rq())
    return b"".join(parts)


def _mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    """One of: flip bytes, overwrite a 16/32-bit field, insert, delete, duplicate, truncate."""
    kind = rng.randrange(6)
    at = rng.randrange(len(data))
    if kind == 0:
        mutated = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            mutated[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        return bytes(mutated)
    if kind == 1:
        width = rng.choice((2, 4))
        value = rng.choice((0, 1, 0xFF, 0xFFFF, 0xFFFFFFFF, rng.randrange(1 << (8 * width))))
        value &= (1 << (8 * width)) - 1
        return data[:at] + value.to_bytes(width, "little") + data[at + width :]
    if kind == 2:
        return data[:at] + rng.randbytes(rng.randint(1, 64)) + data[at:]
    if kind == 3:
        return data[:at] + data[at + rng.randint(1, 64) :]
    if kind == 4:
        end = min(len(data), at + rng.randint(1, 64))
        return data[:end] + data[at:end] + data[end:]
    return data[:at]


def _case(session: list[tuple[str, bytes]], rng: random.Random) -> _Case:
    data_sets = [data for _, data in session]
    uids = {n: uid for n, (uid, _) in enumerate(session, start=1)}
    if rng.random() < 0.75:
        target = rng.randrange(len(data_sets))
        data_sets[target] = _mutate_bytes(data_sets[target], rng)
        sent: dict[int, bytes | None] = {n: d for n, d in enumerate(data_sets, start=1)}
        return _Case(_frame(session, data_sets), sent, uids)
    stream = _mutate_bytes(_frame(session, data_sets), rng)
    return _Case(stream, dict.fromkeys(uids), uids)


def _exchange(port: int, stream: bytes, timeout: float) -> dict[int, int]:
    """Send ``stream``, shut the sending side, read to the end: message id -> status."""
    deadline = time.monotonic() + timeout
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(stream)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the node closed first (it aborted): read what it said
        received = bytearray()
        while True:
            sock.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            except TimeoutError:
                raise TimeoutError(
                    f"the node neither answered nor closed within {timeout} s"
                ) from None
            if not chunk:
                break
            received += chunk
    return _statuses(received)


def _statuses(received: bytearray) -> dict[int, int]:
    """Message id -> status of every response command in the node's PDUs."""
    statuses: dict[int, int] = {}
    command = bytearray()
    position = 0
    while position + 6 <= len(received):
        pdu_type, _, length = struct.unpack_from(">BBI", received, position)
        body = received[position + 6 : position + 6 + length]
        position += 6 + length
        if pdu_type != 0x04:
            continue
        for _, control, fragment in iter_pdvs(bytearray(body)):
            if not control & 0x01:
                continue
            command += fragment
            if control & 0x02:
                reply = read_dataset(BytesIO(bytes(command)), True, True)
                statuses[int(reply.MessageIDBeingRespondedTo)] = int(reply.Status)
                command = bytearray()
    return statuses


def _decodable(path: Path) -> str:
    """'' when pydicom reads the file and every element's value; else why not."""
    try:
        ds = dcmread(path)
        for element in ds.iterall():
            _ = element.value
    except Exception as error:  # any failure to decode is the finding
        return f"{type(error).__name__}: {error}"
    return ""


def run_mutations(
    receiver: DicomReceiver,
    spool_root: Path,
    has_row: Callable[[str], bool],
    *,
    seed: int,
    cases: int,
    case_timeout: float = 10.0,
) -> MutationReport:
    """Replay ``cases`` mutated sessions; every expectation that breaks goes in the report.

    Expectations: the node answers or closes within ``case_timeout``; every
    instance answered 0x0000 is in the spool with a row, decodable, and byte
    identical to the data set sent (for data set mutations); every instance
    answered with a failure has no file and no row; files and rows agree. (An
    instance without an answer, because the node aborted the association
    later in the stream and the reset lost the answer, may be stored: a
    scanner sends it again and the node answers the duplicate with success.)
    """
    rng = random.Random(seed)
    report = MutationReport()
    started = time.monotonic()
    for number in range(cases):
        prefix = f"1.2.826.5.{number + 1}"
        session = recorded_session(3, prefix)
        case = _case(session, rng)
        case_start = time.monotonic()
        try:
            statuses = _exchange(receiver.port, case.stream, case_timeout)
        except (TimeoutError, OSError) as error:
            report.failures.append(f"case {number}: {error}")
            continue
        report.slowest_case_seconds = max(
            report.slowest_case_seconds, time.monotonic() - case_start
        )
        report.cases += 1
        _check_case(
            number, case, statuses=statuses, spool_root=spool_root, has_row=has_row, report=report
        )
    report.seconds = time.monotonic() - started
    if not receiver.is_running:
        report.failures.append("the receiver stopped")
    return report


def _check_case(
    number: int,
    case: _Case,
    *,
    statuses: dict[int, int],
    spool_root: Path,
    has_row: Callable[[str], bool],
    report: MutationReport,
) -> None:
    for message_id, uid in case.uids.items():
        files = list(spool_root.glob(f"*/*/{uid}.dcm"))
        status = statuses.get(message_id)
        if status == 0x0000:
            report.acknowledged += 1
            if len(files) != 1 or not has_row(uid):
                report.failures.append(f"case {number}: {uid} acknowledged, files {files}")
                continue
            why = _decodable(files[0])
            if why:
                report.failures.append(f"case {number}: {uid} acknowledged, not decodable: {why}")
            sent = case.sent.get(message_id)
            if sent is not None and not files[0].read_bytes().endswith(sent):
                report.failures.append(f"case {number}: {uid} stored bytes differ from those sent")
        elif status is not None:
            report.refused += 1
            if files or has_row(uid):
                report.failures.append(
                    f"case {number}: {uid} answered {status} but left file {files} or a row"
                )
