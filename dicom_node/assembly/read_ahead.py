"""Read stored instances while a study arrives, so that assembly finds them read.

Assembling an exam reads every stored file of it (:func:`read_instance`: the
header, the b-value, the geometry and the pixels): about 0.7 ms per file, some
0.8 s for a 1,100-image whole-body exam, all of it after the exam is complete
and the radiologist is waiting. A scanner sends an exam over minutes, so the
node reads each file as it is stored (:meth:`ReadAhead.offer`, from the
receiver) in a process of its own, and the job's assembly takes what was read
(:meth:`InstanceCache.read`).

What is kept is exactly what :func:`read_instance` returned for the file as it
is on disk now: an entry is used only while the file's size, modification time
and inode are those it was read with (a file stored again is read again). A
file that fails to read is not kept: the job reads it again and reports the
error as it always did. The cache holds at most ``max_bytes`` of pixel data
(least recently stored first out); the job's own files are dropped once it has
assembled them.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import structlog

from dicom_node.assembly.dwi_frames import (
    DwiInstance,
    NotDwiInstance,
    SkippedFile,
    read_instance,
)

__all__ = ["InstanceCache", "ReadAhead", "ReadResult"]

LOGGER = structlog.get_logger(__name__)

ReadResult = DwiInstance | NotDwiInstance | SkippedFile


@dataclass(frozen=True, slots=True)
class _Entry:
    stamp: tuple[int, int, int]  # size, mtime_ns, inode when read
    result: ReadResult
    nbytes: int


def _stamp(path: str) -> tuple[int, int, int] | None:
    try:
        status = os.stat(path)
    except OSError:
        return None
    return (status.st_size, status.st_mtime_ns, status.st_ino)


def _pixel_bytes(result: ReadResult) -> int:
    if not isinstance(result, DwiInstance):
        return 0
    return sum(frame.stored.nbytes for frame in result.frames)


def _freeze(result: ReadResult) -> ReadResult:
    """Make the pixels read-only: one array may serve two jobs (a retry, a new version)."""
    if isinstance(result, DwiInstance):
        for frame in result.frames:
            frame.stored.flags.writeable = False
    return result


class InstanceCache:
    """What :func:`read_instance` made of stored files, by path (thread-safe).

    Parameters
    ----------
    max_bytes
        Pixel data kept at most; beyond it the least recently read entries go.
    reader
        The function that reads a file (:func:`read_instance`).
    """

    def __init__(self, max_bytes: int, reader: Callable[[str], ReadResult] = read_instance) -> None:
        self.max_bytes = max_bytes
        self._reader = reader
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def nbytes(self) -> int:
        """Pixel data held now."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, path: Path | str) -> ReadResult | None:
        """What was read of the file, while it is unchanged since; else ``None``."""
        name = str(path)
        stamp = _stamp(name)
        with self._lock:
            entry = self._entries.get(name)
            if entry is not None and stamp is not None and entry.stamp == stamp:
                self.hits += 1
                return entry.result
            self.misses += 1
        return None

    def read(self, path: Path | str) -> ReadResult:
        """The file as read, from the cache while unchanged; raises as :func:`read_instance`."""
        found = self.lookup(path)
        return self._reader(str(path)) if found is None else found

    def prefetch(self, path: Path | str) -> bool:
        """Read ``path`` into the cache here; ``False`` when it failed (the job will say why)."""
        name = str(path)
        stamp = _stamp(name)
        if stamp is None:
            return False
        try:
            result = self._reader(name)
        except Exception:  # the job reads it again and reports the error
            return False
        return self.keep(name, stamp, result)

    def keep(self, path: Path | str, stamp: tuple[int, int, int], result: ReadResult) -> bool:
        """Keep ``result``, read from ``path`` as it was at ``stamp``; ``False`` when the
        file has changed since (it is then read again when needed)."""
        name = str(path)
        if _stamp(name) != stamp:
            return False
        result = _freeze(result)
        self._put(name, _Entry(stamp, result, _pixel_bytes(result)))
        return True

    def _put(self, name: str, entry: _Entry) -> None:
        if entry.nbytes > self.max_bytes:
            return
        with self._lock:
            old = self._entries.pop(name, None)
            if old is not None:
                self._bytes -= old.nbytes
            self._entries[name] = entry
            self._bytes += entry.nbytes
            while self._bytes > self.max_bytes:
                _, dropped = self._entries.popitem(last=False)
                self._bytes -= dropped.nbytes

    def discard(self, paths: Iterable[Path | str]) -> None:
        """Forget ``paths`` (a job assembled them)."""
        with self._lock:
            for path in paths:
                entry = self._entries.pop(str(path), None)
                if entry is not None:
                    self._bytes -= entry.nbytes


#: Files handed to the reading process at a time, at most (one pickled round trip each).
_BATCH = 32

#: How long :meth:`ReadAhead.stop` waits for the reading process before it kills it.
_STOP_WAIT_S = 2.0

#: prctl option: the signal a process gets when its parent ends (Linux).
_PR_SET_PDEATHSIG = 1

#: How long a batch waits for more files after its first (seconds).
_GATHER_S = 0.1


def _lowest_priority() -> None:
    """In the reading process: use only CPU time nothing else wants (``nice`` 19).

    Reading ahead is worth doing only with spare time: during a burst of
    C-STOREs the receiver (and on a small server the sender too) needs every
    core, and a job that starts meanwhile reads what is not read yet itself.
    """
    with contextlib.suppress(AttributeError, OSError):  # no nice() (not POSIX)
        os.nice(19)
    _end_with_the_node()


