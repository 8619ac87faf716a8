"""The flusher moves every ledger entry to SQLite exactly once, across restarts."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.asyncio import BlockingConnectionPool, Redis

from app.keys import Keys
from app.ledger import LedgerEntry, from_stream, open_store
from app.ledger.flusher import GROUP, STREAM_COUNT_MIN, Flusher
from app.ledger.sqlite import SqliteStore
from app.protocols.stargame.wallet import book as stargame_book
from app.redis_server import EmbeddedRedis
from app.runtime import Runtime
from app.settings import Settings
from app.wallet import Wallet
from tests.support import OPERATOR, drain, ledger_rows

pytestmark = pytest.mark.anyio

PLAYERS = 12
BETS_EACH = 25


async def book_many(wallet: Wallet) -> None:
    for i in range(PLAYERS):
        await wallet.create_player(f"pl{i}", "EUR", 100_000, "", "en", "", [], operator_id=OPERATOR)
    await asyncio.gather(*[
        stargame_book(wallet, f"pl{i}", 10, 3 if n % 3 == 0 else 0, 0)
        for i in range(PLAYERS) for n in range(BETS_EACH)
    ])


def seq_total(sync_redis: redis.Redis, settings: Settings) -> int:
    keys = Keys(settings.wallet.partitions)
    return sum(int(sync_redis.get(keys.seq(p)) or 0) for p in range(keys.partitions))


async def flusher_with_groups(wallet: Wallet, settings: Settings) -> Flusher:
    flusher = Flusher(wallet.redis, open_store(settings.storage_url), wallet.keys, settings.flusher)
    await flusher.setup()
    return flusher


def stop(flusher: Flusher) -> None:
    flusher.close()
    flusher.store.close()


def assert_exactly_once(settings: Settings, sync_redis: redis.Redis) -> None:
    rows = ledger_rows(settings)
    written = seq_total(sync_redis, settings)
    assert len(rows) == written
    assert len({(r["partition"], r["seq"]) for r in rows}) == written
    for p in range(settings.wallet.partitions):
        seqs = [r["seq"] for r in rows if r["partition"] == p]
        assert seqs == list(range(1, len(seqs) + 1))


async def test_everything_is_stored_once_and_streams_are_trimmed(
    wallet: Wallet, settings: Settings, sync_redis: redis.Redis
) -> None:
    await book_many(wallet)
    moved = await drain(settings)
    assert moved == seq_total(sync_redis, settings) == PLAYERS * (1 + BETS_EACH + 9)
    assert_exactly_once(settings, sync_redis)
    assert all(sync_redis.xlen(wallet.keys.ledger(p)) == 0 for p in range(settings.wallet.partitions))


async def test_a_crash_between_commit_and_ack_stores_nothing_twice(
    wallet: Wallet, settings: Settings, sync_redis: redis.Redis
) -> None:
    await book_many(wallet)
    flusher = await flusher_with_groups(wallet, settings)
    # What a flusher killed after COMMIT and before XACK leaves behind:
    for p in range(settings.wallet.partitions):
        reply = await wallet.redis.xreadgroup(GROUP, flusher.consumer, {wallet.keys.ledger(p): ">"}, count=7)
        if reply:
            flusher.store.insert([from_stream(fields) for _, fields in reply[0][1]])
    stop(flusher)
    half = len(ledger_rows(settings))
    assert 0 < half < seq_total(sync_redis, settings)
    # The restarted flusher (same consumer name) re-reads its pending entries.
    await drain(settings)
    assert_exactly_once(settings, sync_redis)


async def test_pending_entries_of_a_dead_consumer_are_claimed(
    wallet: Wallet, settings: Settings, sync_redis: redis.Redis
) -> None:
    await book_many(wallet)
    stop(await flusher_with_groups(wallet, settings))
    for p in range(settings.wallet.partitions):
        await wallet.redis.xreadgroup(GROUP, "dead-host", {wallet.keys.ledger(p): ">"}, count=5)
    dead = sum(sync_redis.xpending(wallet.keys.ledger(p), GROUP)["pending"]
               for p in range(settings.wallet.partitions))
    assert dead > 0
    await drain(settings)  # claim_idle_ms = 0 in tests
    assert_exactly_once(settings, sync_redis)
    assert sum(sync_redis.xpending(wallet.keys.ledger(p), GROUP)["pending"]
               for p in range(settings.wallet.partitions)) == 0


class SizeRecordingStore(SqliteStore):
    """The real SQLite store, noting how many entries each transaction carried."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.sizes: list[int] = []

    def insert(self, entries: Sequence[LedgerEntry]) -> int:
        self.sizes.append(len(entries))
        return super().insert(entries)


def recording_flusher(wallet: Wallet, settings: Settings) -> tuple[Flusher, SizeRecordingStore]:
    store = SizeRecordingStore(settings.storage_url.removeprefix("sqlite:///"))
    return Flusher(wallet.redis, store, wallet.keys, settings.flusher), store


