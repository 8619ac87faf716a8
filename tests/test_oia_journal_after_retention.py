"""Recorded refusals and cancel tombstones after their transaction records expired (issue 11,
section 2): walletd finds them as journal entries in the ledger store and answers as it did
within the retention, never books a refused or tombstoned id, and never writes a second entry
of one kind for one (operator, player, ref) (the PostgreSQL store's unique index on OIA
bookings would otherwise stop the flusher)."""

from __future__ import annotations

import collections

import httpx
import pytest
import redis

from app.settings import Settings
from app.wallet import Wallet
from tests.oia_calls import call, cancel, change, error_code, new_session, now_stamp, records_expire, redis_state
from tests.support import balance_of, drain, ledger_rows

pytestmark = pytest.mark.anyio

MONTH_S = 30 * 24 * 3600  # a transaction_timestamp beyond the late-retry filter's horizon


def oia_rows(settings: Settings) -> list[tuple[str, int, str, str]]:
    return [(r["kind"], r["amount_minor"], r["ref"].split("|")[1], r["code"])
            for r in ledger_rows(settings, "source = 'oia'")]


def assert_no_kind_twice(settings: Settings) -> None:
    """The PostgreSQL store's unique (operator, player, ref, kind), over every OIA kind."""
    counts = collections.Counter((r["operator"], r["player_id"], r["ref"], r["kind"])
                                 for r in ledger_rows(settings, "source = 'oia'"))
    assert [key for key, n in counts.items() if n > 1] == []


async def expire(settings: Settings, sync_redis: redis.Redis) -> None:
    """Everything flushed, then every transaction record gone (the retention passed)."""
    await drain(settings)
    await records_expire(sync_redis)


async def code_of(client: httpx.AsyncClient, command: str, data: dict) -> str:
    answer = await call(client, command, data)
    return error_code(answer) or answer["data"].get("transaction_status", "OK")


async def status_of(client: httpx.AsyncClient, player: str, tx: int) -> str:
    return await code_of(client, "status", {"user_id": player, "transaction_id": tx})


@pytest.mark.parametrize("age_s", [0, MONTH_S], ids=["filter", "timestamp"])
async def test_a_tombstone_in_the_store_refuses_a_late_booking_and_is_not_written_twice(
    short_retention: Settings, client: httpx.AsyncClient, wallet: Wallet, player: str, sync_redis: redis.Redis,
    age_s: int,
) -> None:
    settings = short_retention
    token = await new_session(client, player)
    late = change(player, 7, "BET", 5, token=token, stamp=now_stamp(age_s))
    await drain(settings)
    assert await code_of(client, "cancel", cancel(player, 7)) == "OP_41"  # the tombstone
    await expire(settings, sync_redis)
    assert await status_of(client, player, 7) == "OP_41"
    assert await code_of(client, "cancel", cancel(player, 7)) == "OP_41"  # the store's tombstone, restored
    await expire(settings, sync_redis)
    assert await code_of(client, "changebalance", late) == "OP_49"  # the late BET: never booked
    assert await code_of(client, "changebalance", late) == "OP_49"
    await expire(settings, sync_redis)
    # Now the store holds the tombstone and the refusal it caused: the refusal is the id's answer.
    assert await code_of(client, "changebalance", late) == "OP_49"
    assert await code_of(client, "changebalance", {**late, "amount": 6}) == "OP_40"
    assert await status_of(client, player, 7) == "ERROR"
    assert await balance_of(wallet, player) == 10000
    await drain(settings)
    assert oia_rows(settings) == [("tombstone", 0, "7", ""), ("refusal", 0, "7", "OP_49")]
    assert_no_kind_twice(settings)


@pytest.mark.parametrize("age_s", [0, MONTH_S], ids=["filter", "timestamp"])
async def test_a_refusal_in_the_store_answers_a_retry_the_same_and_never_books_it(
    short_retention: Settings, client: httpx.AsyncClient, wallet: Wallet, player: str, sync_redis: redis.Redis,
    age_s: int,
) -> None:
    settings = short_retention
    token = await new_session(client, player)
    stale = change(player, 3, "BET", 5, token="expired", stamp=now_stamp(age_s))
    await drain(settings)
    assert await code_of(client, "changebalance", stale) == "OP_21"
    await expire(settings, sync_redis)
    # The retry now carries a live token (the fingerprint does not cover it): it would be
    # booked if decided afresh; the recorded refusal answers instead.
    retry = {**stale, "token": token}
    assert await code_of(client, "changebalance", retry) == "OP_21"
    await expire(settings, sync_redis)
    assert await code_of(client, "changebalance", {**retry, "amount": 4}) == "OP_40"  # other data
    assert await code_of(client, "changebalance", retry) == "OP_21"
    assert await status_of(client, player, 3) == "ERROR"
    await expire(settings, sync_redis)
    assert await status_of(client, player, 3) == "ERROR"
    assert await balance_of(wallet, player) == 10000
    await drain(settings)
    assert oia_rows(settings) == [("refusal", 0, "3", "OP_21")]
    assert_no_kind_twice(settings)