def _end_with_the_node() -> None:
    """In the reading process: end when the node's process ends, even by SIGKILL.

    Linux's ``PR_SET_PDEATHSIG``; elsewhere a thread that watches the parent.
    """
    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL) == 0 and os.getppid() == parent:
            return

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _read_batch(paths: list[str]) -> list[ReadResult | None]:
    """In the reading process: each file as :func:`read_instance` reads it, ``None`` on error."""
    results: list[ReadResult | None] = []
    for path in paths:
        try:
            results.append(read_instance(path))
        except Exception:  # the job reads it again and reports the error
            results.append(None)
    return results


class ReadAhead:
    """Reads each newly stored file into an :class:`InstanceCache`, in another process.

    The reading (pydicom parsing, pixel decoding) runs in one worker process,
    so that it does not hold the interpreter lock the receiver's threads need
    (on a thread of the node it roughly halved the instances received per
    second during a burst). :meth:`offer` only queues the path: it is cheap and
    safe to call from the receiver's association threads; a feeder thread hands
    the paths over in batches, and the pool's result thread puts what comes
    back into the cache. When the worker process dies the read-ahead stops
    (logged once) and jobs read their files themselves.
    """

    def __init__(self, cache: InstanceCache) -> None:
        self.cache = cache
        self.read = 0
        self.failed = 0
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._feeder: threading.Thread | None = None
        self._pool: ProcessPoolExecutor | None = None
        self._closed = False
        self._pending = 0
        self._warm_up: Future[list[ReadResult | None]] | None = None

    @property
    def pending(self) -> int:
        """Files offered and not read yet."""
        return self._pending

    def start(self) -> None:
        """Start the reading process now, not at the first file (it takes a second or so
        of imports); returns at once."""
        with self._lock:
            if self._closed:
                return
            pool = self._pool_locked()
        try:
            warm_up = pool.submit(_read_batch, [])
        except (BrokenProcessPool, RuntimeError) as error:
            self._give_up(error)
            return
        self._warm_up = warm_up
        warm_up.add_done_callback(self._started)

    def wait_started(self, timeout: float) -> bool:
        """Wait until the reading process is up (after :meth:`start`); ``False`` if not."""
        warm_up = self._warm_up
        if warm_up is None:
            return False
        try:
            warm_up.result(timeout=timeout)
        except Exception:
            return False
        return True

    def _started(self, future: Future[list[ReadResult | None]]) -> None:
        error = future.exception()
        if error is not None:  # the jobs read their files themselves
            self._give_up(error)

    def _pool_locked(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # spawned, not forked: the node has threads (a fork copies their locks)
            self._pool = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_lowest_priority,
            )
        return self._pool

    def offer(self, path: Path | str) -> None:
        """Read ``path`` soon (ignored once stopped)."""
        with self._lock:
            if self._closed:
                return
            self._pending += 1
            if self._feeder is None:
                self._feeder = threading.Thread(target=self._feed, name="read-ahead", daemon=True)
                self._feeder.start()
        self._queue.put(str(path))

    def _feed(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            # A batch closes when full or _GATHER_S after its first file: during a burst
            # one hand-over per 32 files, not one per file (each wakes the pool's threads,
            # which a burst of 750 files paid with a third of its rate).
            closes = time.monotonic() + _GATHER_S
            while len(batch) < _BATCH:
                try:
                    following = self._queue.get(timeout=max(0.0, closes - time.monotonic()))
                except queue.Empty:
                    break
                if following is None:
                    self._queue.put(None)  # end after this batch
                    break
                batch.append(following)
            self._submit(batch)

    def _submit(self, paths: list[str]) -> None:
        stamps = [_stamp(path) for path in paths]
        readable = [path for path, stamp in zip(paths, stamps, strict=True) if stamp is not None]
        self._count(read=0, failed=len(paths) - len(readable))
        if not readable:
            return
        with self._lock:
            if self._closed:
                self._pending = max(0, self._pending - len(readable))
                return
            pool = self._pool_locked()
        try:
            future = pool.submit(_read_batch, readable)
        except (BrokenProcessPool, RuntimeError) as error:
            self._give_up(error)
            self._count(read=0, failed=len(readable))
            return
        known = [stamp for stamp in stamps if stamp is not None]
        future.add_done_callback(functools.partial(self._done, readable, known))

    def _done(
        self,
        paths: list[str],
        stamps: list[tuple[int, int, int]],
        future: Future[list[ReadResult | None]],
    ) -> None:
        try:
            results = future.result()
        except BrokenProcessPool as error:
            self._give_up(error)
            self._count(read=0, failed=len(paths))
            return
        except BaseException:
            self._count(read=0, failed=len(paths))
            return
        kept = 0
        for path, stamp, result in zip(paths, stamps, results, strict=True):
            if result is not None and self.cache.keep(path, stamp, result):
                kept += 1
        self._count(read=kept, failed=len(paths) - kept)

    def _give_up(self, error: BaseException) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        LOGGER.warning("read_ahead_stopped", reason=str(error) or type(error).__name__)

    def _count(self, *, read: int, failed: int) -> None:
        with self._lock:
            self.read += read
            self.failed += failed
            self._pending = max(0, self._pending - read - failed)

    def stop(self) -> None:
        """Stop reading and end the reading process; files not read yet are left to the jobs."""
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        self._queue.put(None)
        if pool is None:
            return
        # Its processes are ended here, not left to the pool's exit handling: a process
        # still alive after the node's would keep a service manager waiting for it.
        processes = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.join(timeout=_STOP_WAIT_S)
            if process.is_alive():
                process.kill()
                process.join(timeout=_STOP_WAIT_S)