async def test_a_read_and_a_store_transaction_hold_at_most_batch_max_entries_whatever_the_partitions(
    wallet: Wallet, settings: Settings, sync_redis: redis.Redis
) -> None:
    # XREADGROUP's COUNT is per stream: 256 partitions x batch_max 5 could be 1,280 in one
    # read, and Redis serves no booking while it builds the reply.
    settings.flusher.batch_max = 5
    await book_many(wallet)
    flusher, store = recording_flusher(wallet, settings)
    try:
        await flusher.drain()
    finally:
        stop(flusher)
    assert max(store.sizes) == 5
    assert_exactly_once(settings, sync_redis)
    assert all(sync_redis.xlen(wallet.keys.ledger(p)) == 0 for p in range(settings.wallet.partitions))


class ReadRecordingRedis(Redis):
    """The real client, noting how many entries each XREADGROUP delivered."""

    sizes: list[int]

    async def xreadgroup(self, *args: Any, **kwargs: Any) -> Any:
        reply = await super().xreadgroup(*args, **kwargs)
        self.sizes.append(sum(len(messages) for _, messages in reply or []))
        return reply


def read_recording_flusher(wallet: Wallet, settings: Settings) -> tuple[Flusher, SizeRecordingStore]:
    client = ReadRecordingRedis.from_pool(BlockingConnectionPool.from_url(settings.redis.url, decode_responses=True))
    client.sizes = []
    store = SizeRecordingStore(settings.storage_url.removeprefix("sqlite:///"))
    return Flusher(client, store, wallet.keys, settings.flusher), store


async def test_a_transaction_gathers_several_reads_each_at_most_read_max(
    wallet: Wallet, settings: Settings, sync_redis: redis.Redis
) -> None:
    """One commit per batch_max entries (the drain rate), one read per read_max at most
    (Redis's stall per read); the partitions read in windows of read_max / STREAM_COUNT_MIN streams."""
    settings.flusher.batch_max, settings.flusher.read_max = 60, 10
    await book_many(wallet)
    flusher, store = read_recording_flusher(wallet, settings)
    try:
        await flusher.drain()
        reads = flusher.redis.sizes  # type: ignore[attr-defined]
    finally:
        stop(flusher)
        await flusher.redis.aclose()
    assert max(reads) == 10 and max(store.sizes) == 60
    assert store.sizes.count(60) >= 3  # full batches, each from six reads or more
    assert len(reads) >= 6 * len(store.sizes) - 6
    assert_exactly_once(settings, sync_redis)


async def test_when_a_batch_fills_before_every_window_is_read_the_next_tick_starts_at_the_rest(
    settings: Settings, sync_redis: redis.Redis
) -> None:
    """Windows take turns: a backlog in the first partitions cannot starve the others."""
    # Windows of two streams (read_max / STREAM_COUNT_MIN), each filling a batch: one a tick.
    settings.flusher.batch_max = settings.flusher.read_max = 2 * STREAM_COUNT_MIN
    settings.wallet.partitions = 16  # eight windows, whichever the default
    async with Runtime(settings, settings.redis.url) as runtime:
        wallet = runtime.wallet
        await book_many(wallet)
        busy = {p for p in range(settings.wallet.partitions) if sync_redis.xlen(wallet.keys.ledger(p))}
        # every window could fill a batch
        assert all(sync_redis.xlen(wallet.keys.ledger(p)) >= settings.flusher.batch_max for p in busy)
        flusher = await flusher_with_groups(wallet, settings)
        try:
            for _ in range(8):  # eight windows, one a tick: each read once in eight ticks
                assert (await flusher.tick())[1]
        finally:
            stop(flusher)
    assert {row["partition"] for row in ledger_rows(settings)} == busy


async def test_a_lone_busy_partition_still_moves_full_batches(
    wallet: Wallet, settings: Settings, sync_redis: redis.Redis
) -> None:
    """The other partitions' unused share goes to it: not batch_max / 16 a tick."""
    settings.flusher.batch_max = 40
    await wallet.create_player("solo", "EUR", 1000, "", "en", "", [], operator_id=OPERATOR)
    for _ in range(99):
        await stargame_book(wallet, "solo", 1, 0, 0)
    flusher, store = recording_flusher(wallet, settings)
    try:
        await flusher.setup()
        assert await flusher.tick() == (40, True)
        assert await flusher.tick() == (40, True)
        assert await flusher.tick() == (20, False)
    finally:
        stop(flusher)
    assert store.sizes == [40, 40, 20]
    assert_exactly_once(settings, sync_redis)


