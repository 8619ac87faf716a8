"""lua/lib/book.lua: every script that moves money books through book(), which refuses
BACKLOG (the partition's ledger stream is full) and OVERFLOW (a balance would leave
(-2^53, 2^53)) before its first write. Each money-moving command, refused either way,
leaves Redis exactly as it was."""

from __future__ import annotations

import httpx
import pytest
import redis

from app.protocols.stargame.wallet import book as stargame_book
from app.settings import Settings
from app.wallet import Wallet
from tests.oia_calls import call, cancel, change, error_code, new_session, redis_state
from tests.support import OPERATOR, balance_of

pytestmark = pytest.mark.anyio

LIMIT = 2**53


@pytest.fixture
def backlog_of_two(settings: Settings) -> Settings:
    """Room for the player's opening entry and one booking."""
    settings.wallet.backlog_max = 2
    return settings


async def test_a_full_backlog_refuses_every_booking_with_nothing_written(
        backlog_of_two: Settings, client: httpx.AsyncClient, wallet: Wallet, player: str,
        sync_redis: redis.Redis) -> None:
    token = await new_session(client, player)
    assert (await call(client, "changebalance", change(player, 1, "BET", 1.00, token=token)))["status"] == "OK"
    before = redis_state(sync_redis)

    refused = await call(client, "changebalance", change(player, 2, "BET", 1.00, token=token))
    assert error_code(refused) == "OP_50" and "backlog" in refused["data"]["error_message"]
    assert error_code(await call(client, "cancel", cancel(player, 1))) == "OP_50"
    assert (await stargame_book(wallet, player, 100, 50, 0)).code == "BACKLOG"
    assert (await wallet.adjust(player, "deposit", 100, "d1")).code == "BACKLOG"
    # Decisions that move nothing but would be journaled (RECORD.md) are refused alike and
    # recorded nowhere: a refusal, a tombstone, a round finished.
    assert error_code(await call(client, "changebalance", change(player, 3, "BET", 1.00, token="no"))) == "OP_50"
    assert error_code(await call(client, "cancel", cancel(player, 5))) == "OP_50"
    finish = {"user_id": player, "round_id": 1, "game_id": 200}
    assert error_code(await call(client, "finishround", finish)) == "OP_50"

    assert redis_state(sync_redis) == before
    assert await balance_of(wallet, player) == 9900


async def test_overflow_refuses_every_booking_with_nothing_written(
        client: httpx.AsyncClient, wallet: Wallet, sync_redis: redis.Redis) -> None:
    await wallet.create_player("whale", "EUR", LIMIT - 1000, "", "en", "", [], operator_id=OPERATOR)
    token = await new_session(client, "whale")
    assert (await call(client, "changebalance", change("whale", 1, "BET", 1.00, token=token)))["status"] == "OK"
    # Back to 2^53 - 1: cancelling the BET would credit 100 past the limit.
    assert (await call(client, "changebalance", change("whale", 2, "WIN", 10.99)))["status"] == "OK"
    assert await balance_of(wallet, "whale") == LIMIT - 1
    before = redis_state(sync_redis)

    refused = await call(client, "changebalance", change("whale", 3, "WIN", 0.01))
    assert error_code(refused) == "OP_50" and "range" in refused["data"]["error_message"]
    assert error_code(await call(client, "cancel", cancel("whale", 1))) == "OP_50"
    assert (await stargame_book(wallet, "whale", 0, 1, 0)).code == "OVERFLOW"
    assert (await stargame_book(wallet, "whale", 1, 2, 0)).code == "OVERFLOW"  # the net counts
    assert (await wallet.adjust("whale", "deposit", 1, "d1")).code == "OVERFLOW"

    assert redis_state(sync_redis) == before
    assert await balance_of(wallet, "whale") == LIMIT - 1


async def test_a_booking_within_the_limits_still_books(client: httpx.AsyncClient, wallet: Wallet,
                                                       sync_redis: redis.Redis) -> None:
    """The refusals above are book()'s, not a script that no longer books."""
    await wallet.create_player("whale", "EUR", LIMIT - 1000, "", "en", "", [], operator_id=OPERATOR)
    assert (await stargame_book(wallet, "whale", 1, 1000, 0)).code == "OK"
    assert (await wallet.adjust("whale", "withdraw", 1, "w1")).code == "OK"
    assert await balance_of(wallet, "whale") == LIMIT - 2
    ledger = sync_redis.xrange(next(k for k in sync_redis.keys("*") if sync_redis.type(k) == "stream"))
    assert [(e[1]["kind"], e[1]["amount"], e[1]["balance"]) for e in ledger] == [
        ("open", str(LIMIT - 1000), str(LIMIT - 1000)), ("bet", "-1", str(LIMIT - 1001)),
        ("win", "1000", str(LIMIT - 1)), ("withdraw", "-1", str(LIMIT - 2))]
