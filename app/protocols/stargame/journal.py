"""Outcome-unknown notes of StarGame writeBets: fsynced append-only files under data_dir.

A writeBet whose reply was lost may have booked, and StarGame has no transaction
id, retry or cancel to settle it. Before walletd answers 'fail' it notes the
request here, durably and without Redis (which may be what failed); the
reconciler (app/protocols/stargame/reconciler.py, in the flusher's process) settles every note.

One file per writing process at a time, held under flock while it is written:
a file whose lock can be taken has no writer any more, so the reconciler may
delete it once its notes are settled. A file is created and locked under a
temporary name before it gets its .journal name, so the reconciler never sees
a live writer's file unlocked. Bounded: notes_per_file per file, files_max files.
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import msgspec

# Under data_dir: notes in files named <pid>-<random>.journal.
DIRECTORY = "stargame-journal"
SUFFIX = ".journal"
# While the directory is full it is listed again at most this often, not per request.
FULL_RECHECK_S = 1.0
# A note is a short JSON line; a longer line is not one of ours.
NOTE_BYTES_MAX = 1024


class Note(msgspec.Struct, frozen=True):
    request_id: str
    player_id: str
    uid: str
    bet_cents: int
    win_cents: int
    ts_ms: int  # when walletd gave up waiting (unix ms)


# One JSON line per note; built once, reused.
ENCODER = msgspec.json.Encoder()
DECODER = msgspec.json.Decoder(Note)


class JournalFull(Exception):
    pass


def directory_of(data_path: Path) -> Path:
    return data_path / DIRECTORY


def journal_files(directory: Path, limit: int) -> list[Path]:
    """The journal files, oldest name first, at most limit of them."""
    if not directory.is_dir():
        return []
    return sorted(directory.glob(f"*{SUFFIX}"))[:limit]


def fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Journal:
    """The writing side: one per process that serves StarGame. Thread-safe."""

    def __init__(self, directory: Path, notes_per_file: int, files_max: int) -> None:
        assert notes_per_file >= 1 and files_max >= 1
        self.directory = directory
        self.notes_per_file = notes_per_file
        self.files_max = files_max
        self.lock = threading.Lock()
        self.fd: int | None = None
        self.notes_in_file = 0
        self.refused_at: float | None = None  # monotonic time a file could last not be opened
        self.problem = ""  # why not, in words (full, or the directory not writable)

    def has_room(self) -> bool:
        """Whether one more note can be taken (checked before a booking is sent): a
        file is open for it, so a journal that is full or cannot be written (read-only
        directory, wrong owner) refuses the booking instead of losing its note."""
        # Read without the lock: it runs on the event loop, and note() holds the lock
        # through an fsync in its thread; note() rolls to a new file itself if needed.
        if self.fd is not None and self.notes_in_file < self.notes_per_file:
            return True
        with self.lock:
            if self.fd is not None and self.notes_in_file < self.notes_per_file:
                return True
            now = time.monotonic()
            if self.refused_at is not None and now - self.refused_at < FULL_RECHECK_S:
                return False
            try:
                self._roll()
            except (OSError, JournalFull) as exc:
                self.refused_at, self.problem = now, str(exc)
                return False
            self.refused_at, self.problem = None, ""
            return True

    def note(self, note: Note) -> None:
        """Appends note and fsyncs it: durable when this returns. On any failure the
        file holds no part of it (a short write on a full disk is cut off) and is
        never appended to again, so a torn line cannot swallow a later note."""
        line = ENCODER.encode(note) + b"\n"
        assert len(line) <= NOTE_BYTES_MAX, "a note is a short line"
        with self.lock:
            if self.fd is None or self.notes_in_file >= self.notes_per_file:
                self._roll()
            assert self.fd is not None
            start = os.lseek(self.fd, 0, os.SEEK_END)
            try:
                written = os.write(self.fd, line)
                if written != len(line):
                    raise OSError(errno.ENOSPC, f"journal note cut short: {written} of {len(line)} bytes written")
                os.fsync(self.fd)
            except OSError:
                self._abandon(start)
                raise
            self.notes_in_file += 1

    def _abandon(self, size: int) -> None:
        """Cuts the file back to size (best effort) and closes it: the next note rolls."""
        assert self.fd is not None
        try:
            os.ftruncate(self.fd, size)
            os.fsync(self.fd)
        except OSError:
            pass  # a torn last line stays; the reconciler drops it once no writer holds the file
        self._close()

    def _roll(self) -> None:
        self._close()
        self.directory.mkdir(parents=True, exist_ok=True)
        if len(journal_files(self.directory, self.files_max)) >= self.files_max:
            raise JournalFull(f"{self.files_max} journal files under {self.directory}")
        name = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        temporary = self.directory / f".{name}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)  # held until closed: "a writer lives"
        os.rename(temporary, self.directory / f"{name}{SUFFIX}")
        fsync_directory(self.directory)
        self.fd, self.notes_in_file = fd, 0

    def _close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # releases the lock: the reconciler may now delete it when settled
            self.fd = None

    def close(self) -> None:
        with self.lock:
            self._close()


class JournalFile:
    """The reading side of one file, opened by the reconciler: `owner_gone` when
    no process writes it any more (its lock could be taken, and is held until close)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = path.open("rb")
        try:
            fcntl.flock(self.file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            self.owner_gone = True
        except BlockingIOError:
            self.owner_gone = False

    def notes(self, offset: int, count_max: int) -> Iterator[tuple[int, Note | None]]:
        """(offset after the line, note or None if unreadable) for complete lines from offset.
        An incomplete last line is a note whose writer died before its fsync returned:
        never answered, so nothing to settle."""
        self.file.seek(offset)
        for _ in range(count_max):
            line = self.file.readline(NOTE_BYTES_MAX + 1)
            if not line.endswith(b"\n"):
                return
            offset += len(line)
            try:
                yield offset, DECODER.decode(line)
            except msgspec.DecodeError:
                yield offset, None

    def size(self) -> int:
        return os.fstat(self.file.fileno()).st_size

    def only_torn_line_after(self, offset: int) -> bool:
        """Whether what follows offset is one incomplete line: a note whose write never
        completed (its writer died or cut it short), never answered as noted."""
        self.file.seek(offset)
        rest = self.file.read(NOTE_BYTES_MAX + 1)
        return 0 < len(rest) <= NOTE_BYTES_MAX and b"\n" not in rest

    def close(self) -> None:
        self.file.close()
