"""The three load generators a bench run drives, each returning what it measured:
wrk (closed loop, for saturation), the open-loop client (latency at fixed
rates) and locust (the platforms' realistic scenarios)."""

from __future__ import annotations

import contextlib
import csv
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
import redis

from app.keys import Keys
from app.settings import WalletSettings
from bench import fixtures
from bench.floor import Episode, Floor, Monitor, at_rank, episodes
from bench.openloop import SLOW_US, OpenLoop
from bench.servers import BENCH_DIR, Process

WARMUP_S = 2.0
DRAIN_WAIT_S = 30.0
SAMPLE_EVERY_S = 0.25
OPEN_LOOP_CONNECTIONS = 64
DEADLINE_REFUSAL = "deadline passed before"  # StarGame and OIA refusing, unbooked, what waited too long
TX_IDS = itertools.count(1_000_000, 100_000_000)  # each load's first transaction id: ranges never meet
EXPECT = {("walletd", "oia"): '"status":"OK"', ("walletd", "stargame"): '"status":"success"',
          ("bare", "oia"): '"status":"OK"', ("bare", "stargame"): '"status":"OK"'}


class Saturation(msgspec.Struct):
    name: str
    rate: float  # answered requests/s
    requests: int
    errors: int
    closed_p50_ms: float
    closed_p99_ms: float
    server_cpu: float  # share of one core
    redis_cpu: float
    command: str
    closed_p999_ms: float = 0.0
    closed_max_ms: float = 0.0
    floor: Floor | None = None  # walletd's steps only


class Latency(msgspec.Struct):
    share: float  # of walletd's saturation
    rate: float
    sent: int
    errors: int
    percentiles_ms: dict[str, float]
    over_50ms: int
    send_lag_p99_ms: float
    server_cpu: float
    redis_cpu: float
    backlog_max: int  # ledger entries in Redis not yet in the ledger store
    drained_s: float  # after the load stopped, until the backlog was empty
    curve: list[tuple[float, float]]  # (percentile, ms) for the plot
    floor: Floor
    episodes: list[Episode]  # answers over 50 ms, grouped, each with the disk stalls it met
    label: str = ""  # what was special about the step


class Scenario(msgspec.Struct):
    users: int
    seconds: float
    requests: int
    failures: int
    rate: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    by_name: list[dict[str, str]]
    command: str
    failed: list[tuple[str, str, int]] = []  # (request, what, how many): locust's failures file

    def deadline_refusals(self) -> int:
        """Requests refused unbooked because they waited past the budget (stargame.budget_ms, OIA's):
        walletd keeping the budget, not a fault (README "Benchmarks", CI guard)."""
        return sum(n for _, what, n in self.failed if DEADLINE_REFUSAL in what)


class CpuMeter:
    def __init__(self, *processes: Process | None) -> None:
        self.processes = processes
        self.began = time.monotonic()
        self.start = [p.cpu() if p else 0.0 for p in processes]

    def shares(self) -> list[float]:
        elapsed = time.monotonic() - self.began
        pairs = zip(self.processes, self.start, strict=True)
        return [round((p.cpu() - s) / elapsed, 2) if p else 0.0 for p, s in pairs]


def wrk_command(port: int, kind: str, target: str, players: Path, connections: int, seconds: float) -> list[str]:
    if shutil.which("wrk") is None:
        raise SystemExit("bench: wrk is not installed (Debian: apt-get install wrk; `make bench` does it)")
    return ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "-s", str(BENCH_DIR / "wrk" / "load.lua"),
            f"http://127.0.0.1:{port}", "--", str(players), kind, str(next(TX_IDS)),
            fixtures.sha1("changebalance" + fixtures.STAMP + fixtures.SECRET),
            fixtures.sha1("changebalance" + fixtures.SECRET), EXPECT[(target, kind)]]


def wrk(port: int, kind: str, target: str, players: Path, connections: int, seconds: float,
        redis_process: Process, server: Process | None, monitor: Monitor | None = None) -> Saturation:
    """monitor: the floor is measured during the step (walletd's steps; the bare endpoint has no disk)."""
    subprocess.run(wrk_command(port, kind, target, players, connections, WARMUP_S), check=True,
                   capture_output=True)
    command = wrk_command(port, kind, target, players, connections, seconds)
    meter = CpuMeter(server, redis_process)
    with monitor.step(None) if monitor else contextlib.nullcontext() as watch:
        out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    server_cpu, redis_cpu = meter.shares()
    found = json.loads(re.search(r"WRK_JSON (\{.*\})", out)[1])
    first_bad = re.search(r"WRK_FIRST_BAD (.*)", out)
    if first_bad:
        print(f"wrk {target} {kind}: first unexpected answer: {first_bad[1]}", file=sys.stderr)
    rate = found["requests"] / (found["duration_us"] / 1e6)
    print(f"wrk {target} {kind}: {rate:,.0f} req/s, errors {found['socket_errors'] + found['bad_answers']}",
          file=sys.stderr)
    return Saturation(f"{target} {kind}", round(rate), found["requests"],
                      found["socket_errors"] + found["bad_answers"], found["p50_us"] / 1000,
                      found["p99_us"] / 1000, server_cpu, redis_cpu,
                      " ".join(command[:6]) + " http://… -- players " + kind + " …",
                      found["p999_us"] / 1000, found["max_us"] / 1000, watch.floor if watch else None)


def percentile(ordered: list[int], q: float) -> float:
    return at_rank(ordered, q) / 1000 if ordered else 0.0


