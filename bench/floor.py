"""The physical floor under each load step, measured while the step runs: the
disk's fsync latency (bench/fsyncprobe.py, beside the AOF) and Redis's own
LATENCY events; and, for every answer over the 50 ms budget, whether a disk
stall overlapped it.

Why the probe runs during the step and not beside it: disk stalls come and go
(the journal's commits, the SQLite ledger's and the other tenants' writes), so
only a probe running at the same time can say whether a slow answer met a slow
disk, and it sees the disk as loaded as the AOF sees it. It costs one more
stream of appends on that disk (at most as many syncs as Redis's own) and a few
per cent of the load core; the report shows its CPU.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import msgspec
import redis

from bench.fsyncprobe import Probe
from bench.servers import pinned

# A Redis event shorter than this is not recorded: 5 ms is the margin the goal
# allows walletd over the disk, so anything shorter cannot explain a miss.
LATENCY_THRESHOLD_MS = 5
# Redis events that are the disk: the AOF's write and fsync. A fork is not the
# disk (it copies page tables) but is shown: it comes from an AOF rewrite.
DISK_EVENTS = ("aof-",)
PROBE_STALL = "probe sync"  # how a probe sync is named in a report, and told from a Redis event
BUDGET_S = 0.050  # the platforms' answer budget
EPISODE_GAP_S = 0.1  # slow answers this close together are one episode
EPISODES_LISTED = 12  # per step, the rest are summed up
CLOSED_LOOP_PROBE_RATE = 1000.0  # appends/s of the probe under wrk, whose rate is not fixed
PROBE_STOP_TIMEOUT_S = 10.0


class Event(msgspec.Struct):
    name: str
    at: float  # CLOCK_MONOTONIC seconds: the second Redis recorded it in
    ms: int  # the worst in that second


class Floor(msgspec.Struct):
    probe: Probe
    window: tuple[float, float]  # the measured part of the step, CLOCK_MONOTONIC
    events: list[Event]
    aof_bytes: int  # AOF growth during the step
    forks: int  # during the step (an AOF rewrite forks)

    def calls(self) -> list[tuple[float, float]]:
        """(start, seconds) of the probe's syncs that began inside the window."""
        lo, hi = self.window
        return [(s, d) for s, d in zip(self.probe.call_starts, self.probe.call_seconds, strict=True) if lo <= s <= hi]

    def records_us(self) -> list[int]:
        """Latency of the probe's records due inside the window."""
        lo, hi = self.window
        first = max(0, int((lo - self.probe.start) * self.probe.rate))
        last = int((hi - self.probe.start) * self.probe.rate)
        return self.probe.record_latency_us[first:last]

    def stalls(self, at_least_s: float) -> list[Stall]:
        """The probe's slow syncs, Redis's AOF events (the disk) and forks (not the disk)."""
        found = [Stall(s, s + d, d, f"{PROBE_STALL} {d * 1000:.0f} ms", True)
                 for s, d in self.calls() if d >= at_least_s]
        for e in self.events:
            if e.ms / 1000 >= at_least_s and (e.name.startswith(DISK_EVENTS) or e.name == "fork"):
                # Redis stamps an event with the second it ended in: it lies somewhere in there.
                found.append(Stall(e.at - e.ms / 1000, e.at + 1, e.ms / 1000, f"Redis {e.name} {e.ms} ms",
                                   e.name != "fork"))
        return found


class Stall(NamedTuple):
    earliest: float  # CLOCK_MONOTONIC; for a Redis event, the span it lies in
    latest: float
    seconds: float  # how long it lasted
    what: str
    disk: bool


def at_rank(ordered: list[float] | list[int], q: float) -> float:
    """The q quantile (0..1) of sorted, non-empty values, by nearest rank."""
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def quantiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {"p50": 0.0, "p99": 0.0, "p99.9": 0.0, "max": 0.0}
    return {"p50": at_rank(ordered, 0.5), "p99": at_rank(ordered, 0.99), "p99.9": at_rank(ordered, 0.999),
            "max": ordered[-1]}


