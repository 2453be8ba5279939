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
import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

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

#: The reading process's first message: its imports are done.
_READY = "ready"


def _lowest_priority() -> None:
    """In the reading process: use only CPU time nothing else wants (``nice`` 19).

    Reading ahead is worth doing only with spare time: during a burst of
    C-STOREs the receiver (and on a small server the sender too) needs every
    core, and a job that starts meanwhile reads what is not read yet itself.
    A sandbox that forbids it (systemd's ``SystemCallFilter=~@resources``)
    leaves the priority as it is.
    """
    with contextlib.suppress(AttributeError, OSError):  # no nice() (not POSIX), or refused
        os.nice(19)
    _end_with_the_node()


def _end_with_the_node() -> None:
    """In the reading process: end when the node's process ends, even by SIGKILL.

    Linux's ``PR_SET_PDEATHSIG``; elsewhere a thread that watches the parent.
    (It also ends at the end of its input, which the node's end closes.)
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


def _serve(requests: BinaryIO, replies: BinaryIO) -> None:
    """The reading process: a batch of paths in, what was read of them out, until the end
    of ``requests`` (the node closed it, or ended)."""
    pickle.dump(_READY, replies, protocol=pickle.HIGHEST_PROTOCOL)
    replies.flush()
    while True:
        try:
            paths = pickle.load(requests)
        except EOFError:
            return
        pickle.dump(_read_batch(paths), replies, protocol=pickle.HIGHEST_PROTOCOL)
        replies.flush()


def _worker_main() -> None:
    """``python -m dicom_node.assembly.read_ahead``: the reading process."""
    _lowest_priority()
    # The protocol owns the original standard output; anything printed goes to stderr.
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    with contextlib.suppress(BrokenPipeError, KeyboardInterrupt):
        _serve(sys.stdin.buffer, replies)


def _worker_environment() -> dict[str, str]:
    """The node's environment, with this package importable as in the node."""
    root = str(Path(__file__).resolve().parents[2])
    environment = dict(os.environ)
    paths = [root, *filter(None, environment.get("PYTHONPATH", "").split(os.pathsep))]
    environment["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return environment


class ReadAhead:
    """Reads each newly stored file into an :class:`InstanceCache`, in another process.

    The reading (pydicom parsing, pixel decoding) runs in one child process
    (``python -m dicom_node.assembly.read_ahead``, started, not forked: the
    node has threads), so that it does not hold the interpreter lock the
    receiver's threads need (on a thread of the node it roughly halved the
    instances received per second during a burst). It is a plain subprocess
    talking over its standard input and output: batches of paths in, what
    was read out, in order. It ends when its input closes (:meth:`stop`, or
    the node's end, even by SIGKILL), so nothing of it outlives the node, and
    a service manager stopping the node waits for no pool or tracker process.
    :meth:`offer` only queues the path: it is cheap and safe to call from the
    receiver's association threads; a feeder thread hands the paths over in
    batches, and a reply thread puts what comes back into the cache. When the
    reading process dies the read-ahead stops (logged once) and jobs read their
    files themselves.
    """

    def __init__(self, cache: InstanceCache) -> None:
        self.cache = cache
        self.read = 0
        self.failed = 0
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._feeder: threading.Thread | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._replies: threading.Thread | None = None
        self._in_flight: deque[tuple[list[str], list[tuple[int, int, int]]]] = deque()
        self._ready = threading.Event()
        self._closed = False
        self._pending = 0

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
            try:
                self._process_locked()
                return
            except OSError as error:
                failed = error
        self._give_up(failed)

    def wait_started(self, timeout: float) -> bool:
        """Wait until the reading process is up (after :meth:`start`); ``False`` if not."""
        return self._ready.wait(timeout)

    def _process_locked(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            process = subprocess.Popen(
                [sys.executable, "-m", __name__],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=_worker_environment(),
                close_fds=True,
            )
            self._process = process
            self._replies = threading.Thread(
                target=self._receive, args=(process,), name="read-ahead-replies", daemon=True
            )
            self._replies.start()
        return self._process

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
            # one hand-over per 32 files, not one per file (each wakes the reading
            # process and the reply thread, which a burst of 750 files paid with a
            # third of its rate).
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
        known = [stamp for stamp in stamps if stamp is not None]
        request = pickle.dumps(readable, protocol=pickle.HIGHEST_PROTOCOL)
        failed: BaseException | None = None
        with self._lock:
            if self._closed:
                self._pending = max(0, self._pending - len(readable))
                return
            self._in_flight.append((readable, known))  # failed with the rest on a give-up
            try:
                process = self._process_locked()
            except OSError as error:  # could not be started
                failed = error
        if failed is None:
            # Written outside the lock (only this thread writes): while the reading process
            # is behind, the pipe fills and this thread waits, not the receiver's offers.
            try:
                assert process.stdin is not None
                process.stdin.write(request)
                process.stdin.flush()
            except (OSError, ValueError) as error:  # it ended (a broken pipe), or stop()
                failed = error
        if failed is not None:
            self._give_up(failed)

    def _receive(self, process: subprocess.Popen[bytes]) -> None:
        """The reply thread: what the reading process read, batch by batch, into the cache."""
        assert process.stdout is not None
        replies = process.stdout
        try:
            if pickle.load(replies) != _READY:
                raise pickle.UnpicklingError("the reading process did not start")
            self._ready.set()
            while True:
                results = pickle.load(replies)
                with self._lock:
                    paths, stamps = self._in_flight.popleft()
                kept = 0
                for path, stamp, result in zip(paths, stamps, results, strict=True):
                    if result is not None and self.cache.keep(path, stamp, result):
                        kept += 1
                self._count(read=kept, failed=len(paths) - kept)
        except (EOFError, OSError, ValueError, IndexError, pickle.UnpicklingError) as error:
            code = process.poll()
            self._give_up(error if code is None else RuntimeError(f"exit status {code}"))

    def _give_up(self, error: BaseException) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            left = sum(len(paths) for paths, _ in self._in_flight)
            self._in_flight.clear()
            self._pending = max(0, self._pending - left)
            self.failed += left
        LOGGER.warning("read_ahead_stopped", reason=str(error) or type(error).__name__)

    def _count(self, *, read: int, failed: int) -> None:
        with self._lock:
            self.read += read
            self.failed += failed
            self._pending = max(0, self._pending - read - failed)

    def stop(self) -> None:
        """Stop reading and end the reading process; files not read yet are left to the jobs.

        Its input is closed (it ends after the batch in hand); after
        :data:`_STOP_WAIT_S` it is killed.
        """
        with self._lock:
            self._closed = True
            process, self._process = self._process, None
        self._queue.put(None)
        if process is None:
            return
        with contextlib.suppress(OSError, ValueError):
            if process.stdin is not None:
                process.stdin.close()
        try:
            process.wait(timeout=_STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=_STOP_WAIT_S)
        if process.stdout is not None:
            process.stdout.close()


if __name__ == "__main__":
    _worker_main()
