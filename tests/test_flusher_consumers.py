"""Several flushers (one per walletd instance) sharing one Redis: each under its own stable
consumer name held by a lease, trims that never drop another consumer's un-acked entry,
a live consumer's entries claimed only after claim_idle_ms, dead consumers pruned."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
import redis
from redis.asyncio import Redis

from app.ledger import consumers as consumers_module, flusher as flusher_module, open_store
from app.ledger.consumers import LEASE_TTL_MS, PRUNE_SCRIPT, Lease, consumer_name, identity, prune
from app.ledger.flusher import GROUP, Flusher
from app.protocols.stargame.wallet import book as stargame_book
from app.settings import Settings
from app.wallet import Wallet
from tests.support import OPERATOR, drain, ledger_rows

pytestmark = pytest.mark.anyio

FLUSHED_TIMEOUT_S = 10.0


def flusher_named(wallet: Wallet, settings: Settings, consumer: str, lease: Lease | None = None) -> Flusher:
    return Flusher(wallet.redis, open_store(settings.storage_url), wallet.keys, settings.flusher,
                   consumer=consumer, lease=lease)


def stop(flusher: Flusher) -> None:
    flusher.close()
    flusher.store.close()


def stream_ids(sync_redis: redis.Redis, stream: str) -> list[str]:
    return [entry_id for entry_id, _ in sync_redis.xrange(stream)]


async def solo_bets(wallet: Wallet, count: int, player: str = "solo") -> None:
    if await wallet.account(player) is None:
        await wallet.create_player(player, "EUR", 100_000, "", "en", "", [], operator_id=OPERATOR)
    for _ in range(count):
        await stargame_book(wallet, player, 1, 0, 0)


def seqs_stored(settings: Settings, player: str) -> list[int]:
    return [row["seq"] for row in ledger_rows(settings, "player_id = ?", (player,))]


def test_the_default_consumer_name_is_stable_per_data_dir_and_the_setting_overrides_it(tmp_path: Path) -> None:
    one, same, other = (Settings(data_dir=str(tmp_path / name)) for name in ("a", "a", "b"))
    assert consumer_name(one) == consumer_name(same)  # a restart re-reads its own pending entries
    assert consumer_name(one) != consumer_name(other)  # two instances on one host: two names
    assert consumer_name(one).startswith("flusher-")
    one.flusher.consumer = "eu-west-1"
    assert consumer_name(one) == "eu-west-1"


async def test_a_consumer_name_is_leased_to_one_instance(wallet: Wallet, tmp_path: Path,
                                                         sync_redis: redis.Redis) -> None:
    mine = Lease(wallet.redis, "shared", tmp_path / "a")
    again = Lease(wallet.redis, "shared", tmp_path / "a")  # the same instance restarted
    theirs = Lease(wallet.redis, "shared", tmp_path / "b")
    assert await mine.hold() is None
    assert 0 < sync_redis.pttl(mine.key) <= LEASE_TTL_MS  # lapses unless renewed
    assert await theirs.hold() == identity(tmp_path / "a")
    assert await theirs.holder() == identity(tmp_path / "a")
    assert "'shared' is held by another walletd instance" in theirs.refusal(identity(tmp_path / "a"))
    assert await again.hold() is None and await again.holder() is None
    await theirs.release()  # not theirs: nothing happens
    assert sync_redis.get(mine.key) == identity(tmp_path / "a")
    await mine.release()
    assert await theirs.hold() is None
    assert await mine.holder() == identity(tmp_path / "b")


async def test_a_flusher_whose_name_another_instance_holds_stores_nothing_until_it_is_free(
    wallet: Wallet, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(flusher_module, "LEASE_WAIT_S", 0.1)
    monkeypatch.setattr(flusher_module, "LEASE_RENEW_S", 0.1)
    settings.flusher.tick_ms = 10
    other = Lease(wallet.redis, "shared", tmp_path / "elsewhere")
    assert await other.hold() is None
    flusher = flusher_named(wallet, settings, "shared", Lease(wallet.redis, "shared", settings.data_path))
    caplog.set_level(logging.INFO, logger="walletd.flusher")
    await solo_bets(wallet, 3)
    task = asyncio.create_task(flusher.run())
    try:
        await asyncio.sleep(0.5)  # several looks at the lease
        assert ledger_rows(settings) == []
        await other.release()  # that instance stopped
        deadline = asyncio.get_running_loop().time() + FLUSHED_TIMEOUT_S
        while len(ledger_rows(settings)) < 4:
            assert asyncio.get_running_loop().time() < deadline, "never flushed once the name was free"
            await asyncio.sleep(0.05)
    finally:
        flusher.request_exit()
        await asyncio.wait_for(task, 5)
        stop(flusher)
    lines = [r for r in caplog.records if r.name == "walletd.flusher"]
    refusals = [r for r in lines if r.levelname == "ERROR"]
    assert len(refusals) == 1 and "held by another walletd instance" in refusals[0].getMessage()
    assert any("is this instance's again" in r.getMessage() for r in lines)
    assert await other.holder() is None  # released at the clean stop: nobody holds it


async def test_a_trim_never_drops_an_entry_another_consumer_has_not_acknowledged(
    wallet: Wallet, settings: Settings, sync_redis: redis.Redis
) -> None:
    """Consumer a reads a batch and is still storing it while b stores, acks and trims
    the newer entries: the group-wide pending list, not b's own, bounds b's trim."""
    await solo_bets(wallet, 4)
    stream = wallet.keys.ledger(wallet.keys.partition("solo"))
    a, b = flusher_named(wallet, settings, "a"), flusher_named(wallet, settings, "b")
    try:
        await a.setup()
        held, _ = await a.read_batches()  # pending to a, its commit still running
        held_ids = [entry_id for _, messages in held for entry_id, _ in messages]
        assert len(held_ids) == 5
        await solo_bets(wallet, 3)
        assert await b.tick() == (3, False)  # the three newer ones: stored, acked, trimmed
        assert set(held_ids) <= set(stream_ids(sync_redis, stream)), "b trimmed entries a had not acknowledged"
        assert await a.store_batches(held) == 5
        assert stream_ids(sync_redis, stream) == []  # all acknowledged now: all trimmed
        # And the other way round: b holds the newer entries while a stores the older.
        await solo_bets(wallet, 2)
        older, _ = await a.read_batches()
        await solo_bets(wallet, 2)
        newer, _ = await b.read_batches()
        await a.store_batches(older)
        assert len(stream_ids(sync_redis, stream)) == 2, "a trimmed entries b had not acknowledged"
        await b.store_batches(newer)
        assert stream_ids(sync_redis, stream) == []
    finally:
        stop(a)
        stop(b)
    assert seqs_stored(settings, "solo") == list(range(1, 13))


async def test_a_live_consumers_entries_are_claimed_only_after_claim_idle_ms(
    wallet: Wallet, settings: Settings, sync_redis: redis.Redis
) -> None:
    settings.flusher.claim_idle_ms = 1_000
    await solo_bets(wallet, 5)
    stream = wallet.keys.ledger(wallet.keys.partition("solo"))
    dead, alive = flusher_named(wallet, settings, "dead"), flusher_named(wallet, settings, "alive")
    try:
        await dead.setup()
        await dead.read_batches()  # then killed: its 6 entries stay pending to it
        await alive.claim_all()
        assert sync_redis.xpending(stream, GROUP)["consumers"] == [{"name": "dead", "pending": 6}]
        await asyncio.sleep(1.2)
        await alive.claim_all()
    finally:
        stop(dead)
        stop(alive)
    assert sync_redis.xpending(stream, GROUP)["pending"] == 0
    await drain(settings)  # nothing left for anyone
    assert seqs_stored(settings, "solo") == list(range(1, 7))


async def test_consumers_gone_with_nothing_pending_are_pruned_and_no_other(
    wallet: Wallet, settings: Settings, sync_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(consumers_module, "DEAD_CONSUMER_IDLE_MS", 300)
    await solo_bets(wallet, 3)
    stream = wallet.keys.ledger(wallet.keys.partition("solo"))
    streams = [wallet.keys.ledger(p) for p in range(wallet.keys.partitions)]
    names = ("gone", "holding", "me", "fresh")
    gone, holding, me, fresh = (flusher_named(wallet, settings, name) for name in names)

    async def store_new(flusher: Flusher) -> None:
        batches, _ = await flusher.read_batches()
        assert await flusher.store_batches(batches) > 0  # read, stored, acknowledged

    try:
        await gone.setup()
        await store_new(gone)  # then never seen again
        await solo_bets(wallet, 2)
        await holding.read_batches()  # two entries pending to it: not to be removed
        await solo_bets(wallet, 1)
        await store_new(me)  # the caller itself: kept however idle
        await asyncio.sleep(0.4)  # all three idle past the (shortened) limit
        await solo_bets(wallet, 1)
        await store_new(fresh)  # just read: alive
        assert await prune(wallet.redis, streams, GROUP, keep="me") == ["gone"]
        assert {c["name"] for c in sync_redis.xinfo_consumers(stream, GROUP)} == {"holding", "me", "fresh"}
        # The script checks again, atomically: a consumer that holds entries is never removed.
        assert await wallet.redis.eval(PRUNE_SCRIPT, 1, stream, GROUP, "holding", 0) == 0
        assert sync_redis.xpending(stream, GROUP)["consumers"] == [{"name": "holding", "pending": 2}]
    finally:
        for flusher in (gone, holding, me, fresh):
            stop(flusher)
    await drain(settings)  # holding's two, claimed (claim_idle_ms = 0 in tests)
    assert seqs_stored(settings, "solo") == list(range(1, 9))


async def test_prune_is_harmless_on_a_group_of_live_consumers(wallet: Wallet, settings: Settings) -> None:
    await solo_bets(wallet, 1)
    await drain(settings)
    streams = [wallet.keys.ledger(p) for p in range(wallet.keys.partitions)]
    assert await prune(wallet.redis, streams, GROUP, keep="nobody") == []  # idle for ms, not an hour
    client: Redis = wallet.redis
    assert await client.xinfo_consumers(wallet.keys.ledger(wallet.keys.partition("solo")), GROUP)
