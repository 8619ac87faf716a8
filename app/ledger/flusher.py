"""Moves ledger entries from the partition streams to the ledger store, exactly once.

Per tick: XREADGROUP the partitions' new entries, at most read_max a read and
batch_max in all -> insert them in one transaction (entry id unique, identical repeats
skipped) -> commit -> XACK -> trim only acknowledged entries.
It runs at its own pace (a tick), like uvicorn's main_loop, not per booking.

On Redis Cluster every partition's stream is in a slot of its own, so one XREADGROUP
of several streams is refused (CROSSSLOT): there each stream gets its own XREADGROUP,
all of a window's in one pipeline, which redis-py's cluster client splits per primary
and sends to them at once. A read asks as on one Redis (the window's fair share, at
most read_max in all), so a primary builds no bigger replies; windows are
read_max / STREAM_COUNT_MIN streams wide (in both modes), so that a command asks for
several entries of each stream.
XREADGROUP is the one command whose keys redis-py cannot find without asking Redis
(COMMAND GETKEYS, a round trip each): it is sent to the stream's primary by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from concurrent.futures import ThreadPoolExecutor

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from app.keys import Keys
from app.ledger import LedgerEntry, LedgerStore, from_stream
from app.ledger.consumers import LEASE_RENEW_S, Lease, prune
from app.ledger.guard import ColdStart
from app.redis_client import RedisClient
from app.settings import FlusherSettings

log = logging.getLogger("walletd.flusher")

# The consumer group every flusher reads through: an entry is delivered to one of them.
GROUP = "flusher"
# Bounds on the recovery loops: enough for any backlog the bookings allow
# (wallet.backlog_max), then the normal ticks carry on.
RECOVERY_ROUNDS_MAX = 10_000
DRAIN_ROUNDS_MAX = 100_000
# 2**20 ticks is past any sane retry_backoff_max_ms; keeps the power small.
BACKOFF_DOUBLINGS_MAX = 20
# The fewest entries a window's read asks of each stream: windows are read_max / this
# streams wide. At 256 partitions and read_max 500 a window of every stream asked one
# entry of each: on a cluster a command per entry (+80 % of the flush process's CPU), on
# one Redis a 256-stream XREADGROUP returning an entry or two per busy stream, then more
# reads for the rest (+66 % CPU per entry against 16 partitions: bench/flusher_cluster.py).
STREAM_COUNT_MIN = 16
# Consumer groups created per pipelined round trip (setup): Redis serves no other client
# while it works through one client's pipeline.
SETUP_CHUNK = 1000
# Consumers of instances gone for good are looked for this often (app/ledger/consumers.py):
# an XINFO per partition, rare enough to cost nothing; a replaced instance's name leaves
# the group within DEAD_CONSUMER_IDLE_MS and one interval of its last read.
PRUNE_INTERVAL_S = 600.0
# While another instance holds our consumer name, look again this often.
LEASE_WAIT_S = 5.0


# A delivered stream message: its id and fields (None once XDEL/XTRIM removed it).
StreamMessage = tuple[str, dict[str, str] | None]


def delivered(reply: object) -> list[StreamMessage]:
    """The messages of a one-stream XREADGROUP reply, RESP2-shaped: [[stream, messages]]."""
    if not reply:
        return []
    assert isinstance(reply, list), "connect() speaks RESP2"
    messages: list[StreamMessage] = reply[0][1]
    return messages


def delivered_per_stream(reply: object) -> list[tuple[str, list[StreamMessage]]]:
    """(stream, messages) of a several-stream XREADGROUP reply, RESP2-shaped."""
    if not reply:
        return []
    assert isinstance(reply, list), "connect() speaks RESP2"
    return [(stream, messages) for stream, messages in reply]


class FailureStreak:
    """One log line when a run of failed ticks starts and one when it ends,
    whatever the failure rate (a Redis outage fails every tick)."""

    def __init__(self) -> None:
        self.failures = 0
        self.since_s = 0.0

    def failed(self, exc: Exception, settings: FlusherSettings) -> float:
        """Seconds to wait before the next try: doubling from tick_ms, capped."""
        if self.failures == 0:
            self.since_s = time.monotonic()
            log.error("flusher: %s: %s; entries stay pending in Redis and are retried "
                      "(backoff up to %d ms, next line when it recovers)",
                      type(exc).__name__, exc, settings.retry_backoff_max_ms)
        self.failures += 1
        delay_ms = min(settings.tick_ms * 2 ** min(self.failures, BACKOFF_DOUBLINGS_MAX),
                       settings.retry_backoff_max_ms)
        return delay_ms / 1000

    def succeeded(self) -> None:
        if self.failures:
            log.info("flusher recovered after %d failed tries in %.1f s",
                     self.failures, time.monotonic() - self.since_s)
        self.failures = 0


def busy_group(error: Exception) -> bool:
    """XGROUP CREATE's refusal of a group that exists: what setup() wants."""
    return isinstance(error, ResponseError) and "BUSYGROUP" in str(error)


