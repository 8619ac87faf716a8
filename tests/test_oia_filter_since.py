"""The late-retry filter's since-time (README "Late retries", issue 9 item 1) when Redis
is new but the ledger store is not: the store is the copy that survives losing Redis's
disk, and the bookings it holds left no bits in the new Redis."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from app.keys import META_FILTER_SINCE, Keys
from app.settings import Settings
from app.wallet import Wallet
from tests.oia_calls import call, change, now_stamp
from tests.support import OPERATOR, balance_of, drain, ledger_rows, serving

pytestmark = pytest.mark.anyio


async def test_a_new_redis_next_to_a_ledger_store_with_bookings_does_not_trust_its_empty_filter(
    settings: Settings, wallet: Wallet, sync_redis: redis.Redis
) -> None:
    stamp = now_stamp()
    await wallet.create_player("611", "EUR", 10000, "DE", "en", "", [], operator_id=OPERATOR)
    async with serving(settings) as client:
        assert (await call(client, "changebalance", change("611", 1, "WIN", 5, stamp=stamp)))["status"] == "OK"
    await drain(settings)
    # Redis's data is lost (its disk); the ledger store is kept. The operator brings up a
    # new Redis and re-creates the player.
    sync_redis.flushall()
    await wallet.start()
    await wallet.create_player("611", "EUR", 10500, "DE", "en", "", [], operator_id=OPERATOR)
    # Its ledger counters are set to the store's (else walletd refuses to serve it at all:
    # tests/test_cold_start.py); its filter holds no bits of the old bookings.
    seq = wallet.keys.seq(wallet.keys.partition("611"))
    sync_redis.set(seq, max(int(sync_redis.get(seq)), *(row["seq"] for row in ledger_rows(settings))))
    async with serving(settings) as client:
        assert int(sync_redis.hget(Keys.meta(), META_FILTER_SINCE)) >= time.time() - 60
        # The platform retries the WIN (its original timestamp, minutes old): it was booked.
        retry = await call(client, "changebalance", change("611", 1, "WIN", 5, stamp=stamp))
        assert retry["status"] == "OK"
        # A new transaction is still booked.
        assert (await call(client, "changebalance", change("611", 2, "WIN", 1)))["status"] == "OK"
    assert await balance_of(wallet, "611") == 10600
    # The retry wrote no ledger entry in the new Redis (whose entries the flusher will not
    # store over the old ones: tests/test_redis_lost.py).
    stream = wallet.keys.ledger(wallet.keys.partition("611"))
    wins = [fields["ref"] for _, fields in sync_redis.xrange(stream) if fields["kind"] == "win"]
    assert wins == [f"{OPERATOR}|2"]


async def test_a_new_redis_next_to_an_empty_ledger_store_keeps_every_booking_in_the_filter(
    settings: Settings, wallet: Wallet, sync_redis: redis.Redis
) -> None:
    async with serving(settings):
        assert sync_redis.hget(Keys.meta(), META_FILTER_SINCE) == "0"


async def test_a_new_redis_next_to_an_unreadable_ledger_store_does_not_trust_its_empty_filter(
    settings: Settings, tmp_path: Path, wallet: Wallet, sync_redis: redis.Redis
) -> None:
    (tmp_path / "not-a-dir").write_text("")
    settings.storage.url = f"sqlite:///{tmp_path / 'not-a-dir' / 'ledger.db'}"
    async with serving(settings):
        assert int(sync_redis.hget(Keys.meta(), META_FILTER_SINCE)) >= time.time() - 60