class Backlog(msgspec.Struct):
    """Ledger entries in Redis's streams (not yet stored) while a load ran, flusher on."""

    step: str
    rate: float  # the load's answered requests/s
    highest: int
    last: int  # at the load's end
    drained_s: float  # after the load stopped, until the streams were empty
    series: list[tuple[float, int]]  # (seconds since the sampler started, entries)


class BacklogSampler(threading.Thread):
    """Ledger entries still in Redis streams, sampled while the load runs."""

    def __init__(self, redis_url: str) -> None:
        super().__init__(daemon=True)
        self.client = redis.Redis.from_url(redis_url)
        keys = Keys(WalletSettings().partitions)  # the bench config keeps the default
        self.streams = [keys.ledger(partition) for partition in range(keys.partitions)]
        self.highest = 0
        self.series: list[tuple[float, int]] = []  # (seconds since the start, entries), every SAMPLE_EVERY_S
        self.began = time.monotonic()
        self.stopping = threading.Event()

    def backlog(self) -> int:
        pipe = self.client.pipeline(transaction=False)
        for stream in self.streams:
            pipe.xlen(stream)
        return sum(pipe.execute())

    def run(self) -> None:
        while not self.stopping.wait(SAMPLE_EVERY_S):
            entries = self.backlog()
            self.series.append((round(time.monotonic() - self.began, 2), entries))
            self.highest = max(self.highest, entries)

    def finish(self, step: str, rate: float) -> Backlog:
        """Stops sampling, waits for the flusher to empty the streams, and says what it saw."""
        last = self.series[-1][1] if self.series else 0
        drained = self.drain_seconds()
        self.client.close()
        return Backlog(step, rate, self.highest, last, drained, self.series)

    def drain_seconds(self) -> float:
        self.stopping.set()
        self.join()
        began = time.monotonic()
        while self.backlog() and time.monotonic() - began < DRAIN_WAIT_S:
            time.sleep(0.05)
        return round(time.monotonic() - began, 2)


async def open_loop(port: int, players: list[tuple[str, str, bool]], rate: float, share: float, seconds: float,
                    redis_process: Process, server: Process | None, redis_url: str, monitor: Monitor,
                    label: str = "", during: Callable[[], None] | None = None) -> Latency:
    """during: called (in a thread) halfway through the measured part, e.g. to start an AOF rewrite."""
    load = OpenLoop("127.0.0.1", port, fixtures.oia_bet_requests(players, next(TX_IDS)), b'"status":"OK"',
                    OPEN_LOOP_CONNECTIONS)
    await load.open()
    sampler = BacklogSampler(redis_url)
    sampler.start()
    meter = CpuMeter(server, redis_process)
    timer = threading.Timer(WARMUP_S + seconds / 2, during) if during else None
    try:
        with monitor.step(rate) as watch:
            if timer:
                timer.start()
            result = await load.run(rate, seconds, WARMUP_S)
            watch.window = result.window
    finally:
        load.close()
        if timer:
            timer.join()
    assert watch.floor is not None
    server_cpu, redis_cpu = meter.shares()
    drained = sampler.drain_seconds()
    ordered = sorted(result.latencies_us)
    marks = {"p50": 0.5, "p90": 0.9, "p99": 0.99, "p99.9": 0.999}
    percentiles = {name: percentile(ordered, q) for name, q in marks.items()}
    percentiles["max"] = ordered[-1] / 1000 if ordered else 0.0
    curve = [(q, percentile(ordered, q / 100)) for q in (0, 50, 75, 90, 95, 99, 99.5, 99.9, 99.95, 99.99)]
    over = sum(1 for v in ordered if v > SLOW_US)
    print(f"open loop {rate:,.0f}/s: p99 {percentiles['p99']:.2f} ms, errors {result.errors}", file=sys.stderr)
    return Latency(share, round(rate), result.sent, result.errors, percentiles, over,
                   percentile(sorted(result.send_lag_us), 0.99), server_cpu, redis_cpu, sampler.highest, drained,
                   curve, watch.floor, episodes(result.slow, watch.floor), label)


def locust(port: int, players: Path, work: Path, users: int, seconds: float) -> Scenario:
    prefix = work / "locust"
    command = [sys.executable, "-m", "locust", "-f", str(BENCH_DIR / "locustfile.py"), "--headless",
               "-u", str(users), "-r", str(users), "-t", f"{seconds:g}s", "--host", f"http://127.0.0.1:{port}",
               "--csv", str(prefix), "--only-summary", "--stop-timeout", "5"]
    env = {**os.environ, "WALLETD_BENCH_PLAYERS": str(players)}
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)  # its exit is reported below
    if not Path(f"{prefix}_stats.csv").exists():
        raise SystemExit(f"bench: locust wrote no statistics (exit {done.returncode}):\n{done.stderr[-3000:]}")
    with open(f"{prefix}_stats.csv") as stats:
        rows = list(csv.DictReader(stats))
    total = next(r for r in rows if r["Name"] == "Aggregated")
    by_name = [{k: r[k] for k in ("Type", "Name", "Request Count", "Failure Count", "50%", "99%", "Max Response Time")}
               for r in rows if r["Name"] != "Aggregated"]
    with open(f"{prefix}_failures.csv") as failures:
        failed = [(f"{r['Method']} {r['Name']}", r["Error"], int(r["Occurrences"])) for r in csv.DictReader(failures)]
    return Scenario(users, seconds, int(total["Request Count"]), int(total["Failure Count"]),
                    round(float(total["Requests/s"]), 1), float(total["50%"]), float(total["99%"]),
                    round(float(total["Max Response Time"]), 1), by_name,
                    " ".join([*command[3:5], "--headless", "-u", str(users), "-t", f"{seconds:g}s"]), failed)
