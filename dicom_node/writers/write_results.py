"""Write every result object of one processed exam: one file per DICOM instance.

:func:`write_results` is the one entry point (offline ``wbdwi process`` and
the service's job runner both call it). It writes, into ``out_dir``::

    adc_map/      ADC Parametric Map (float32)                 1 instance
    adc/          ADC as derived MR (uint16, 10^-6 mm2/s)      1 per slice
    b<value>/     computed high-b as derived MR                1 per slice, per b
    seg/          tumour-load SEG by ADC class (absent when nothing was segmented)
    seg_lesions/  lesion SEG, one segment per lesion (absent likewise)
    sr/           TID 1500 Measurement Report                  1 instance
    key_images/   RGB Secondary Capture: MIP and histogram     2 instances
                  (+ trend chart with a comparison)            (3)

Each file is named ``<SOPInstanceUID>.dcm`` and written atomically (temporary
name, then rename), so a reader never sees half a file and writing the same
exam again replaces files with identical UIDs. The derived MR series are
encoded with :func:`dicom_node.writers.encoding.encode_series` (shared elements
encoded once; the same bytes as pydicom writes). They and the Parametric Map
are written by forked child processes (one per usable core but this one's, at
most 8) while this one builds the SEG, SR and key images; every file is
renamed into place only when all were written, so a failure leaves none
(``_ResultWriter``), unless the caller asked for the derived series as soon
as they are written (``on_derived_written``: the node delivers each child's
files while the others, the SEG and the SR are made).

The derived computed-b series (or the ADC series when no computed-b image
exists) is the *geometric source* of the Parametric Map and the SEG: one
series covering the whole body on the composed grid, slice for slice, which
highdicom requires, while the exam itself came from several station series.

UIDs: the ADC, computed-b and Parametric Map objects depend only on the input,
the version and the settings (:class:`~dicom_node.writers.common.UidFactory`).
The SEG (its class segments), the SR and the key images also depend on the
yellow class bound taken from the baseline and on the comparison (which
previous exam, which baseline, which exams in the trend); those enter their
UID seed, so that processing the same input against other priors gives new
instances instead of different content under the same UIDs, and the same
priors give the same UIDs again.

A reader's correction (:class:`ReaderCorrection`, issue 11): the statistics
of the reader's mask are written as a new SEG, SR and key images only (the
ADC, computed-b and Parametric Map objects are those of the automatic run,
already written and sent). Their UID seed adds the SOP Instance UID of the
reader's SEG, so that the same SEG gives the same objects again and the
automatic results stay beside them. The SR names the reports it replaces in
its Predecessor Documents Sequence, the reader (the SEG's Content Creator) as
a person observer, and says it is reader-corrected in its notes; the series
descriptions end in "(reader-corrected)".
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import hashlib
import io
import itertools
import os
import pickle
import platform
import select
import signal
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog
from pydicom.dataset import Dataset

from dicom_node.package_version import installed_version
from dicom_node.writers import (
    WriterContext,
    WriterIdentity,
    build_adc_series,
    build_computed_b_series,
    build_key_images,
    build_measurement_report,
    build_parametric_map,
    build_segmentation,
)
from dicom_node.writers.common import UidFactory
from dicom_node.writers.derived_mr import DerivedSeries
from dicom_node.writers.encoding import encode_series
from dicom_node.writers.errors import WriterError
from dicom_node.writers.key_images import trend_samples
from dicom_node.writers.parametric_map import (
    check_parametric_map_inputs,
    parametric_map_reference,
)
from dicom_node.writers.sr import report_reference
from processing.comparison import Comparison
from processing.exam import DwiExam
from processing.results import Histogram, ProcessingResult

__all__ = [
    "READER_CORRECTED",
    "WRITERS_ENV",
    "ReaderCorrection",
    "ResultObjects",
    "build_result_objects",
    "earlier_version_reports",
    "write_results",
    "writer_limit",
    "written_instance_uid",
]

LOGGER = structlog.get_logger(__name__)

#: What the corrected objects' notes and series descriptions say.
READER_CORRECTED = "reader-corrected"


@dataclass(frozen=True, slots=True)
class ReaderCorrection:
    """A reader's corrected SEG whose mask the result was measured on.

    Attributes
    ----------
    seg_sop_instance_uid
        The reader's SEG (seeds the corrected objects' UIDs).
    reader
        Its Content Creator's Name (DICOM PN), ``""`` when it has none.
    predecessors
        The reports the new SR replaces (the exam's automatic SR).
    """

    seg_sop_instance_uid: str
    reader: str = ""
    predecessors: tuple[Dataset, ...] = ()

    def note(self) -> str:
        """The sentence the corrected SR carries among its notes."""
        by = f" by {self.reader.replace('^', ' ').strip()}" if self.reader.strip("^ ") else ""
        return (
            f"{READER_CORRECTED}: measured on the tumour mask corrected{by} "
            f"(SEG {self.seg_sop_instance_uid}); it replaces the earlier reports of this exam"
        )


@dataclass(frozen=True, slots=True)
class ResultObjects:
    """All result datasets of one exam, by output folder, before writing."""

    by_folder: dict[str, tuple[Dataset, ...]]
    derived_series_folders: frozenset[str] = frozenset()  # encoded with encode_series

    def count(self) -> int:
        """Number of instances."""
        return sum(len(datasets) for datasets in self.by_folder.values())


# Each keyword is one optional input of the results (identity, priors, comparison,
# reader correction), passed by name by the worker and `wbdwi process`.
def build_result_objects(  # noqa: PLR0913
    exam: DwiExam,
    result: ProcessingResult,
    *,
    version_label: str | None = None,
    device_serial_number: str | None = None,
    institution_name: str = "",
    content_datetime: datetime | None = None,
    prior_histograms: Sequence[tuple[str, Histogram]] = (),
    comparison: Comparison | None = None,
    report_notes: Sequence[str] = (),
    correction: ReaderCorrection | None = None,
    earlier_reports: Sequence[Dataset] = (),
    on_derived_series: Callable[
        [dict[str, tuple[Dataset, ...]], tuple[Dataset, Callable[[], Dataset]] | None], None
    ]
    | None = None,
) -> ResultObjects:
    """Build every result dataset in memory (see :func:`write_results`).

    ``on_derived_series``, when given, is called with the derived MR series
    (ADC and computed-b, by folder) as soon as they are built, before the
    SEG, SR and key images (not for a reader correction, which writes no
    derived series); :func:`write_results` writes them there, in another
    process. When a SEG will be made, it is also given
    ``(parametric_map_reference(...), build the Parametric Map)`` and
    ``adc_map`` then holds that reference (what the SR cites of the map: the
    same UIDs; the SR takes patient and study from the SEG) instead of the
    map, after the same input checks; without a SEG the map is built here.
    """
    derived = _build_derived_objects(
        exam,
        result,
        version_label=version_label,
        device_serial_number=device_serial_number,
        institution_name=institution_name,
        content_datetime=content_datetime,
        comparison=comparison,
        report_notes=report_notes,
        correction=correction,
        on_derived_series=on_derived_series,
    )
    return _build_report_objects(
        derived,
        result,
        prior_histograms=prior_histograms,
        comparison=comparison,
        correction=correction,
        earlier_reports=earlier_reports,
    )


@dataclass(frozen=True, slots=True)
class _DerivedObjects:
    """The first part of the results: the derived series and the Parametric Map (or what the
    SR cites of it), with the contexts the rest is built in."""

    ctx: WriterContext
    dependent: WriterContext  # the priors-dependent context of the SEG, SR and key images
    adc: DerivedSeries
    computed: tuple[DerivedSeries, ...]
    geometric_source: tuple[Dataset, ...]
    parametric_map: Dataset
    report_notes: tuple[str, ...]


def _build_derived_objects(  # noqa: PLR0913
    exam: DwiExam,
    result: ProcessingResult,
    *,
    version_label: str | None,
    device_serial_number: str | None,
    institution_name: str,
    content_datetime: datetime | None,
    comparison: Comparison | None,
    report_notes: Sequence[str],
    correction: ReaderCorrection | None,
    on_derived_series: Callable[
        [dict[str, tuple[Dataset, ...]], tuple[Dataset, Callable[[], Dataset]] | None], None
    ]
    | None,
) -> _DerivedObjects:
    identity = WriterIdentity(
        software_version=version_label or installed_version(),
        device_serial_number=device_serial_number or platform.node() or "unknown",
        institution_name=institution_name,
    )
    ctx = WriterContext.create(
        exam,
        identity,
        result.settings_digest,
        computed_b_values=[computed.b_value for computed in result.computed],
        content_datetime=content_datetime,
        device_class=result.device.split(" ", 1)[0],  # "gpu (H200, cupy 14.2.0)" -> "gpu"
    )
    dependent = _comparison_context(ctx, result, comparison)
    if correction is not None:
        seed = f"{dependent.uids.seed}\0corrected={correction.seg_sop_instance_uid}"
        dependent = dataclasses.replace(
            dependent, uids=UidFactory(seed=hashlib.sha256(seed.encode()).hexdigest())
        )
        report_notes = [correction.note(), *report_notes]
    adc = build_adc_series(ctx, result)
    computed = [build_computed_b_series(ctx, image, result.body_mask) for image in result.computed]
    geometric_source = list(computed[0].datasets if computed else adc.datasets)
    parametric_map: Dataset
    if on_derived_series is not None and correction is None:
        derived_series = {"adc": adc.datasets}
        for series, image in zip(computed, result.computed, strict=True):
            derived_series[f"b{image.b_value:g}"] = series.datasets
        check_parametric_map_inputs(ctx, result, geometric_source)  # its errors here
        parametric_map_job: tuple[Dataset, Callable[[], Dataset]] | None = None
        if result.tumour_mask.any():  # a SEG, first in the SR's evidence
            parametric_map = parametric_map_reference(ctx, geometric_source)
            parametric_map_job = (
                parametric_map,
                functools.partial(build_parametric_map, ctx, result, geometric_source),
            )
        else:
            parametric_map = build_parametric_map(ctx, result, geometric_source)
        on_derived_series(derived_series, parametric_map_job)
    else:
        parametric_map = build_parametric_map(ctx, result, geometric_source)
    return _DerivedObjects(
        ctx=ctx,
        dependent=dependent,
        adc=adc,
        computed=tuple(computed),
        geometric_source=tuple(geometric_source),
        parametric_map=parametric_map,
        report_notes=tuple(report_notes),
    )


def _build_report_objects(
    derived: _DerivedObjects,
    result: ProcessingResult,
    *,
    prior_histograms: Sequence[tuple[str, Histogram]],
    comparison: Comparison | None,
    correction: ReaderCorrection | None,
    earlier_reports: Sequence[Dataset],
) -> ResultObjects:
    """The SEG, SR and key images, and every object of the exam by folder."""
    dependent = derived.dependent
    geometric_source = list(derived.geometric_source)
    segmentation = (
        build_segmentation(dependent, result, geometric_source)
        if result.tumour_mask.any()
        else None
    )
    report = build_measurement_report(
        dependent,
        result,
        segmentation=segmentation,
        parametric_map=derived.parametric_map,
        evidence=[*geometric_source, *derived.ctx.source_evidence()],
        comparison=comparison,
        geometric_source=geometric_source,
        notes=derived.report_notes,
        predecessors=(
            *earlier_reports,
            *(() if correction is None else correction.predecessors),
        ),
        person_observer="" if correction is None else correction.reader,
    )
    key_images = build_key_images(
        dependent,
        result,
        derived.adc.datasets[0],
        priors=prior_histograms,
        trend=trend_samples(comparison) if comparison is not None else (),
    )

    folders: dict[str, tuple[Dataset, ...]] = {
        "adc_map": (derived.parametric_map,),
        "adc": derived.adc.datasets,
    }
    for series, image in zip(derived.computed, result.computed, strict=True):
        folders[f"b{image.b_value:g}"] = series.datasets
    if segmentation is not None:
        folders["seg"] = (segmentation.dataset,)
        if segmentation.lesion_dataset is not None:
            folders["seg_lesions"] = (segmentation.lesion_dataset,)
    folders["sr"] = (report,)
    folders["key_images"] = tuple(key.dataset for key in key_images)
    derived_folders = {"adc", *(f"b{image.b_value:g}" for image in result.computed)}
    if correction is not None:
        return _corrected_objects(folders)
    return ResultObjects(by_folder=folders, derived_series_folders=frozenset(derived_folders))


def _corrected_objects(folders: dict[str, tuple[Dataset, ...]]) -> ResultObjects:
    """Only the SEG, SR and key images, their series described as reader-corrected."""
    kept: dict[str, tuple[Dataset, ...]] = {
        name: folders[name]
        for name in ("seg", "seg_lesions", "sr", "key_images")
        if name in folders
    }
    for datasets in kept.values():
        for dataset in datasets:
            description = str(dataset.get("SeriesDescription", "")).strip()
            dataset.SeriesDescription = f"{description} ({READER_CORRECTED})".strip()[:64]
    return ResultObjects(by_folder=kept)


def _comparison_context(
    ctx: WriterContext, result: ProcessingResult, comparison: Comparison | None
) -> WriterContext:
    """The context of the objects whose content depends on the priors (see the module docstring).

    Same UIDs as ``ctx`` when neither a baseline yellow bound nor a comparison
    is involved.
    """
    parts: list[str] = []
    classes = result.stats.classes
    if classes.yellow_lower_source != "default":
        parts.append(f"yellow={classes.yellow_lower_um2s!r}")
    if comparison is not None:
        parts.append(f"previous={comparison.previous_study_uid}")
        parts.append(f"baseline={comparison.baseline_study_uid}")
        parts += [f"exam={point.study_instance_uid}" for point in comparison.trend]
    if not parts:
        return ctx
    seed = hashlib.sha256("\0".join([ctx.uids.seed, *parts]).encode()).hexdigest()
    return dataclasses.replace(ctx, uids=UidFactory(seed=seed))


def earlier_version_reports(folders: Iterable[Path | str]) -> list[Dataset]:
    """Identity of the SR in each of ``folders`` (result folders of earlier versions).

    ``folders`` in version order, oldest first; a folder without an ``sr``
    instance (removed by retention, failed job) is skipped, and so is a file
    that is not a readable SR (the new version is written all the same). Each
    item is :func:`dicom_node.writers.sr.report_reference` of the file.
    """
    found: list[Dataset] = []
    for folder in folders:
        for path in sorted((Path(folder) / "sr").glob("*.dcm")):
            try:
                found.append(report_reference(path))
            except WriterError:
                continue
    return found


def written_instance_uid(written: Sequence[Path], folder: str) -> str:
    """SOP Instance UID of the one instance :func:`write_results` wrote into ``folder``.

    ``""`` when the folder has no instance (no ``seg`` for an exam without
    disease). Files are named ``<SOPInstanceUID>.dcm``.

    Raises
    ------
    ValueError
        When the folder holds more than one instance.
    """
    found = [path.stem for path in written if path.parent.name == folder]
    if len(found) > 1:
        raise ValueError(f"{len(found)} instances in result folder {folder!r}, expected one")
    return found[0] if found else ""


# Each keyword is one optional input of the results (identity, priors, comparison,
# reader correction), passed by name by the worker and `wbdwi process`.
def write_results(  # noqa: PLR0913
    exam: DwiExam,
    result: ProcessingResult,
    out_dir: Path | str,
    *,
    version_label: str | None = None,
    device_serial_number: str | None = None,
    institution_name: str = "",
    content_datetime: datetime | None = None,
    prior_histograms: Sequence[tuple[str, Histogram]] = (),
    comparison: Comparison | None = None,
    report_notes: Sequence[str] = (),
    correction: ReaderCorrection | None = None,
    earlier_reports: Sequence[Dataset] = (),
    on_derived_written: Callable[[list[tuple[Path, str]]], None] | None = None,
) -> list[Path]:
    """Write the PM, derived MR series, SEG, SR and key images of one exam.

    Parameters
    ----------
    exam
        The assembled exam (its ``sources`` must point at readable files).
    result
        What processing made of it.
    out_dir
        Folder to write into (created if needed); see the module docstring.
    version_label
        Software version written into every object and into the UID seed
        (default: the installed ``wbdwi-node`` version).
    device_serial_number
        Serial number of this installation (default: the host name).
    institution_name
        Institution of the node, if it should be recorded.
    content_datetime
        Content/creation date and time (default: now). UIDs do not depend on it.
    prior_histograms
        ``(label, histogram)`` of earlier exams, drawn as outlines in the
        histogram key image (:func:`dicom_node.writers.key_images.comparison_histograms`
        picks the previous exam's and the baseline's).
    comparison
        The exam's comparison with earlier exams: written into the SR, and the
        trend chart key image is added.
    report_notes
        Sentences for the reader of the SR (why the exam was not compared, or
        only with the local history): a "Comment" each in the SR.
    correction
        The reader's SEG ``result`` was measured on: only the SEG, SR and key
        images are written, as corrected objects (see the module docstring).
    earlier_reports
        The reports of earlier versions of this exam's results (late images
        made a new version; :func:`earlier_version_reports` finds them): the
        new SR names them in its Predecessor Documents Sequence and says that
        it replaces them. Their files are never touched.
    on_derived_written
        Called (on another thread, one call at a time) with files of the
        derived MR series and the Parametric Map, ``(path, SOP Instance UID)``,
        once per writing child as soon as that child's files are written and
        in place (a run of slices of a series, or the map; every such file in
        exactly one call), while the SEG, SR and key images are still being
        made, so that the caller can deliver them meanwhile. Those files then
        stay even when another child or a later object fails (they are
        complete and correct); without it, a failure leaves no file.

    Returns
    -------
    list[pathlib.Path]
        Every file written, one per instance.

    Raises
    ------
    dicom_node.errors.WriterError
        When the inputs cannot make valid objects (geometry mismatch, missing
        or unreadable sources, ...); nothing is written in that case.
    """
    root = Path(out_dir)
    derived = _ResultWriter(root, on_derived_written)
    try:
        first = _build_derived_objects(
            exam,
            result,
            version_label=version_label,
            device_serial_number=device_serial_number,
            institution_name=institution_name,
            content_datetime=content_datetime,
            comparison=comparison,
            report_notes=report_notes,
            correction=correction,
            on_derived_series=derived.start,
        )
        build_reports = functools.partial(
            _build_report_objects,
            first,
            result,
            prior_histograms=prior_histograms,
            comparison=comparison,
            correction=correction,
            earlier_reports=earlier_reports,
        )
        if derived.forked and writer_limit() > 1:
            # With cores to spare, the SEG, SR and key images are built and written in a
            # child of their own, beside the derived series' children: this process then
            # waits without the interpreter lock, which its other threads get (the node's
            # exporter, sending the derived series meanwhile). On 2 cores this process
            # builds them itself, beside the one child.
            written = derived.reports_in_child(build_reports)
        else:
            written = derived.write_here(build_reports())
        derived.finish()
    except BaseException:
        derived.abandon()
        raise
    return written


def _make_folder(target: Path) -> None:
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WriterError(f"cannot create result folder {target}: {exc}") from exc


def _part_path(path: Path) -> Path:
    """Where the child process writes ``path`` before the parent renames it."""
    return path.with_name(f".{path.name}.part")


def _file_bytes(content: Dataset | bytes) -> bytes:
    """The Part 10 file of ``content`` (the bytes ``save_as`` writes to a file)."""
    if isinstance(content, bytes):
        return content
    buffer = io.BytesIO()
    content.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _write_folder(
    target: Path, datasets: Sequence[Dataset], contents: Iterable[Dataset | bytes]
) -> list[Path]:
    """Write ``contents`` (one per dataset) for ``<SOPInstanceUID>.dcm`` in ``target``.

    Each file is written under its :func:`_part_path` name, renamed by
    :meth:`_ResultWriter.finish` when every object was written.
    """
    _make_folder(target)
    written: list[Path] = []
    for dataset, content in zip(datasets, contents, strict=True):
        path = target / f"{dataset.SOPInstanceUID}.dcm"
        try:
            _part_path(path).write_bytes(_file_bytes(content))
        except OSError as exc:
            raise WriterError(f"cannot write {path}: {exc}") from exc
        written.append(path)
    return written


#: How long the parent waits for the children writing the derived series.
_DERIVED_TIMEOUT_S = 600.0

#: The most child processes writing the derived series and the Parametric Map.
_MAX_WRITERS = 8

#: Fewest slices a child writes of a series (fewer cost more in forking than they save).
_MIN_SLAB = 16

#: Forces the number of writing children (a positive integer), for measurements only;
#: not a ``WBDWI_*`` name, which the settings would refuse as unknown.
WRITERS_ENV = "DICOM_NODE_WRITE_WORKERS"


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def writer_limit() -> int:
    """The most children :func:`write_results` writes the derived series with.

    One per usable core but this process's, at most :data:`_MAX_WRITERS`, at
    least one; :data:`WRITERS_ENV` replaces both (for measurements).
    """
    forced = os.environ.get(WRITERS_ENV, "").strip()
    if forced.isdigit() and int(forced) > 0:
        return int(forced)
    return max(1, min(_usable_cpus() - 1, _MAX_WRITERS))


def _writer_count(chunks: int) -> int:
    """How many children write ``chunks`` pieces: :func:`writer_limit`, at most ``chunks``."""
    return max(1, min(chunks, writer_limit()))


@dataclass(frozen=True, slots=True)
class _Share:
    """What one child writes: contiguous slabs ``(folder, start, stop)`` of the series,
    and the Parametric Map or not."""

    slabs: tuple[tuple[str, int, int], ...]
    parametric_map: bool = False


def _shares(
    series: dict[str, tuple[Dataset, ...]], parametric_map: bool, writers: int
) -> list[_Share]:
    """Split the series and the Parametric Map over ``writers`` children.

    One child: everything. More: the Parametric Map (the longest piece, built
    as well as written) alone in the first, the series' files in series order
    cut into equal runs for the others; a run crossing the end of a series is
    two slabs.
    """
    whole = tuple((folder, 0, len(datasets)) for folder, datasets in series.items() if datasets)
    if writers <= 1:
        return [_Share(whole, parametric_map)]
    shares = [_Share((), parametric_map=True)] if parametric_map else []
    runs = writers - len(shares)
    total = sum(count for _, _, count in whole)
    for first, last in itertools.pairwise(total * n // runs for n in range(runs + 1)):
        slabs: list[tuple[str, int, int]] = []
        offset = 0  # of the series in the whole run
        for folder, _, count in whole:
            start, stop = max(first, offset), min(last, offset + count)
            if start < stop:
                slabs.append((folder, start - offset, stop - offset))
            offset += count
        if slabs:
            shares.append(_Share(tuple(slabs)))
    return shares


@dataclass(slots=True)
class _Child:
    """One forked writer: its process, the read end of its pipe, its files."""

    pid: int
    pipe: int
    files: list[tuple[Path, str]]


class _ResultWriter:
    """Writes the result files of one exam, part of them in forked child processes.

    The derived series (about 470 single-frame files on the reference exam)
    and the Parametric Map are about half of the work; child processes build
    and write them (:meth:`start`) while the parent builds and writes the
    SEG, SR and key images (:meth:`add`). There is one child per usable core
    but the parent's, at most :data:`_MAX_WRITERS` and one per
    :data:`_MIN_SLAB` slices (:func:`_writer_count`): one child writes
    everything on a 2-core host; with more, the Parametric Map has a child of
    its own and the series are cut into contiguous slabs of slices for the
    others (:func:`_shares`; the bytes of a file do not depend on its slab).
    Every file is written under a hidden ``.part`` name and renamed only when
    every object was built and written (:meth:`finish`), so that a failure
    leaves no result file: a failed build, write or child removes the
    ``.part`` files and the folders made for them (:meth:`abandon`), and the
    other children are stopped. With ``on_derived_written`` each child renames
    its own files when it has written them all, and a thread of the parent
    hands them on as each child ends (they stay if another child, the SEG,
    the SR or the key images then fail). The bytes are those of
    :func:`~dicom_node.writers.encoding.encode_series` and ``save_as`` in
    any process. Without ``os.fork`` (not POSIX) the children's part is
    written in this process.

    A child only encodes and writes files: it does no logging, takes no
    lock of the node's threads, and leaves with ``os._exit`` (no cleanup of
    the parent's state runs twice).
    """

    def __init__(
        self,
        root: Path,
        on_derived_written: Callable[[list[tuple[Path, str]]], None] | None = None,
    ) -> None:
        self.root = root
        self.folders: dict[str, list[Path]] = {}
        self._children: list[_Child] = []  # started, not yet waited for
        self._created: list[Path] = []  # folders made here, removed again on failure
        self._parametric_map: Callable[[], Dataset] | None = None
        self._on_derived_written = on_derived_written
        self._waiter: threading.Thread | None = None
        self._failure: str | None = None  # the first child's failure
        self._published: set[Path] = set()  # handed on (in place)
        self.forked = False  # the derived series are written by child processes

    def add(
        self, folder: str, datasets: Sequence[Dataset], contents: Iterable[Dataset | bytes]
    ) -> list[Path]:
        """Write ``contents`` into ``folder`` in this process (renamed by :meth:`finish`)."""
        self._note_missing(self.root / folder)
        written = _write_folder(self.root / folder, datasets, contents)
        self.folders.setdefault(folder, []).extend(written)
        return written

    def write_here(self, objects: ResultObjects) -> list[Path]:
        """Write every object of ``objects`` the child does not (renamed by :meth:`finish`);
        every file of the exam, in folder order."""
        written: list[Path] = []
        derived = set(self.folders)
        for folder, datasets in objects.by_folder.items():
            if folder in derived:
                written += self.paths(folder)
                continue
            contents: Iterable[Dataset | bytes] = (
                encode_series(datasets) if folder in objects.derived_series_folders else datasets
            )
            written += self.add(folder, datasets, contents)
        return written

    def reports_in_child(self, build: Callable[[], ResultObjects]) -> list[Path]:
        """Build (``build``) and write the objects the derived series' child does not, in a
        second child process; every file of the exam, as :meth:`write_here` gives them.

        The child writes ``.part`` files as :meth:`write_here` does and reports them (and
        the folders it made) back; :meth:`finish` renames them with the rest. A child that
        fails removes its own files and its message is raised here.

        Raises
        ------
        WriterError
            When building or writing failed (the child's message), or took over
            :data:`_DERIVED_TIMEOUT_S`.
        """
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: as the derived series' child, no logging, no cleanup
            gc.disable()
            os.close(read_end)
            known = {*self.folders}
            created = len(self._created)
            try:
                for name in ("SIGTERM", "SIGINT"):
                    signal.signal(getattr(signal, name), signal.SIG_DFL)
                written = self.write_here(build())
                added = {k: v for k, v in self.folders.items() if k not in known}
                report: tuple[Any, ...] = ("ok", written, added, self._created[created:])
            except BaseException as exc:  # every failure goes to the parent
                self._remove_parts(only=set(self.folders) - known, folders=created)
                report = ("error", _picklable_writer_error(exc), str(exc) or type(exc).__name__)
            try:
                _send_message(write_end, pickle.dumps(report))
            finally:
                os._exit(0)
        os.close(write_end)
        try:
            outcome: tuple[Any, ...] = pickle.loads(
                _receive_message(read_end, pid, _DERIVED_TIMEOUT_S)
            )
        finally:
            os.close(read_end)
            os.waitpid(pid, 0)
        if outcome[0] != "ok":
            _, writer_error, text = outcome
            if writer_error is not None:  # as raised there (a ResultGeometryError, say)
                raise writer_error
            raise WriterError(f"cannot build the SEG, SR or key images: {text}")
        self.folders.update(outcome[2])
        self._created += [folder for folder in outcome[3] if folder not in self._created]
        return list(outcome[1])

    def _note_missing(self, folder: Path) -> None:
        missing = folder
        while not missing.exists() and missing not in self._created:
            self._created.append(missing)
            missing = missing.parent

    def paths(self, folder: str) -> list[Path]:
        """The files of ``folder``, in dataset order."""
        return list(self.folders[folder])

    def start(
        self,
        series: dict[str, tuple[Dataset, ...]],
        parametric_map: tuple[Dataset, Callable[[], Dataset]] | None,
    ) -> None:
        """Begin writing ``series`` (folder -> datasets) and the Parametric Map.

        ``parametric_map``: its reference (with its SOP Instance UID) and the
        function that builds it; ``None`` when the caller writes it.
        """
        folders = list(series.items())
        if parametric_map is not None:
            folders.append(("adc_map", (parametric_map[0],)))
            self._parametric_map = parametric_map[1]
        self.folders = {
            folder: [self.root / folder / f"{d.SOPInstanceUID}.dcm" for d in datasets]
            for folder, datasets in folders
        }
        for folder in self.folders:
            self._note_missing(self.root / folder)
            _make_folder(self.root / folder)
        chunks = sum(-(-len(datasets) // _MIN_SLAB) for datasets in series.values())
        chunks += parametric_map is not None
        if not hasattr(os, "fork"):
            share = _shares(series, parametric_map is not None, 1)[0]
            self._write(series, share)
            if self._on_derived_written is not None:
                self._rename(path for path, _ in self._files(series, share))
                self._publish(self._files(series, share))
            return
        shares = _shares(series, parametric_map is not None, _writer_count(chunks))
        for share in shares:
            self._fork(series, share)
        if self._on_derived_written is not None:
            # The derived series are final as soon as a child is done (they do not depend
            # on the SEG, SR or key images): hand each child's files on then.
            self._waiter = threading.Thread(
                target=self._wait, name="derived-series-writer", daemon=True
            )
            self._waiter.start()

    def _files(
        self, series: dict[str, tuple[Dataset, ...]], share: _Share
    ) -> list[tuple[Path, str]]:
        """The files ``share`` writes and their instances, in order."""
        files = [
            (self.folders[folder][index], str(series[folder][index].SOPInstanceUID))
            for folder, start, stop in share.slabs
            for index in range(start, stop)
        ]
        if share.parametric_map:
            path = self.folders["adc_map"][0]
            files.append((path, path.stem))
        return files

    def _fork(self, series: dict[str, tuple[Dataset, ...]], share: _Share) -> None:
        files = self._files(series, share)
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: encode and write, report in the pipe, leave
            # No cyclic garbage collection in the child: a collection walks the parent's
            # whole heap, writing to every object's header, which copies each page the
            # child shares with the parent (measured: the child 0.7 s alone, 1.7 s with a
            # node's heap). The child lives a second or two and makes little cyclic garbage.
            gc.disable()
            message = b"ok"
            code = 0
            try:
                os.close(read_end)
                for child in self._children:  # the earlier children's pipes
                    os.close(child.pipe)
                for name in ("SIGTERM", "SIGINT"):
                    signal.signal(getattr(signal, name), signal.SIG_DFL)
                self._write(series, share)
                if self._on_derived_written is not None:
                    # in place here, not in the parent: there a thread renaming hundreds of
                    # files waits for the interpreter lock at each (the parent is busy with
                    # the SEG and SR), ~0.6 s on the reference exam
                    self._rename(path for path, _ in files)
            except BaseException as exc:  # every failure goes to the parent
                message = (str(exc) or type(exc).__name__).encode("utf-8", "replace")[:4000]
                code = 1
            finally:
                try:
                    os.write(write_end, message)
                finally:
                    os._exit(code)
        os.close(write_end)
        self._children.append(_Child(pid, read_end, files))
        self.forked = True

    def _write(self, series: dict[str, tuple[Dataset, ...]], share: _Share) -> None:
        for folder, start, stop in share.slabs:
            datasets = series[folder][start:stop]
            _write_folder(self.root / folder, datasets, encode_series(datasets))
        if not share.parametric_map or self._parametric_map is None:
            return
        built = self._parametric_map()
        if [self.root / "adc_map" / f"{built.SOPInstanceUID}.dcm"] != self.folders["adc_map"]:
            raise WriterError(
                f"the Parametric Map was built as {built.SOPInstanceUID}, "
                f"not as the instance the report cites ({self.folders['adc_map']})"
            )
        _write_folder(self.root / "adc_map", (built,), (built,))

    def _wait(self) -> None:
        """Wait for every child, handing on each one's files as it ends well.

        Without ``on_derived_written`` the first failure stops the others (their
        files would be removed); with it they go on and are handed on, each
        child's files being complete and correct.
        """
        deadline = time.monotonic() + _DERIVED_TIMEOUT_S
        while self._children:
            pipes = {child.pipe: child for child in self._children}
            ready, _, _ = select.select(list(pipes), [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                self._stop_children(f"not written within {_DERIVED_TIMEOUT_S:.0f} s")
                return
            for pipe in ready:
                child = pipes[pipe]
                self._children.remove(child)
                status, message = self._reap(child, kill=False)
                if status == 0 and message == b"ok":
                    if self._on_derived_written is not None:
                        self._publish(child.files)
                    continue
                text = message.decode("utf-8", "replace") or f"child process status {status}"
                self._failure = self._failure or text
                if self._on_derived_written is None:
                    self._stop_children(text)
                    return

    def _stop_children(self, reason: str) -> None:
        """Kill and wait for the children still running; ``reason`` fails the writing."""
        self._failure = self._failure or reason
        children, self._children = self._children, []
        for child in children:
            self._reap(child, kill=True)

    @staticmethod
    def _reap(child: _Child, *, kill: bool) -> tuple[int, bytes]:
        """Wait for ``child`` (ended, or killed now); its exit status and its message."""
        message = b""
        try:
            if kill:
                os.kill(child.pid, signal.SIGKILL)
            else:
                message = os.read(child.pipe, 4096)
        finally:
            os.close(child.pipe)
            _, status = os.waitpid(child.pid, 0)
        return status, message

    def _publish(self, files: list[tuple[Path, str]]) -> None:
        """Hand on files a child (or this process) has put in place."""
        assert self._on_derived_written is not None
        self._published.update(path for path, _ in files)
        try:
            self._on_derived_written(list(files))
        except Exception:  # the caller queues them again with the rest; never fail the write
            LOGGER.exception("derived_series_hand_on_failed")

    def _rename(self, paths: Iterable[Path]) -> None:
        for path in paths:
            try:
                os.replace(_part_path(path), path)
            except OSError as exc:
                raise WriterError(f"cannot write {path}: {exc}") from exc

    def finish(self) -> None:
        """Wait for the children and rename their files into place.

        Raises
        ------
        WriterError
            When a child failed (its message), or did not finish in time.
        """
        if self._waiter is not None:
            self._waiter.join()
        else:
            self._wait()
        if self._failure is not None:
            self._remove_parts()
            raise WriterError(f"cannot write the derived MR series: {self._failure}")
        try:
            self._rename(
                path
                for paths in self.folders.values()
                for path in paths
                if path not in self._published
            )
        except WriterError:
            self._remove_parts()
            raise

    def abandon(self) -> None:
        """Stop the children (if running) and remove what is not in place yet.

        With ``on_derived_written`` the children are left to finish (they only
        write files), and the files each put in place and handed on stay.
        """
        if self._waiter is not None:
            self._waiter.join()
        else:
            self._stop_children("abandoned")
        self._remove_parts()

    def _remove_parts(self, only: set[str] | None = None, folders: int = 0) -> None:
        """Remove the ``.part`` files (of the folders ``only``, or all), and the folders
        made for them (from the ``folders``-th on)."""
        for folder, paths in self.folders.items():
            if only is not None and folder not in only:
                continue
            for path in paths:
                _part_path(path).unlink(missing_ok=True)
        for made in sorted(self._created[folders:], key=lambda path: len(path.parts), reverse=True):
            with contextlib.suppress(OSError):  # not empty: another object was written there
                made.rmdir()


def _picklable_writer_error(error: BaseException) -> WriterError | None:
    """``error`` when it is a :class:`WriterError` that can travel to the parent as such."""
    if not isinstance(error, WriterError):
        return None
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        return WriterError(str(error))
    return error


def _send_message(pipe: int, data: bytes) -> None:
    """Write ``data`` with its length first (the reader needs no end of file: another
    process forked meanwhile may hold this pipe open)."""
    view = memoryview(len(data).to_bytes(8, "big") + data)
    while view:
        view = view[os.write(pipe, view) :]


def _receive_message(pipe: int, pid: int, timeout: float) -> bytes:
    """The message :func:`_send_message` wrote into ``pipe``; the writer ``pid`` is
    killed when it has not come within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    data = bytearray()
    size: int | None = None
    while size is None or len(data) < size + 8:
        ready, _, _ = select.select([pipe], [], [], max(0.0, deadline - time.monotonic()))
        chunk = os.read(pipe, 1 << 20) if ready else b""
        if not chunk:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            reason = "ended without a report" if ready else f"not done within {timeout:.0f} s"
            return pickle.dumps(("error", False, f"the writing process {reason}"))
        data += chunk
        if size is None and len(data) >= 8:
            size = int.from_bytes(data[:8], "big")
    return bytes(data[8:])