async def test_a_cancel_of_a_refusal_in_the_store_answers_as_today_and_cancels_once(
    short_retention: Settings, client: httpx.AsyncClient, wallet: Wallet, player: str, sync_redis: redis.Redis
) -> None:
    settings = short_retention
    token = await new_session(client, player)
    big = change(player, 4, "BET", 150, token=token)
    await drain(settings)
    assert await code_of(client, "changebalance", big) == "OP_31"
    await expire(settings, sync_redis)
    assert await code_of(client, "cancel", cancel(player, 4)) == "CANCELED"  # writes the amount-0 cancel
    assert await code_of(client, "cancel", cancel(player, 4)) == "CANCELED"
    await expire(settings, sync_redis)
    assert await status_of(client, player, 4) == "CANCELED"
    assert await code_of(client, "cancel", cancel(player, 4)) == "CANCELED"  # restored, not cancelled again
    assert await code_of(client, "changebalance", big) == "OP_49"
    await expire(settings, sync_redis)
    assert await code_of(client, "changebalance", big) == "OP_49"
    assert await code_of(client, "changebalance", {**big, "amount": 1}) == "OP_40"
    assert await balance_of(wallet, player) == 10000
    await drain(settings)
    assert oia_rows(settings) == [("refusal", 0, "4", "OP_31"), ("cancel", 0, "4", "")]
    assert_no_kind_twice(settings)


async def test_a_cancel_of_a_refusal_within_the_retention_writes_one_cancel(
    client: httpx.AsyncClient, wallet: Wallet, player: str, settings: Settings
) -> None:
    token = await new_session(client, player)
    assert await code_of(client, "changebalance", change(player, 5, "BET", 150, token=token)) == "OP_31"
    for _ in range(2):
        assert await code_of(client, "cancel", cancel(player, 5)) == "CANCELED"
    assert await code_of(client, "changebalance", change(player, 6, "WIN", 1.5)) == "OK"
    for _ in range(2):
        assert await code_of(client, "cancel", cancel(player, 6)) == "CANCELED"
    await drain(settings)
    assert oia_rows(settings) == [("refusal", 0, "5", "OP_31"), ("cancel", 0, "5", ""),
                                  ("win", 150, "6", ""), ("cancel", -150, "6", "")]
    assert_no_kind_twice(settings)


async def test_a_refused_unknown_player_is_recorded_and_its_cancel_opens_nobody(
    short_retention: Settings, client: httpx.AsyncClient, wallet: Wallet, sync_redis: redis.Redis
) -> None:
    """A refusal may name a player that does not exist (OP_34); cancelling it must not write a
    money entry for them, or the store's sums would hold a player Redis does not: OP_34, as
    every command for a player that does not exist, and nothing written."""
    settings = short_retention
    await drain(settings)
    assert await code_of(client, "changebalance", change("ghost", 9, "WIN", 1)) == "OP_34"
    before = redis_state(sync_redis)
    assert await code_of(client, "cancel", cancel("ghost", 9)) == "OP_34"
    assert redis_state(sync_redis) == before
    await expire(settings, sync_redis)
    assert await code_of(client, "cancel", cancel("ghost", 9)) == "OP_34"  # restored from the store
    assert await code_of(client, "changebalance", change("ghost", 9, "WIN", 1)) == "OP_34"
    assert await code_of(client, "changebalance", change("ghost", 9, "WIN", 2)) == "OP_40"
    await drain(settings)
    rows = ledger_rows(settings, "source = 'oia'")
    assert [(r["player_id"], r["kind"], r["code"]) for r in rows] == [("ghost", "refusal", "OP_34")]
    assert wallet.keys.partition("ghost") >= 0 and await wallet.account("ghost") is None


@pytest.fixture
def small_backlog(settings: Settings) -> Settings:
    settings.oia.retention_s = 4  # the stream's fresh entries below are younger: the store is not behind
    settings.wallet.backlog_max = 2
    return settings


async def test_a_full_stream_refuses_what_the_store_would_restore_with_nothing_written(
    small_backlog: Settings, client: httpx.AsyncClient, wallet: Wallet, player: str, sync_redis: redis.Redis
) -> None:
    """A cancel that would reverse a stored booking, and a late booking of a stored tombstone
    (which records its OP_49), meet a full stream: OP_50, and not even the record restored."""
    settings = small_backlog
    await drain(settings)
    assert await code_of(client, "changebalance", change(player, 1, "WIN", 5)) == "OK"
    assert await code_of(client, "cancel", cancel(player, 2)) == "OP_41"
    await drain(settings)
    await records_expire(sync_redis, within_s=8)
    for ref in ("fill-1", "fill-2"):  # the same partition's stream, now full
        assert (await wallet.adjust(player, "deposit", 1, ref)).code == "OK"
    before = redis_state(sync_redis)
    for command, data in (("cancel", cancel(player, 1)), ("changebalance", change(player, 2, "WIN", 5))):
        answer = await call(client, command, data)
        assert error_code(answer) == "OP_50" and "backlog" in answer["data"]["error_message"], answer["data"]
    assert redis_state(sync_redis) == before
    await drain(settings)
    assert await code_of(client, "cancel", cancel(player, 1)) == "CANCELED"
    assert await code_of(client, "changebalance", change(player, 2, "WIN", 5)) == "OP_49"
    assert await balance_of(wallet, player) == 10002
    await drain(settings)
    assert oia_rows(settings) == [("win", 500, "1", ""), ("tombstone", 0, "2", ""), ("cancel", -500, "1", ""),
                                  ("refusal", 0, "2", "OP_49")]
    assert_no_kind_twice(settings)