class Monitor:
    """Redis's latency monitor and the probe, around each load step."""

    def __init__(self, redis_url: str, aof_dir: Path, work: Path, cpus: str | None) -> None:
        self.client = redis.Redis.from_url(redis_url)
        self.client.config_set("latency-monitor-threshold", LATENCY_THRESHOLD_MS)
        self.aof_dir = aof_dir
        self.work = work
        self.cpus = cpus
        self.record_bytes = 1500  # an OIA booking's AOF bytes (make bench measures it: set_record_bytes())
        self.steps = 0

    def set_record_bytes(self, aof_bytes_per_booking: int) -> None:
        """The probe appends what a booking appends to the AOF."""
        self.record_bytes = max(64, aof_bytes_per_booking)

    def stats(self) -> tuple[int, int]:
        info = self.client.info()
        return int(info.get("aof_current_size", 0)), int(info.get("total_forks", 0))

    def events(self) -> list[Event]:
        offset = time.time() - time.monotonic()
        found = []
        for latest in self.client.execute_command("LATENCY", "LATEST"):
            name = latest[0].decode() if isinstance(latest[0], bytes) else str(latest[0])
            for at, ms in self.client.execute_command("LATENCY", "HISTORY", name):
                found.append(Event(name, int(at) - offset, int(ms)))
        return sorted(found, key=lambda e: e.at)

    @contextlib.contextmanager
    def step(self, rate: float | None) -> Iterator[Watch]:
        """Measures the floor while the body runs (the probe at rate, or at
        CLOSED_LOOP_PROBE_RATE under wrk); watch.floor holds it afterwards."""
        self.steps += 1
        out = self.work / f"probe-{self.steps}.json"
        command = [sys.executable, "-m", "bench.fsyncprobe", str(self.aof_dir), str(rate or CLOSED_LOOP_PROBE_RATE),
                   str(self.record_bytes), str(out)]
        self.client.execute_command("LATENCY", "RESET")
        size, forks = self.stats()
        probe = subprocess.Popen(pinned(self.cpus, command))
        watch = Watch(time.monotonic())
        try:
            yield watch
        finally:
            ended = time.monotonic()
            probe.send_signal(signal.SIGTERM)
            probe.wait(PROBE_STOP_TIMEOUT_S)
        size_after, forks_after = self.stats()
        found = msgspec.json.decode(out.read_bytes(), type=Probe)
        window = watch.window or (watch.began, ended)
        watch.floor = Floor(found, window, [e for e in self.events() if e.at >= watch.began - 1],
                            size_after - size, forks_after - forks)


class Watch:
    """One step: when it began, the part that was measured (set by the step's body;
    the whole step if not), and afterwards the floor measured under it."""

    def __init__(self, began: float) -> None:
        self.began = began
        self.window: tuple[float, float] | None = None
        self.floor: Floor | None = None


class Episode(msgspec.Struct):
    start: float  # CLOCK_MONOTONIC: the first slow answer's due time
    end: float  # the last one's answer
    answers: int
    worst_ms: float
    disk_caused: int  # answers a disk stall explains (see explained())
    stalls: list[str]  # what overlapped, longest first


def explained(due: float, answered: float, stalls: list[Stall]) -> bool:
    """The disk caused a slow answer when its stalls that overlapped the answer's wait
    lasted at least half of it: queueing behind a stall at half load drains in about
    the stall's own length, so a longer wait needs another cause. Stalls in a row add
    up (a wait through two 300 ms syncs is the disk's); the probe's syncs and Redis's
    AOF events see the same disk, so each source is summed apart and the larger counts."""
    overlapping = [s for s in stalls if s.disk and s.earliest < answered and s.latest > due]
    probe = sum(s.seconds for s in overlapping if s.what.startswith(PROBE_STALL))
    redis = sum(s.seconds for s in overlapping if not s.what.startswith(PROBE_STALL))
    return max(probe, redis) >= (answered - due) / 2


def episodes(slow: list[tuple[float, float]], floor: Floor) -> list[Episode]:
    """Slow answers (due, answered) grouped into episodes, each with the stalls over
    LATENCY_THRESHOLD_MS (probe syncs, Redis AOF events and forks) that overlapped it."""
    stalls = floor.stalls(LATENCY_THRESHOLD_MS / 1000)
    found: list[Episode] = []
    for due, answered in sorted(slow):
        caused = int(explained(due, answered, stalls))
        last = found[-1] if found else None
        if last is not None and due <= last.end + EPISODE_GAP_S:
            last.end = max(last.end, answered)
            last.answers += 1
            last.worst_ms = max(last.worst_ms, (answered - due) * 1000)
            last.disk_caused += caused
        else:
            found.append(Episode(due, answered, 1, (answered - due) * 1000, caused, []))
    for episode in found:
        met = [s for s in stalls if s.earliest < episode.end and s.latest > episode.start]
        episode.stalls = [s.what for s in sorted(met, key=lambda s: -s.seconds)]
    return found