def next_id(stream_id: str) -> str:
    ms, seq = stream_id.split("-")
    return f"{ms}-{int(seq) + 1}"


def older(a: str, b: str) -> str:
    return min(a, b, key=lambda i: tuple(int(x) for x in i.split("-")))


class Flusher:
    def __init__(self, redis: RedisClient, store: LedgerStore, keys: Keys, settings: FlusherSettings,
                 guard: ColdStart | None = None, *, consumer: str = "", lease: Lease | None = None) -> None:
        self.redis = redis
        self.cluster = redis if isinstance(redis, RedisCluster) else None  # one XREADGROUP per stream
        self.guard = guard  # run() idles while it refuses (drain(), for verify and tests, does not)
        self.store = store
        self.keys = keys
        self.settings = settings
        # This instance's own name (app/ledger/consumers.py consumer_name), held by the lease
        # while run() runs; a bare Flusher (tests, a tool) falls back to the configured one.
        self.consumer = consumer or settings.consumer or f"flusher-{socket.gethostname()}"
        self.lease = lease
        # SQLite commits fsync: keep them off the event loop, one at a time.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger-store")
        self.partition_of = {keys.ledger(partition): partition for partition in range(keys.partitions)}
        # One XREADGROUP holds at most this many entries (a read never exceeds a batch).
        self.read_max = min(settings.read_max, settings.batch_max)
        # The partitions' streams in windows of read_max / STREAM_COUNT_MIN: a read of a
        # window asks each of its streams for at least STREAM_COUNT_MIN entries (a cluster
        # reads each stream by a command of its own) and all of them for at most read_max.
        streams = list(self.partition_of)
        width = max(1, self.read_max // STREAM_COUNT_MIN)
        self.windows = [streams[start:start + width] for start in range(0, len(streams), width)]
        self.first_window = 0  # where the next read starts: windows take turns when a batch fills
        # The next batch, read while the store committed the last one (tick); cleared by
        # recover(), which re-reads it with every other entry pending to us.
        self.ahead: tuple[list[tuple[int, list[StreamMessage]]], bool] | None = None
        self.should_exit = False
        self.wake = asyncio.Event()  # set by request_exit: ends a pause at once
        self.lease_due_s = 0.0  # when run() renews the lease next
        self.lease_refused = False  # another instance holds our name (logged once per spell)
        # Counted for the metrics (app/metrics.py): entries committed, and batches the store
        # failed to take (each stays pending and is retried).
        self.entries_stored = 0
        self.store_errors = 0

    async def setup(self) -> None:
        """Every partition's consumer group, pipelined (on a cluster, each on its primary)."""
        for start in range(0, self.keys.partitions, SETUP_CHUNK):
            creates = self.redis.pipeline(transaction=False)
            for partition in range(start, min(start + SETUP_CHUNK, self.keys.partitions)):
                creates.xgroup_create(self.keys.ledger(partition), GROUP, id="0", mkstream=True)
            for reply in await creates.execute(raise_on_error=False):
                if isinstance(reply, Exception) and not busy_group(reply):
                    raise reply

    async def read_stream(self, stream: str, start: str, count: int) -> list[StreamMessage]:
        """One stream's entries after start ('>': never delivered; '0': pending to us)."""
        if self.cluster is None:
            return delivered(await self.redis.xreadgroup(GROUP, self.consumer, {stream: start}, count=count))
        await self.cluster.initialize()  # the slot map, read once (and again after a failure)
        reply = await self.cluster.execute_command(*self.xreadgroup_args(stream, start, count),
                                                   target_nodes=self.cluster.get_node_from_key(stream))
        return delivered(reply)

    async def read_streams(self, streams: list[str], count: int) -> dict[str, list[StreamMessage]]:
        """Up to count new entries of each stream; only the streams that had some."""
        if self.cluster is None:  # one XREADGROUP: the commands, not the entries, were most of the CPU
            reply = await self.redis.xreadgroup(GROUP, self.consumer, dict.fromkeys(streams, ">"), count=count)
            return dict(delivered_per_stream(reply))
        await self.cluster.initialize()
        reads = self.cluster.pipeline(transaction=False)
        for stream in streams:
            reads.execute_command(*self.xreadgroup_args(stream, ">", count),
                                  target_nodes=self.cluster.get_node_from_key(stream))
        replies = await reads.execute()
        return {stream: messages for stream, reply in zip(streams, replies, strict=True)
                if (messages := delivered(reply))}

    def xreadgroup_args(self, stream: str, start: str, count: int) -> tuple[str | int, ...]:
        return ("XREADGROUP", "GROUP", GROUP, self.consumer, "COUNT", count, "STREAMS", stream, start)

    async def recover(self) -> None:
        """Re-read our own pending entries, then claim those of dead consumers."""
        self.ahead = None  # pending to us: re-read below
        for partition in range(self.keys.partitions):
            await self.reread_own(partition)
            await self.claim_dead(partition)

    async def reread_own(self, partition: int) -> None:
        """Entries delivered to us but not acknowledged (a failed batch, a crash)."""
        stream = self.keys.ledger(partition)
        for _ in range(RECOVERY_ROUNDS_MAX):
            messages = await self.read_stream(stream, "0", self.read_max)
            if not messages:
                return
            await self.store_batch(partition, messages)

    async def claim_all(self) -> None:
        for partition in range(self.keys.partitions):
            await self.claim_dead(partition)

    async def claim_dead(self, partition: int) -> None:
        stream = self.keys.ledger(partition)
        start = "0-0"
        for _ in range(RECOVERY_ROUNDS_MAX):
            reply = await self.redis.xautoclaim(
                stream, GROUP, self.consumer, self.settings.claim_idle_ms,
                start_id=start, count=self.read_max,
            )
            start, messages = reply[0], reply[1]
            if messages:
                await self.store_batch(partition, messages)
            if start == "0-0":
                return

    async def store_batch(self, partition: int, messages: list[StreamMessage]) -> int:
        return await self.store_batches([(partition, messages)])

    async def store_batches(self, batches: list[tuple[int, list[StreamMessage]]], read_ahead: bool = False) -> int:
        """Partitions' batches stored in one transaction (one commit, one fsync), then
        acknowledged and trimmed: a few round trips for all of them, not a few each.
        read_ahead: the next batch is read meanwhile, into self.ahead (its entries stay
        pending to us, unacknowledged, until a later transaction stores them)."""
        entries: list[LedgerEntry] = []
        for partition, messages in batches:
            present = [fields for _, fields in messages if fields]
            if len(present) != len(messages):
                # Only a manual XDEL/XTRIM of un-acked entries gets here; verify reports the gap.
                log.error("partition %d: %d pending entries were deleted before flushing",
                          partition, len(messages) - len(present))
            stored = [from_stream(fields) for fields in present]
            assert all(e.partition == partition for e in stored), "entry in the wrong partition stream"
            entries += stored
        storing = asyncio.get_running_loop().run_in_executor(self.executor, self.store.insert, entries)
        try:
            if read_ahead:
                self.ahead = await self.read_batches()
        finally:
            await self.stored(storing)  # a failed read still lets the store finish (or fail) first
        # Ack only after the commit above: a crash before here re-reads the batches,
        # and the unique entry id makes the second insert a no-op.
        acks = self.redis.pipeline(transaction=False)
        for partition, messages in batches:
            acks.xack(self.keys.ledger(partition), GROUP, *[message_id for message_id, _ in messages])
        await acks.execute()
        await self.trim([partition for partition, _ in batches])
        return sum(len(messages) for _, messages in batches)

    async def stored(self, storing: asyncio.Future[int]) -> None:
        """Waits for the store's insert, counting the entries it added or its failure."""
        try:
            self.entries_stored += await storing
        except Exception:
            self.store_errors += 1
            raise

    async def trim(self, partitions: list[int]) -> None:
        """Drop delivered and acknowledged entries: below the oldest pending one."""
        # Read last-delivered before the pending list: a delivery in between
        # only lowers the threshold, never raises it past an un-acked entry.
        reads = self.redis.pipeline(transaction=False)
        for partition in partitions:
            reads.xinfo_groups(self.keys.ledger(partition))
            reads.xpending(self.keys.ledger(partition), GROUP)
        replies = await reads.execute()
        trims = self.redis.pipeline(transaction=False)
        for partition, groups, pending in zip(partitions, replies[::2], replies[1::2], strict=True):
            delivered = next(g["last-delivered-id"] for g in groups if g["name"] == GROUP)
            if delivered == "0-0":
                continue
            threshold = next_id(delivered)
            if pending["pending"]:
                threshold = older(threshold, pending["min"])
            trims.xtrim(self.keys.ledger(partition), minid=threshold, approximate=False)
        if len(trims):
            await trims.execute()

    async def flush_partition(self, partition: int) -> int:
        messages = await self.read_stream(self.keys.ledger(partition), ">", self.read_max)
        if not messages:
            return 0
        return await self.store_batch(partition, messages)

    async def tick(self) -> tuple[int, bool]:
        """One batch of every window's new entries stored in one transaction and
        acknowledged; while the store commits it, the next batch is read (when there may
        be more), so Redis's and this process's work on the next batch overlaps the
        store's on this one. (entries moved, whether a partition may hold more)."""
        if self.ahead is not None:
            (batches, more), self.ahead = self.ahead, None
        else:
            batches, more = await self.read_batches()
        if not batches:
            return 0, more
        moved = await self.store_batches(batches, read_ahead=more)
        return moved, more

    async def read_batches(self) -> tuple[list[tuple[int, list[StreamMessage]]], bool]:
        """New entries of every window of partitions, at most batch_max in all: one
        commit (an fsync) for up to batch_max entries, however many reads it took.
        Also: whether a partition may hold more."""
        batches: list[tuple[int, list[StreamMessage]]] = []
        room, more, read = self.settings.batch_max, False, 0
        for turn in range(len(self.windows)):
            if room == 0:
                more = True  # the windows not read start the next batch
                break
            window = self.windows[(self.first_window + turn) % len(self.windows)]
            got, window_more, room = await self.read_window(window, room)
            batches += got
            more = more or window_more
            read += 1
        self.first_window = (self.first_window + read) % len(self.windows)
        return batches, more

    async def read_window(self, streams: list[str], room: int) -> tuple[list[tuple[int, list[StreamMessage]]],
                                                                         bool, int]:
        """At most room new entries of these streams, shared out evenly, at most read_max
        a read, in as few XREADGROUPs as it takes: usually one (the commands, not the
        entries, were most of the flusher's CPU). XREADGROUP's COUNT is per stream, and
        Redis serves no booking while it builds a reply (~4 us an entry: 16 x 500 in one
        read stalled every booking ~30 ms), so each read asks for read_max / streams of
        each; bookings are served between reads. What one stream leaves goes to those
        that filled theirs, so a lone busy partition still moves a full batch.
        Also: whether a stream may hold more, and the room left."""
        taken: dict[str, list[StreamMessage]] = {}
        candidates = streams
        # Each read either ends a stream's turn (it had fewer than count) or takes at least
        # one entry of the room per candidate (count 0 ends it): bounded by both.
        for _ in range(len(streams) + room + 1):
            count = min(room, self.read_max) // len(candidates)
            if count == 0:
                break
            got = await self.read_streams(candidates, count)
            for stream, messages in got.items():
                taken.setdefault(stream, []).extend(messages)
                room -= len(messages)
            candidates = [stream for stream in candidates if len(got.get(stream) or ()) == count]
            if not candidates:
                break
        assert room >= 0
        batches = [(self.partition_of[stream], messages) for stream, messages in taken.items() if messages]
        return batches, bool(candidates), room

    def request_exit(self) -> None:
        self.should_exit = True
        self.wake.set()

    async def pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wake.wait(), seconds)

    async def run(self) -> None:
        """Tick until asked to exit, then free the consumer name."""
        try:
            await self.ticks()
        finally:
            if self.lease is not None:
                with contextlib.suppress(Exception):  # Redis gone: it lapses by itself
                    await self.lease.release()

    async def ticks(self) -> None:
        """Any failure (store locked or down, Redis down) leaves the batch pending to us:
        the next try re-reads it first."""
        streak = FailureStreak()
        recovered = started = False
        next_claim_s = next_prune_s = 0.0
        while not self.should_exit:
            if self.guard is not None and self.guard.refusal:
                # Redis is behind the store (or being rebuilt): its streams are not to be
                # stored, nor its groups created; set up and recover again afterwards.
                recovered = False
                await self.pause(self.settings.tick_ms / 1000)
                continue
            try:
                if not recovered and self.guard is not None:
                    # After a failure (Redis restarted?) compare again before creating groups
                    # in a Redis that may have lost its data; the next round idles if so.
                    await self.guard.check()
                    if self.guard.refusal:
                        continue
                if not await self.keep_lease(renew=not recovered):
                    recovered = False  # another instance may have stored our pending entries
                    await self.pause(LEASE_WAIT_S)
                    continue
                if not recovered:
                    await self.setup()
                    await self.recover()
                    recovered, next_claim_s = True, time.monotonic() + self.settings.claim_interval_ms / 1000
                    if not started:
                        started = True
                        log.info("flusher %s started on %d partitions", self.consumer, self.keys.partitions)
                elif time.monotonic() >= next_claim_s:
                    await self.claim_all()
                    next_claim_s = time.monotonic() + self.settings.claim_interval_ms / 1000
                    if time.monotonic() >= next_prune_s:
                        await prune(self.redis, list(self.partition_of), GROUP, self.consumer)
                        next_prune_s = time.monotonic() + PRUNE_INTERVAL_S
                _, full = await self.tick()
            except Exception as exc:  # noqa: BLE001 - any failure is retried, never fatal
                recovered = False
                await self.pause(streak.failed(exc, self.settings))
                continue
            streak.succeeded()
            if not full:
                await self.pause(self.settings.tick_ms / 1000)

    async def keep_lease(self, renew: bool) -> bool:
        """Whether our consumer name is ours (app/ledger/consumers.py): the lease taken or
        renewed when due (or renew), else the last answer stands. One ERROR line when
        another instance holds it, one INFO line when it is ours again."""
        lease = self.lease
        if lease is None:
            return True
        if renew or time.monotonic() >= self.lease_due_s:
            holder = await lease.hold()
            self.lease_due_s = time.monotonic() + LEASE_RENEW_S
            if holder is not None and not self.lease_refused:
                log.error("%s; this flusher stores nothing until it is free", lease.refusal(holder))
            elif holder is None and self.lease_refused:
                log.info("flusher consumer %r is this instance's again: flushing", self.consumer)
            self.lease_refused = holder is not None
        return not self.lease_refused

    async def drain(self) -> int:
        """Flush until every stream is empty of new entries (for verify and tests)."""
        await self.setup()
        await self.recover()
        total = 0
        for _ in range(DRAIN_ROUNDS_MAX):
            moved, _ = await self.tick()
            total += moved
            if moved == 0:
                return total
        raise RuntimeError("drain did not finish: bookings arrive faster than the flusher stores them")

    def close(self) -> None:
        self.executor.shutdown(wait=True)

