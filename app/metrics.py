"""Prometheus metrics: every metric walletd exports, GET /metrics, and the
multiprocess directory (README "Metrics").

walletd always runs several processes (the HTTP worker(s) and the flush process),
so it uses prometheus-client's multiprocess mode under `walletd serve`: each process
writes its values to files in <data_dir>/metrics, and a scrape, answered by any
worker, sums them. Processes fold their own counts into prometheus-client once a
second (FOLD_INTERVAL_S), and the scraped process again just before it answers: the
hot path only adds to plain lists (app/callback_meter.py).

The ledger's backlog and lag are read from Redis when scraped (an XLEN and an
XRANGE COUNT 1 per partition, READ_PARTITIONS_MAX partitions a pipeline), not
reported by the flush process: they are then right when that process is down,
which is when they matter.

Without PROMETHEUS_MULTIPROC_DIR (the app run in a test process) each Metrics keeps
its own registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from redis.exceptions import RedisError

from app.callback_meter import LATENCY_BUCKETS_S, REFUSAL_REASONS, CallbackMeter
from app.keys import Keys
from app.logsafe import RateLimitedLog
from app.redis_client import RedisClient
from app.settings import Settings

log = logging.getLogger("walletd.metrics")
limited_log = RateLimitedLog(log)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
DIRECTORY = "metrics"  # under data_dir
# How stale another process's counts may be in a scrape (the scraped one folds first).
FOLD_INTERVAL_S = 1.0
# Partitions whose backlog one pipeline reads: building and parsing it holds the event
# loop, so the callbacks are served between pipelines (up to PARTITIONS_MAX in all).
READ_PARTITIONS_MAX = 128

# Names of the metrics walletd defines itself (deploy/grafana/walletd.json queries only these).
CALLBACK_SECONDS = "walletd_callback_duration_seconds"
ANSWERS = "walletd_callback_answers"
REFUSALS = "walletd_callback_refusals"
IN_FLIGHT = "walletd_callbacks_in_flight"
PENDING = "walletd_redis_script_client_pending"
RECONNECTS = "walletd_redis_script_client_reconnects"
REDIRECTS = "walletd_redis_cluster_redirects"
REPLICA_ACK_FAILURES = "walletd_redis_replica_ack_failures"
STORE_ERRORS = "walletd_ledger_store_errors"
STORED = "walletd_flusher_entries_stored"
BACKLOG = "walletd_ledger_backlog_entries"
LAG = "walletd_ledger_lag_seconds"
# The store errors' sources: a flusher batch the store did not take; an OIA lookup that failed.
FLUSHER, LOOKUP = "flusher", "lookup"


def use_directory(settings: Settings) -> None:
    """`walletd serve`, before any child process starts: an empty directory for this
    run's processes (a previous run's files would be summed in), named in the
    environment every child inherits; with metrics off, no directory at all."""
    if not settings.metrics.enabled:
        os.environ.pop(MULTIPROC_ENV, None)
        return
    directory = settings.data_path / DIRECTORY
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()
    os.environ[MULTIPROC_ENV] = str(directory)
    # prometheus-client picks its value class (in memory or in these files) when it is
    # imported; this process imported it before the config said where data_dir is.
    values.ValueClass = values.get_value_class()


def multiprocess() -> bool:
    on = bool(os.environ.get(MULTIPROC_ENV))
    # A metric made with the other value class would be left out of every scrape, or of none.
    assert on == getattr(values.ValueClass, "_multiprocess", False), "prometheus-client imported before the dir was set"
    return on


class Definitions:
    """The metrics prometheus-client keeps for one process. Gauges' multiprocess modes:
    livesum, since each process has its own callbacks in flight and its own script
    client; a dead process's share is dropped (mark_process_dead, see sweep_dead)."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.callback_seconds = Histogram(
            CALLBACK_SECONDS, "Time from a callback's arrival at walletd's front to its answer sent",
            ["protocol", "command"], buckets=LATENCY_BUCKETS_S, registry=registry)
        self.answers = Counter(ANSWERS, "Callbacks answered, by code (OIA: OK, OP_xx, forbidden; StarGame: "
                               "success or the fail reason)", ["protocol", "command", "code"], registry=registry)
        self.refusals = Counter(REFUSALS, "Callbacks refused because the budget was spent (deadline) or a Redis "
                                "reply was lost or late (outcome_unknown)", ["protocol", "command", "reason"],
                                registry=registry)
        self.in_flight = Gauge(IN_FLIGHT, "Callbacks being answered", ["protocol"], multiprocess_mode="livesum",
                               registry=registry)
        self.pending = Gauge(PENDING, "Script calls queued or awaiting Redis's reply on the pipelined client",
                             multiprocess_mode="livesum", registry=registry)
        self.reconnects = Counter(RECONNECTS, "New connections of the pipelined script client after its first",
                                  registry=registry)
        self.redirects = Counter(REDIRECTS, "Script calls Redis Cluster did not run where they were sent, followed: "
                                 "MOVED and ASK redirects, TRYAGAIN/CLUSTERDOWN retries", ["kind"], registry=registry)
        self.replica_ack_failures = Counter(
            REPLICA_ACK_FAILURES, "Script calls answered outcome unknown because fewer than redis.replica_acks "
            "replicas confirmed them in time (they ran on the primary)", registry=registry)
        self.store_errors = Counter(STORE_ERRORS, "Ledger store failures: flusher batches not stored, OIA lookups "
                                    "failed", ["source"], registry=registry)
        self.stored = Counter(STORED, "Ledger entries the flusher added to the ledger store", registry=registry)