async def test_unacknowledged_entries_are_never_trimmed(
    wallet: Wallet, settings: Settings, sync_redis: redis.Redis
) -> None:
    await wallet.create_player("solo", "EUR", 1000, "", "en", "", [], operator_id=OPERATOR)
    partition = wallet.keys.partition("solo")
    stream = wallet.keys.ledger(partition)
    await drain(settings)
    for _ in range(4):
        await stargame_book(wallet, "solo", 1, 0, 0)
    # Another consumer holds the first two entries un-acked.
    await wallet.redis.xreadgroup(GROUP, "slow", {stream: ">"}, count=2)
    settings.flusher.claim_idle_ms = 3_600_000
    await drain(settings)
    kept = [fields["balance"] for _, fields in sync_redis.xrange(stream)]
    assert kept[:2] == ["999", "998"]  # the held entries stay until acknowledged
    assert len(ledger_rows(settings, "player_id = 'solo'")) == 3  # open + the two not held
    settings.flusher.claim_idle_ms = 0
    await drain(settings)
    assert sync_redis.xlen(stream) == 0
    assert_exactly_once(settings, sync_redis)


async def wait_for_rows(settings: Settings, count: int, timeout_s: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while len(ledger_rows(settings)) < count:
        assert asyncio.get_running_loop().time() < deadline, "entries were never stored"
        await asyncio.sleep(0.05)


async def wait_for_log(caplog: pytest.LogCaptureFixture, text: str, timeout_s: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not any(text in r.getMessage() for r in caplog.records):
        assert asyncio.get_running_loop().time() < deadline, f"no log line with {text!r}"
        await asyncio.sleep(0.05)


async def test_a_store_locked_past_the_busy_timeout_is_retried_until_everything_is_stored(
    wallet: Wallet, settings: Settings, sync_redis: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """Item 3: a failed batch stays pending to our consumer; it must be re-read, not left."""
    settings.flusher.tick_ms = 10
    settings.flusher.retry_backoff_max_ms = 100
    db_path = settings.storage_url.removeprefix("sqlite:///")
    store = SqliteStore(db_path, busy_timeout_ms=20)
    flusher = Flusher(wallet.redis, store, wallet.keys, settings.flusher)
    locker = sqlite3.connect(db_path, isolation_level=None)
    caplog.set_level(logging.INFO, logger="walletd.flusher")
    task = asyncio.create_task(flusher.run())
    try:
        # Its start (a consumer group per partition, each an fsync on Redis) before the lock:
        # the flusher must meet the locked store on its ticks.
        await wait_for_log(caplog, "started on")
        locker.execute("BEGIN EXCLUSIVE")  # an operator's long query, a backup tool...
        await book_many(wallet)
        await asyncio.sleep(1.0)  # dozens of busy-timeouts while bookings go on
        assert ledger_rows(settings) == []
        locker.execute("COMMIT")
        await wait_for_rows(settings, seq_total(sync_redis, settings))
        await asyncio.sleep(0.1)  # the last batch's XACK and trim
    finally:
        flusher.request_exit()
        await asyncio.wait_for(task, 5)
        locker.close()
        stop(flusher)
    assert_exactly_once(settings, sync_redis)
    assert all(sync_redis.xlen(wallet.keys.ledger(p)) == 0 for p in range(settings.wallet.partitions))
    assert sum(sync_redis.xpending(wallet.keys.ledger(p), GROUP)["pending"]
               for p in range(settings.wallet.partitions)) == 0
    lines = [r for r in caplog.records if r.name == "walletd.flusher"]
    assert [r.levelname for r in lines] == ["INFO", "ERROR", "INFO"], [r.getMessage() for r in lines]
    assert "locked" in lines[1].getMessage() and lines[1].exc_info is None
    assert "recovered" in lines[2].getMessage()


@pytest.mark.slow
async def test_a_redis_outage_logs_one_line_and_the_flusher_resumes(
    tmp_path: Path, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    server = EmbeddedRedis(tmp_path / "own")
    url = server.start()
    settings.redis.url = url
    settings.flusher.tick_ms = 10
    settings.flusher.retry_backoff_max_ms = 100
    runtime = Runtime(settings, url, ledger=True)
    await runtime.start()
    wallet, flusher = runtime.wallet, runtime.flusher
    assert flusher is not None
    caplog.set_level(logging.INFO, logger="walletd.flusher")
    task = asyncio.create_task(flusher.run())
    try:
        await wallet.create_player("a", "EUR", 100, "", "en", "", [], operator_id=OPERATOR)
        await wait_for_rows(settings, 1)
        server.stop()
        await asyncio.sleep(1.0)
        server.start()  # same port and AOF
        await stargame_book(wallet, "a", 1, 0, 0)
        await wait_for_rows(settings, 2)
    finally:
        flusher.request_exit()
        await asyncio.wait_for(task, 5)
        await runtime.close()
        server.stop()
    lines = [r for r in caplog.records if r.name == "walletd.flusher"]
    assert [r.levelname for r in lines] == ["INFO", "ERROR", "INFO"], [r.getMessage() for r in lines]
