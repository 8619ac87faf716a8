"""Retries after the transaction record's retention (issue 9, items 1 and 9): a booked id is
never booked again while the ledger store holds it."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import httpx
import pytest
import redis

from app.keys import META_FILTER_LAYOUT, META_FILTER_SINCE, Keys
from app.protocols.oia.late_retry import CLOCK_SKEW_S, FILTER_HASHES, Horizon, offsets
from app.settings import Settings
from app.wallet import Wallet
from tests.oia_calls import call, cancel, change, error_code, new_session, now_stamp, records_expire
from tests.support import OPERATOR, balance_of, drain, ledger_rows, serving

pytestmark = pytest.mark.anyio


async def test_a_retry_of_an_id_cancelled_after_retention_is_op_49(
    short_retention: Settings, client: httpx.AsyncClient, wallet: Wallet, player: str, sync_redis: redis.Redis
) -> None:
    settings = short_retention
    await call(client, "changebalance", change(player, 1, "WIN", 5))
    await drain(settings)
    await records_expire(sync_redis)
    assert (await call(client, "cancel", cancel(player, 1)))["data"]["transaction_status"] == "CANCELED"
    assert error_code(await call(client, "changebalance", change(player, 1, "WIN", 5))) == "OP_49"
    # Other data for the cancelled id is still a duplicate id.
    assert error_code(await call(client, "changebalance", change(player, 1, "WIN", 6))) == "OP_40"
    assert await balance_of(wallet, player) == 10000
    await drain(settings)
    kinds = [(r["kind"], r["amount_minor"]) for r in ledger_rows(settings, "source = 'oia'")]
    assert kinds == [("win", 500), ("cancel", -500)]


async def test_a_record_restored_from_a_row_without_fingerprint_compares_type_and_amount(
    short_retention: Settings, client: httpx.AsyncClient, wallet: Wallet, player: str, sync_redis: redis.Redis
) -> None:
    settings = short_retention
    await call(client, "changebalance", change(player, 1, "WIN", 5))
    await drain(settings)
    db = sqlite3.connect(settings.storage_url.removeprefix("sqlite:///"))
    with db:
        db.execute("UPDATE ledger SET fp = ''")  # as if stored before fingerprints were kept
    db.close()
    await records_expire(sync_redis)
    assert (await call(client, "cancel", cancel(player, 1)))["status"] == "OK"
    assert error_code(await call(client, "changebalance", change(player, 1, "WIN", 5))) == "OP_49"
    assert error_code(await call(client, "changebalance", change(player, 1, "WIN", 7))) == "OP_40"
    assert error_code(await call(client, "changebalance", change(player, 1, "BET", 5))) == "OP_40"
    assert await balance_of(wallet, player) == 10000


# Item 1: a changebalance retried after the transaction record's retention.

DAY_S = 24 * 3600


def script_calls(sync_redis: redis.Redis) -> int:
    stats = sync_redis.info("commandstats")
    return sum(stats.get(name, {}).get("calls", 0) for name in ("cmdstat_evalsha", "cmdstat_eval"))


def oia_rows(settings: Settings) -> list[tuple[str, int]]:
    return [(r["kind"], r["amount_minor"]) for r in ledger_rows(settings, "source = 'oia'")]


def forget_filter(sync_redis: redis.Redis) -> None:
    """As if every filter generation that saw the bookings had expired."""
    keys = sync_redis.keys("*:seen:*")
    if keys:
        sync_redis.delete(*keys)


async def booked_then_expired(settings: Settings, client: httpx.AsyncClient, sync_redis: redis.Redis,
                              player: str, data: dict) -> dict:
    await drain(settings)  # the store is not behind (the player's opening entry is in it)
    first = await call(client, "changebalance", data)
    assert first["status"] == "OK"
    await drain(settings)
    await records_expire(sync_redis)
    return first


async def test_an_identical_retry_after_retention_answers_the_original_and_books_nothing(
    short_retention: Settings, client: httpx.AsyncClient, wallet: Wallet, player: str, sync_redis: redis.Redis
) -> None:
    settings = short_retention
    stamp = now_stamp()
    first = await booked_then_expired(settings, client, sync_redis, player, change(player, 1, "WIN", 5, stamp=stamp))
    await call(client, "changebalance", change(player, 2, "WIN", 1))  # the balance moves on
    # Flushed: with a 1 s retention any entry left in the stream makes the store look behind.
    await drain(settings)
    for _ in range(2):
        again = await call(client, "changebalance", change(player, 1, "WIN", 5, stamp=stamp))
        assert again["status"] == "OK"
        assert again["data"] == first["data"]  # the original answer's balance, as within retention
    assert await balance_of(wallet, player) == 10600
    await drain(settings)
    assert oia_rows(settings) == [("win", 500), ("win", 100)]


async def test_other_data_for_an_id_past_retention_is_op_40(
    short_retention: Settings, client: httpx.AsyncClient, wallet: Wallet, player: str, sync_redis: redis.Redis
) -> None:
    settings = short_retention
    token = await new_session(client, player)
    await booked_then_expired(settings, client, sync_redis, player, change(player, 1, "BET", 5, token=token))
    assert error_code(await call(client, "changebalance", change(player, 1, "BET", 6, token=token))) == "OP_40"
    assert error_code(await call(client, "changebalance", change(player, 1, "WIN", 5))) == "OP_40"
    assert await balance_of(wallet, player) == 9500
    await drain(settings)
    assert oia_rows(settings) == [("bet", -500)]


async def test_a_retry_of_an_id_cancelled_within_retention_is_op_49_after_it(
    short_retention: Settings, client: httpx.AsyncClient, wallet: Wallet, player: str, sync_redis: redis.Redis
) -> None:
    settings = short_retention
    token = await new_session(client, player)
    await call(client, "changebalance", change(player, 1, "BET", 5, token=token))
    assert (await call(client, "cancel", cancel(player, 1)))["status"] == "OK"
    await drain(settings)
    await records_expire(sync_redis)
    assert error_code(await call(client, "changebalance", change(player, 1, "BET", 5, token=token))) == "OP_49"
    assert await balance_of(wallet, player) == 10000
    await drain(settings)
    assert oia_rows(settings) == [("bet", -500), ("cancel", 500)]


async def test_a_retry_beyond_the_filter_horizon_is_decided_by_the_ledger_store(
    short_retention: Settings, client: httpx.AsyncClient, wallet: Wallet, player: str, sync_redis: redis.Redis
) -> None:
    settings = short_retention
    old = now_stamp(30 * DAY_S)  # created a month ago, retried with its original timestamp
    await booked_then_expired(settings, client, sync_redis, player, change(player, 1, "WIN", 5, stamp=old))
    forget_filter(sync_redis)
    assert (await call(client, "changebalance", change(player, 1, "WIN", 5, stamp=old)))["status"] == "OK"
    assert error_code(await call(client, "changebalance", change(player, 1, "WIN", 9, stamp=old))) == "OP_40"
    # A genuinely new id with an old timestamp is still booked, once.
    assert (await call(client, "changebalance", change(player, 2, "WIN", 1, stamp=old)))["status"] == "OK"
    assert (await call(client, "changebalance", change(player, 2, "WIN", 1, stamp=old)))["status"] == "OK"
    assert await balance_of(wallet, player) == 10600
    await drain(settings)
    assert oia_rows(settings) == [("win", 500), ("win", 100)]


@pytest.mark.parametrize("stamp", [None, "", "21.11.2026 10:00", "2026-11-21T10:00:00", "2999-01-01 00:00:00"])
async def test_a_missing_or_unusable_timestamp_counts_as_old(
    short_retention: Settings, client: httpx.AsyncClient, wallet: Wallet, player: str, sync_redis: redis.Redis,
    stamp: str | None
) -> None:
    settings = short_retention
    data = {**change(player, 1, "WIN", 5), "transaction_timestamp": stamp}
    if stamp is None:
        del data["transaction_timestamp"]
    await booked_then_expired(settings, client, sync_redis, player, data)
    forget_filter(sync_redis)
    assert (await call(client, "changebalance", data))["status"] == "OK"
    assert await balance_of(wallet, player) == 10500
    await drain(settings)
    assert oia_rows(settings) == [("win", 500)]


async def test_a_late_retry_while_the_ledger_store_is_behind_is_refused_unbooked(
    short_retention: Settings, client: httpx.AsyncClient, wallet: Wallet, player: str, sync_redis: redis.Redis
) -> None:
    settings = short_retention
    await call(client, "changebalance", change(player, 1, "WIN", 5))
    await records_expire(sync_redis)  # not flushed: the entry is only in the stream
    answer = await call(client, "changebalance", change(player, 1, "WIN", 5))
    assert error_code(answer) == "OP_50"
    assert "ledger store is behind" in answer["data"]["error_message"]
    assert await balance_of(wallet, player) == 10500
    assert sync_redis.keys("*:tx:*") == []  # nothing recorded either
    await drain(settings)
    assert (await call(client, "changebalance", change(player, 1, "WIN", 5)))["status"] == "OK"
    assert await balance_of(wallet, player) == 10500
    await drain(settings)
    assert oia_rows(settings) == [("win", 500)]


async def test_a_genuinely_new_id_costs_one_script_call(
    client: httpx.AsyncClient, wallet: Wallet, player: str, sync_redis: redis.Redis
) -> None:
    sync_redis.config_resetstat()
    for tx in range(1, 21):
        assert (await call(client, "changebalance", change(player, tx, "WIN", 1)))["status"] == "OK"
    assert script_calls(sync_redis) == 20
    assert sync_redis.keys("*:seen:*")  # remembered in the filter


async def test_the_script_sets_exactly_the_bits_python_derives_for_the_id(
    client: httpx.AsyncClient, wallet: Wallet, player: str, sync_redis: redis.Redis, settings: Settings
) -> None:
    assert (await call(client, "changebalance", change(player, 77, "WIN", 1)))["status"] == "OK"
    [key] = sync_redis.keys("*:seen:*")
    raw = redis.Redis.from_url(settings.redis.url).get(key)
    assert raw is not None
    set_bits = {i * 8 + j for i, byte in enumerate(raw) for j in range(8) if byte & (0x80 >> j)}
    assert 0 < sync_redis.pttl(key)  # the generation's key expires
    assert set_bits == set(offsets(OPERATOR, player, 77, settings.oia.filter_bits))


@pytest.fixture
def tiny_filter(settings: Settings) -> Settings:
    settings.oia.filter_bits = 1  # one word of 32 bits for every id
    return settings


async def test_a_filter_false_positive_still_books_a_new_id_exactly_once(
    tiny_filter: Settings, client: httpx.AsyncClient, wallet: Wallet, player: str, sync_redis: redis.Redis
) -> None:
    settings = tiny_filter
    await call(client, "changebalance", change(player, 1, "WIN", 1))
    [key] = sync_redis.keys("*:seen:*")  # one 32-bit word: saturate it, every id is a possible retry
    sync_redis.set(key, b"\xff\xff\xff\xff")
    sync_redis.config_resetstat()
    answers = await asyncio.gather(*[call(client, "changebalance", change(player, 2, "WIN", 5)) for _ in range(4)])
    assert {a["status"] for a in answers} == {"OK"}
    assert len({str(a["data"]) for a in answers}) == 1
    assert script_calls(sync_redis) >= 8  # each asked the ledger store, then the script again
    assert await balance_of(wallet, player) == 10600
    await drain(settings)
    assert oia_rows(settings) == [("win", 100), ("win", 500)]


async def test_concurrent_late_retries_book_nothing(
    short_retention: Settings, client: httpx.AsyncClient, wallet: Wallet, player: str, sync_redis: redis.Redis
) -> None:
    settings = short_retention
    stamp = now_stamp()
    await booked_then_expired(settings, client, sync_redis, player, change(player, 1, "WIN", 5, stamp=stamp))
    answers = await asyncio.gather(*[call(client, "changebalance", change(player, 1, "WIN", 5, stamp=stamp))
                                     for _ in range(6)])
    assert {a["status"] for a in answers} == {"OK"}
    assert await balance_of(wallet, player) == 10500


async def test_bookings_made_before_the_filter_existed_are_looked_up_in_the_store(
    short_retention: Settings, wallet: Wallet, player: str, sync_redis: redis.Redis
) -> None:
    settings = short_retention
    stamp = now_stamp()
    async with serving(settings) as client:
        await booked_then_expired(settings, client, sync_redis, player, change(player, 1, "WIN", 5, stamp=stamp))
    # What a walletd without the filter left: no bits and no filter fields in the meta hash.
    forget_filter(sync_redis)
    sync_redis.hdel(Keys.meta(), META_FILTER_SINCE, META_FILTER_LAYOUT)
    async with serving(settings) as client:
        assert int(sync_redis.hget(Keys.meta(), META_FILTER_SINCE)) >= time.time() - 60
        assert (await call(client, "changebalance", change(player, 1, "WIN", 5, stamp=stamp)))["status"] == "OK"
    assert await balance_of(wallet, player) == 10500


async def test_a_new_redis_has_every_booking_in_the_filter(client: httpx.AsyncClient,
                                                            sync_redis: redis.Redis) -> None:
    assert sync_redis.hget(Keys.meta(), META_FILTER_SINCE) == "0"


def test_horizon_bounds() -> None:
    horizon = Horizon(7 * DAY_S)
    now = time.time()
    assert not horizon.young(now_stamp(), now)  # since unknown (not started): nothing is young
    horizon.start(0)
    assert horizon.young(now_stamp(), now)
    assert horizon.young(now_stamp(7 * DAY_S - CLOCK_SKEW_S - 5), now)
    assert not horizon.young(now_stamp(7 * DAY_S - CLOCK_SKEW_S + 5), now)
    assert horizon.young(now_stamp(-CLOCK_SKEW_S + 5), now)
    assert not horizon.young(now_stamp(-CLOCK_SKEW_S - 5), now)  # from the future
    for bad in (None, "", "2026-11-21", "2026-11-21 10:00:00Z", " 2026-11-21 10:00:00", "2026-13-01 00:00:00"):
        assert not horizon.young(bad, now)
    horizon.start(int(now) - 10)  # the filter started 10 s ago: older bookings left no bits
    assert not horizon.young(now_stamp(), now)
    assert horizon.generation(now) - horizon.generation(now - 7 * DAY_S) == 1


def test_filter_bits_of_an_id_are_in_one_word_and_in_range() -> None:
    bits = offsets("op", "611", 1, 2**23)
    assert 1 <= len(bits) <= FILTER_HASHES and all(0 <= b < 2**23 for b in bits)
    assert len({b // 32 for b in bits}) == 1  # one 32-bit word
    assert bits == offsets("op", "611", 1, 2**23)
    assert {tuple(offsets("op", "611", tx, 2**23)) for tx in range(200)}.__len__() == 200
    assert bits != offsets("op2", "611", 1, 2**23)
    assert all(b < 32 for b in offsets("op", "611", 1, 1))  # a filter smaller than a word is one word


async def test_a_store_that_cannot_be_read_refuses_a_possible_late_retry_unbooked(
    settings: Settings, tmp_path: Path, wallet: Wallet, player: str, sync_redis: redis.Redis
) -> None:
    (tmp_path / "not-a-dir").write_text("")
    settings.storage.url = f"sqlite:///{tmp_path / 'not-a-dir' / 'ledger.db'}"
    # A Redis walletd has served before: its filter's since-time is decided. (On a new
    # Redis an unreadable store counts as holding bookings: tests/test_oia_filter_since.py.)
    layout = f"{settings.oia.filter_generation_s}:{settings.oia.filter_bits}"
    sync_redis.hset(Keys.meta(), mapping={META_FILTER_SINCE: 0, META_FILTER_LAYOUT: layout})
    async with serving(settings) as client:
        answer = await call(client, "changebalance", change(player, 1, "WIN", 5, stamp=now_stamp(30 * DAY_S)))
        assert error_code(answer) == "OP_50"
        assert "ledger store cannot be read" in answer["data"]["error_message"]
        # A current id needs no store: it is booked.
        assert (await call(client, "changebalance", change(player, 2, "WIN", 1)))["status"] == "OK"
    assert await balance_of(wallet, player) == 10100
    assert len(sync_redis.keys("*:tx:*")) == 1


async def test_a_cancel_after_retention_while_the_store_is_behind_is_refused_without_a_tombstone(
    short_retention: Settings, client: httpx.AsyncClient, wallet: Wallet, player: str, sync_redis: redis.Redis
) -> None:
    settings = short_retention
    await call(client, "changebalance", change(player, 1, "WIN", 5))
    await records_expire(sync_redis)  # not flushed: the booking is only in the stream
    answer = await call(client, "cancel", cancel(player, 1))
    assert error_code(answer) == "OP_50"
    assert "ledger store is behind" in answer["data"]["error_message"]
    assert sync_redis.keys("*:tx:*") == []  # no tombstone: the booking is not denied
    assert await balance_of(wallet, player) == 10500
    await drain(settings)
    assert (await call(client, "cancel", cancel(player, 1)))["data"]["transaction_status"] == "CANCELED"
    assert await balance_of(wallet, player) == 10000
