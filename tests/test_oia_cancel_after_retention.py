"""A cancel's ledger entry and the record that says the id is cancelled (review of issue 9,
items 1 and 9): once the record is gone, walletd trusts the ledger store for the id; the
store must then hold the cancel too, or walletd must not decide from it."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
import redis

from app.settings import Settings
from app.wallet import Wallet
from tests.oia_calls import call, cancel, change, error_code, new_session, records_expire, redis_state
from tests.support import balance_of, drain, ledger_rows

pytestmark = pytest.mark.anyio

# Long enough that a cancel entry written 2.5 s after the booking is younger than
# the retention (minus the stream check's 1 s clock slack) when the booking's record expires.
RETENTION_S = 4


@pytest.fixture
def four_second_retention(settings: Settings) -> Settings:
    settings.oia.retention_s = RETENTION_S
    return settings


def oia_rows(settings: Settings) -> list[tuple[str, int]]:
    return [(r["kind"], r["amount_minor"]) for r in ledger_rows(settings, "source = 'oia'")]


async def status_of(client: httpx.AsyncClient, player: str, tx: int) -> str:
    answer = await call(client, "status", {"user_id": player, "transaction_id": tx})
    return answer["data"]["transaction_status"] if answer["status"] == "OK" else answer["data"]["error_code"]


async def test_a_cancel_late_in_the_retention_keeps_the_id_cancelled_until_its_entry_is_old(
    four_second_retention: Settings, client: httpx.AsyncClient, wallet: Wallet, player: str, sync_redis: redis.Redis
) -> None:
    """The record's retention counts from the cancel, not from the booking: else it expires
    while the cancel's entry is young and not flushed yet (the stream does not look behind),
    the store shows the booking uncancelled, and a retried cancel reverses it again."""
    settings = four_second_retention
    await drain(settings)
    booked_at = time.monotonic()
    assert (await call(client, "changebalance", change(player, 1, "WIN", 5)))["status"] == "OK"
    await drain(settings)  # the WIN is in the store
    await asyncio.sleep(2.5)
    assert (await call(client, "cancel", cancel(player, 1)))["data"]["transaction_status"] == "CANCELED"
    # The flusher has not run since (a normal lag of one tick is enough).
    await asyncio.sleep(booked_at + RETENTION_S + 0.3 - time.monotonic())
    # The platform did not get the cancel's reply and retries it, and the WIN.
    assert (await call(client, "cancel", cancel(player, 1)))["data"]["transaction_status"] == "CANCELED"
    assert error_code(await call(client, "changebalance", change(player, 1, "WIN", 5))) == "OP_49"
    assert await status_of(client, player, 1) == "CANCELED"
    assert await balance_of(wallet, player) == 10000
    await drain(settings)
    assert oia_rows(settings) == [("win", 500), ("cancel", -500)]


async def test_a_late_retry_or_cancel_is_not_decided_from_a_store_that_lacks_the_cancel(
    short_retention: Settings, client: httpx.AsyncClient, wallet: Wallet, player: str, sync_redis: redis.Redis
) -> None:
    """The flusher is stuck longer than the retention: the store holds the booking but not
    its cancel. Restoring the record from it as 'booked' would reverse the id twice."""
    settings = short_retention
    assert (await call(client, "changebalance", change(player, 1, "WIN", 5)))["status"] == "OK"
    await drain(settings)  # the WIN is in the store; the cancel below will not be
    assert (await call(client, "cancel", cancel(player, 1)))["data"]["transaction_status"] == "CANCELED"
    await records_expire(sync_redis, within_s=10)
    for answer in (await call(client, "cancel", cancel(player, 1)),
                   await call(client, "changebalance", change(player, 1, "WIN", 5))):
        assert error_code(answer) == "OP_50"
        assert "ledger store is behind" in answer["data"]["error_message"]
    assert sync_redis.keys("*:tx:*") == []  # nothing restored from the stale store
    assert await balance_of(wallet, player) == 10000
    await drain(settings)  # the flusher catches up: now the store is exact
    assert (await call(client, "cancel", cancel(player, 1)))["data"]["transaction_status"] == "CANCELED"
    assert error_code(await call(client, "changebalance", change(player, 1, "WIN", 5))) == "OP_49"
    assert await balance_of(wallet, player) == 10000
    await drain(settings)
    assert oia_rows(settings) == [("win", 500), ("cancel", -500)]


async def test_status_is_not_answered_from_a_store_that_may_lack_the_booking_or_its_cancel(
    short_retention: Settings, client: httpx.AsyncClient, wallet: Wallet, player: str, sync_redis: redis.Redis
) -> None:
    """A platform asks status after an OP_47: 'not found' for a BET that was booked (the
    player stays debited, nobody cancels) or 'OK' for one that was cancelled (it is settled)
    would be wrong answers it acts on. While the store may lack them: OP_50, retry later."""
    settings = short_retention
    token = await new_session(client, player)
    assert (await call(client, "changebalance", change(player, 1, "BET", 5, token=token)))["status"] == "OK"
    assert (await call(client, "changebalance", change(player, 2, "BET", 3, token=token)))["status"] == "OK"
    await drain(settings)  # BET 2 is in the store; its cancel below will not be, nor BET 3
    assert (await call(client, "cancel", cancel(player, 2)))["data"]["transaction_status"] == "CANCELED"
    assert (await call(client, "changebalance", change(player, 3, "BET", 1, token=token)))["status"] == "OK"
    await records_expire(sync_redis, within_s=10)
    before = redis_state(sync_redis)
    for tx in (2, 3):
        answer = await call(client, "status", {"user_id": player, "transaction_id": tx})
        assert error_code(answer) == "OP_50", (tx, answer["data"])
        assert "ledger store is behind" in answer["data"]["error_message"]
    assert redis_state(sync_redis) == before
    await drain(settings)
    assert await status_of(client, player, 1) == "OK"
    assert await status_of(client, player, 2) == "CANCELED"
    assert await status_of(client, player, 3) == "OK"
    assert await status_of(client, player, 4) == "OP_41"
    assert await balance_of(wallet, player) == 10000 - 500 - 100
