"""The disk's floor: appends small records to a file and fdatasyncs it, as Redis
does its AOF with `appendfsync always`, at a fixed rate, until SIGTERM.

    python3 -m bench.fsyncprobe DIRECTORY RATE RECORD_BYTES OUT.json

Records are due at RATE whatever the disk does (open loop, like the load); all
records due by the time one sync ends go into the next write + fdatasync (group
commit, as Redis's event loop does). Written out:
- calls: (start, seconds) of each write + fdatasync, start in CLOCK_MONOTONIC
  seconds (the clock bench/openloop.py stamps answers with, in any process);
- records: each record's due time and how long after it was due it was on disk:
  the latency a durable append at RATE gets from this disk, queueing included.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

BATCH_MAX = 10_000  # records in one write: bounded even after a long stall
RUN_MAX_S = 900.0  # a probe whose runner died stops by itself


class Probe(msgspec.Struct):
    rate: float
    record_bytes: int
    start: float  # CLOCK_MONOTONIC, the first record's due time
    call_starts: list[float]
    call_seconds: list[float]
    record_latency_us: list[int]  # record i was due at start + i / rate
    cpu_seconds: float  # the probe's own, to show what it took from the load core


def run(path: Path, rate: float, record_bytes: int, done: Callable[[int], bool]) -> Probe:
    """Until done(syncs so far) says so, or RUN_MAX_S."""
    assert rate > 0 and record_bytes > 0
    record = b"p" * (record_bytes - 1) + b"\n"
    interval = 1.0 / rate
    starts: list[float] = []
    seconds: list[float] = []
    latencies: list[int] = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
    try:
        start = time.monotonic()
        written = 0
        while not done(len(starts)) and time.monotonic() - start < RUN_MAX_S:
            now = time.monotonic()
            due = min(int((now - start) * rate) + 1 - written, BATCH_MAX)
            if due <= 0:
                time.sleep(start + written * interval - now)
                continue
            began = time.monotonic()
            os.write(fd, record * due)
            os.fdatasync(fd)
            ended = time.monotonic()
            starts.append(began)
            seconds.append(ended - began)
            latencies.extend(int((ended - start - i * interval) * 1e6) for i in range(written, written + due))
            written += due
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    return Probe(rate, record_bytes, start, starts, seconds, latencies, time.process_time())


def main(argv: list[str]) -> int:
    directory, rate, record_bytes, out = Path(argv[0]), float(argv[1]), int(argv[2]), Path(argv[3])
    stopping = [False]

    def stop(*_: object) -> None:
        stopping[0] = True

    signal.signal(signal.SIGTERM, stop)
    probe = run(directory / "fsync-probe.dat", rate, record_bytes, lambda _: stopping[0])
    out.write_bytes(msgspec.json.encode(probe))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
