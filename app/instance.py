"""One `walletd serve` per data_dir: a lock held for the server's whole life.

Two servers on one data_dir would share the embedded Redis (or, with an external
Redis, the flusher's consumer name) and fight over it; the second one is refused.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

# Under data_dir: one `walletd serve` per data directory (an flock, released when it dies).
LOCK_FILE = "serve.lock"


class AlreadyRunning(Exception):
    pass


@contextlib.contextmanager
def single_instance(data_dir: Path) -> Iterator[None]:
    """Hold data_dir/serve.lock (with our pid in it) or raise AlreadyRunning."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            raise AlreadyRunning(
                f"another walletd serve (pid {holder}) is running on data dir {data_dir}; "
                f"stop it first (or give this one another data_dir)") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)  # releases the lock; the stale pid left in the file is harmless
