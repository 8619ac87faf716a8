"""Moves ledger entries from the partition streams to the ledger store, exactly once.

Per partition: XREADGROUP a bounded batch -> insert in one transaction (entry id
unique, conflicts skipped) -> commit -> XACK -> trim only acknowledged entries.
It runs at its own pace (a tick), like uvicorn's main_loop, not per booking.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from concurrent.futures import ThreadPoolExecutor

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from app.keys import Keys
from app.ledger import LedgerStore, from_stream
from app.settings import FlusherSettings

log = logging.getLogger("walletd.flusher")

GROUP = "flusher"
# Bounds on the recovery loops: enough for any backlog the bookings allow
# (wallet.backlog_max), then the normal ticks carry on.
RECOVERY_ROUNDS_MAX = 10_000
DRAIN_ROUNDS_MAX = 100_000


def next_id(stream_id: str) -> str:
    ms, seq = stream_id.split("-")
    return f"{ms}-{int(seq) + 1}"


def older(a: str, b: str) -> str:
    return min(a, b, key=lambda i: tuple(int(x) for x in i.split("-")))


class Flusher:
    def __init__(self, redis: Redis, store: LedgerStore, keys: Keys, settings: FlusherSettings) -> None:
        self.redis = redis
        self.store = store
        self.keys = keys
        self.settings = settings
        self.consumer = settings.consumer or f"flusher-{socket.gethostname()}"
        # SQLite commits fsync: keep them off the event loop, one at a time.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger-store")
        self.should_exit = False

    async def setup(self) -> None:
        for partition in range(self.keys.partitions):
            try:
                await self.redis.xgroup_create(self.keys.ledger(partition), GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def recover(self) -> None:
        """Re-read our own pending entries, then claim those of dead consumers."""
        for partition in range(self.keys.partitions):
            stream = self.keys.ledger(partition)
            for _ in range(RECOVERY_ROUNDS_MAX):
                reply = await self.redis.xreadgroup(
                    GROUP, self.consumer, {stream: "0"}, count=self.settings.batch_max
                )
                messages = reply[0][1] if reply else []
                if not messages:
                    break
                await self.store_batch(partition, messages)
            await self.claim_dead(partition)

    async def claim_dead(self, partition: int) -> None:
        stream = self.keys.ledger(partition)
        start = "0-0"
        for _ in range(RECOVERY_ROUNDS_MAX):
            reply = await self.redis.xautoclaim(
                stream, GROUP, self.consumer, self.settings.claim_idle_ms,
                start_id=start, count=self.settings.batch_max,
            )
            start, messages = reply[0], reply[1]
            if messages:
                await self.store_batch(partition, messages)
            if start == "0-0":
                return

    async def store_batch(self, partition: int, messages: list) -> int:
        ids = [message_id for message_id, _ in messages]
        present = [(mid, fields) for mid, fields in messages if fields]
        if len(present) != len(messages):
            # Only a manual XDEL/XTRIM of un-acked entries gets here; verify reports the gap.
            log.error("partition %d: %d pending entries were deleted before flushing",
                      partition, len(messages) - len(present))
        entries = [from_stream(fields) for _, fields in present]
        assert all(e.partition == partition for e in entries), "entry in the wrong partition stream"
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.executor, self.store.insert, entries)
        # Ack only after the commit above: a crash before here re-reads the batch,
        # and the unique entry id makes the second insert a no-op.
        await self.redis.xack(self.keys.ledger(partition), GROUP, *ids)
        await self.trim(partition)
        return len(messages)

    async def trim(self, partition: int) -> None:
        """Drop delivered and acknowledged entries: below the oldest pending one."""
        stream = self.keys.ledger(partition)
        # Read last-delivered before the pending list: a delivery in between
        # only lowers the threshold, never raises it past an un-acked entry.
        groups = await self.redis.xinfo_groups(stream)
        delivered = next(g["last-delivered-id"] for g in groups if g["name"] == GROUP)
        if delivered == "0-0":
            return
        threshold = next_id(delivered)
        pending = await self.redis.xpending(stream, GROUP)
        if pending["pending"]:
            threshold = older(threshold, pending["min"])
        await self.redis.xtrim(stream, minid=threshold, approximate=False)

    async def flush_partition(self, partition: int) -> int:
        reply = await self.redis.xreadgroup(
            GROUP, self.consumer, {self.keys.ledger(partition): ">"}, count=self.settings.batch_max
        )
        messages = reply[0][1] if reply else []
        if not messages:
            return 0
        return await self.store_batch(partition, messages)

    async def tick(self) -> int:
        moved = 0
        for partition in range(self.keys.partitions):
            moved += await self.flush_partition(partition)
        return moved

    async def run(self) -> None:
        recovered = False
        while not self.should_exit:
            try:
                if not recovered:
                    await self.setup()
                    await self.recover()
                    recovered = True
                    log.info("flusher %s started on %d partitions", self.consumer, self.keys.partitions)
                moved = await self.tick()
            except Exception:  # a store or Redis outage: retry next tick, never exit
                log.exception("flusher tick failed, retrying next tick")
                moved = 0
            if moved < self.settings.batch_max:
                await asyncio.sleep(self.settings.tick_ms / 1000)

    async def drain(self) -> int:
        """Flush until every stream is empty of new entries (for verify and tests)."""
        await self.setup()
        await self.recover()
        total = 0
        for _ in range(DRAIN_ROUNDS_MAX):
            moved = await self.tick()
            total += moved
            if moved == 0:
                return total
        raise RuntimeError("drain did not finish: bookings arrive faster than the flusher stores them")

    def close(self) -> None:
        self.executor.shutdown(wait=True)