def add_observations(child: Histogram, counts: list[int], seconds: float) -> None:
    """Folded counts added to a histogram's buckets at once: prometheus-client observes
    one value at a time, and keeps each bucket's own count (summed into the cumulative
    le= buckets when exposed); tests/test_metrics.py pins the exposed result."""
    for value, count in zip(child._buckets, counts, strict=True):
        if count:
            value.inc(count)
    child._sum.inc(seconds)


class Total:
    """A counter fed from a number that only grows (an attribute some part keeps)."""

    def __init__(self, child: Counter, read: Callable[[], int]) -> None:
        self.child, self.read, self.last = child, read, 0

    def fold(self) -> None:
        now = self.read()
        if now > self.last:
            self.child.inc(now - self.last)
        self.last = now


class MeterFold:
    """One protocol's CallbackMeter folded into the definitions, each series made once
    (so every one of them is exported from the start, at 0)."""

    def __init__(self, meter: CallbackMeter, defined: Definitions) -> None:
        self.meter = meter
        protocol = meter.protocol
        self.in_flight = defined.in_flight.labels(protocol)
        self.seconds = {command: defined.callback_seconds.labels(protocol, command) for command in meter.commands}
        codes = [code for code, _ in meter.outcomes.values()]
        self.answers = {command: [defined.answers.labels(protocol, command, code) for code in codes]
                        for command in meter.commands}
        reasons = [reason for _, reason in meter.outcomes.values()]
        refusals = {command: {reason: defined.refusals.labels(protocol, command, reason) for reason in REFUSAL_REASONS}
                    for command in meter.commands}
        self.refusals = {command: [refusals[command].get(reason) for reason in reasons] for command in meter.commands}

    def fold(self) -> None:
        meter = self.meter
        for command, row in meter.rows.items():
            if not any(row.answers):
                continue
            buckets, seconds, answered = row.take()
            add_observations(self.seconds[command], buckets, seconds)
            for answers, answer, refusal in zip(answered, self.answers[command], self.refusals[command], strict=True):
                if answers:
                    answer.inc(answers)
                    if refusal is not None:
                        refusal.inc(answers)
        self.in_flight.set(meter.in_flight)


class ProcessMetrics:
    """What one process exports: its callback meters, counters and gauges, folded into
    prometheus-client every FOLD_INTERVAL_S while running and once more when stopped."""

    def __init__(self) -> None:
        self.registry = None if multiprocess() else CollectorRegistry()
        self.defined = Definitions(self.registry)
        self.folds: list[MeterFold] = []
        self.totals: list[Total] = []
        self.gauges: list[tuple[Gauge, Callable[[], int]]] = []
        self.task: asyncio.Task[None] | None = None

    def count_callbacks(self, meters: Iterable[CallbackMeter]) -> None:
        self.folds += [MeterFold(meter, self.defined) for meter in meters]

    def total(self, child: Counter, read: Callable[[], int]) -> None:
        self.totals.append(Total(child, read))

    def gauge(self, child: Gauge, read: Callable[[], int]) -> None:
        self.gauges.append((child, read))

    def fold(self) -> None:
        for fold in self.folds:
            fold.fold()
        for total in self.totals:
            total.fold()
        for child, read in self.gauges:
            child.set(read())

    def start(self) -> None:
        assert self.task is None, "start() once"
        self.task = asyncio.create_task(self.run(), name="metrics-fold")

    async def run(self) -> None:
        while True:
            await asyncio.sleep(FOLD_INTERVAL_S)
            self.fold()

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None
        self.fold()  # counts since the last fold: a multiprocess file outlives its process


class LedgerBacklog:
    """A collector of the ledger streams' backlog (entries not yet in the ledger store,
    the measure wallet.backlog_max bounds) and lag (age of the oldest), per partition,
    as last read (read() before each scrape)."""

    def __init__(self, redis: RedisClient, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self.latest: list[tuple[str, int, float]] = []

    async def read(self) -> None:
        replies: list[Any] = []  # XLEN (int) and XRANGE (list) replies, alternating
        try:
            for first in range(0, self.keys.partitions, READ_PARTITIONS_MAX):
                reads = self.redis.pipeline(transaction=False)
                for partition in range(first, min(first + READ_PARTITIONS_MAX, self.keys.partitions)):
                    reads.xlen(self.keys.ledger(partition))
                    reads.xrange(self.keys.ledger(partition), count=1)
                replies += await reads.execute()
        except (RedisError, OSError) as exc:  # no samples rather than stale ones
            limited_log.warning("backlog", "metrics: the ledger backlog could not be read from Redis: %s", exc)
            self.latest = []
            return
        now_ms = time.time() * 1000
        self.latest = [(str(partition), length, lag_s(oldest, now_ms))
                       for partition, (length, oldest) in enumerate(zip(replies[::2], replies[1::2], strict=True))]

    def describe(self) -> list[Metric]:
        return []  # registered without a collect() at registration

    def collect(self) -> Iterator[Metric]:
        backlog = GaugeMetricFamily(BACKLOG, "Ledger entries in Redis not yet in the ledger store, per partition",
                                    labels=["partition"])
        lag = GaugeMetricFamily(LAG, "Age of the oldest ledger entry not yet in the ledger store (0: none)",
                                labels=["partition"])
        for partition, length, seconds in self.latest:
            backlog.add_metric([partition], length)
            lag.add_metric([partition], seconds)
        yield backlog
        yield lag


def lag_s(oldest: list[tuple[str, object]], now_ms: float) -> float:
    """Seconds since the oldest entry was added (its stream id starts with Redis's ms time)."""
    if not oldest:
        return 0.0
    return max(0.0, (now_ms - int(oldest[0][0].split("-", 1)[0])) / 1000)


def sweep_dead(directory: Path) -> None:
    """Drops the live gauges of processes that are gone (a restarted flush process or
    uvicorn worker): the scrape sees the dead pid's file, whoever restarted it."""
    for path in directory.glob("gauge_live*_*.db"):
        pid = int(path.stem.rsplit("_", 1)[1])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            mark_process_dead(pid, str(directory))
        except PermissionError:
            pass  # alive, someone else's


class Exporter:
    """What GET /metrics answers in an HTTP process: its own counts folded, the backlog
    read, then every process's metrics (multiprocess) or this one's."""

    def __init__(self, metrics: ProcessMetrics, backlog: LedgerBacklog) -> None:
        self.metrics = metrics
        self.backlog = backlog
        self.directory = os.environ.get(MULTIPROC_ENV)
        if self.directory:
            self.registry = CollectorRegistry()
            MultiProcessCollector(self.registry, self.directory)
        else:
            assert metrics.registry is not None
            self.registry = metrics.registry
        self.registry.register(backlog)

    async def render(self, accept: str) -> tuple[bytes, str]:
        """The exposition and its content type, for the scraper's Accept header."""
        self.metrics.fold()
        await self.backlog.read()
        if self.directory:
            sweep_dead(Path(self.directory))
        # Prometheus's text format (0.0.4) unless the scraper asks for a newer one or OpenMetrics.
        encode, content_type = choose_encoder(accept)
        body = await asyncio.to_thread(encode, self.registry)  # file reads and formatting off the loop
        return body, content_type
