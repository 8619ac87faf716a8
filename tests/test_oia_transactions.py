"""OIA idempotency, cancel, status, finishround, deadlines and the ledger-store fallback."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import redis

from app.settings import Settings
from app.wallet import Wallet
from tests.oia_calls import call, change, error_code, new_session, records_expire
from tests.support import BUSY_LUA, OTHER_OPERATOR, OTHER_SECRET, balance_of, drain, ledger_rows

pytestmark = pytest.mark.anyio


def cancel(player: str, tx: int, round_id: int = 1, finished: bool | None = None) -> dict:
    return {"user_id": player, "transaction_id": tx, "round_id": round_id, "round_finished": finished,
            "game_id": 200}


def status(player: str, tx: int) -> dict:
    return {"user_id": player, "transaction_id": tx, "transaction_type": "BET",
            "transaction_date": "2026-11-21", "transaction_ts": "1795000000000", "round_id": 1}


async def tx_status(client: httpx.AsyncClient, player: str, tx: int) -> str:
    answer = await call(client, "status", status(player, tx))
    return answer["data"]["transaction_status"] if answer["status"] == "OK" else answer["data"]["error_code"]


async def test_retries_of_bet_win_refund_return_the_original_answer(
    client: httpx.AsyncClient, wallet: Wallet, player: str, settings: Settings
) -> None:
    token = await new_session(client, player)
    first = {}
    for tx, kind in ((1, "BET"), (2, "WIN"), (3, "REFUND")):
        first[tx] = await call(client, "changebalance", change(player, tx, kind, 5, token=token))
        assert first[tx]["status"] == "OK"
    for tx, kind in ((1, "BET"), (2, "WIN"), (3, "REFUND")):
        again = await call(client, "changebalance", change(player, tx, kind, 5, token=token))
        assert again["data"] == first[tx]["data"]  # the balance of the original answer
    assert await balance_of(wallet, player) == 10500
    await drain(settings)
    assert len(ledger_rows(settings, "source = 'oia'")) == 3


async def test_a_bet_retried_after_its_session_expired_still_gets_its_original_answer(
    client: httpx.AsyncClient, wallet: Wallet, player: str, sync_redis: redis.Redis
) -> None:
    token = await new_session(client, player)
    first = await call(client, "changebalance", change(player, 1, "BET", 5, token=token))
    sync_redis.delete(*sync_redis.keys("*:sess:*"))
    assert (await call(client, "changebalance", change(player, 1, "BET", 5, token=token)))["data"] == first["data"]


@pytest.mark.parametrize(
    "changed",
    [{"amount": 6}, {"transaction_type": "WIN"}, {"round_id": 2}, {"game_id": 201}, {"currency_code": "USD"}],
)
async def test_same_id_with_other_data_is_op_40(client: httpx.AsyncClient, wallet: Wallet, player: str,
                                                changed: dict) -> None:
    token = await new_session(client, player, lobby="lobby")
    await call(client, "changebalance", change(player, 1, "BET", 5, token=token))
    answer = await call(client, "changebalance", {**change(player, 1, "BET", 5, token=token), **changed})
    assert error_code(answer) == "OP_40"
    assert await balance_of(wallet, player) == 9500


async def test_business_refusals_are_recorded(client: httpx.AsyncClient, wallet: Wallet, player: str) -> None:
    token = await new_session(client, player)
    assert error_code(await call(client, "changebalance", change(player, 1, "BET", 150, token=token))) == "OP_31"
    await wallet.adjust(player, "deposit", 10000, "top-up")
    # Enough money now, but the id was refused: a retry gets the same refusal.
    assert error_code(await call(client, "changebalance", change(player, 1, "BET", 150, token=token))) == "OP_31"
    assert await tx_status(client, player, 1) == "ERROR"
    assert await balance_of(wallet, player) == 20000


async def test_cancel_bet_credits_back_once(client: httpx.AsyncClient, wallet: Wallet, player: str,
                                            settings: Settings) -> None:
    token = await new_session(client, player)
    await call(client, "changebalance", change(player, 1, "BET", 40, token=token))
    for _ in range(3):
        answer = await call(client, "cancel", cancel(player, 1))
        assert answer["data"] == {"user_id": player, "transaction_id": 1, "transaction_status": "CANCELED"}
        assert await balance_of(wallet, player) == 10000
    assert await tx_status(client, player, 1) == "CANCELED"
    # The platform retrying the cancelled BET gets no money and no second booking.
    assert error_code(await call(client, "changebalance", change(player, 1, "BET", 40, token=token))) == "OP_49"
    await drain(settings)
    kinds = [(r["kind"], r["amount_minor"]) for r in ledger_rows(settings, "source = 'oia'")]
    assert kinds == [("bet", -4000), ("cancel", 4000)]


async def test_cancel_of_a_win_may_take_the_balance_negative(client: httpx.AsyncClient, wallet: Wallet,
                                                             player: str) -> None:
    token = await new_session(client, player)
    await call(client, "changebalance", change(player, 1, "WIN", 50, token=None))
    await call(client, "changebalance", change(player, 2, "BET", 120, token=token, round_id=2))
    assert await balance_of(wallet, player) == 3000
    assert (await call(client, "cancel", cancel(player, 1)))["status"] == "OK"
    assert await balance_of(wallet, player) == -2000
    # A negative balance shows as such, and bets are refused for funds.
    answer = await call(client, "balance", {"token": token, "user_id": player, "currency_code": "EUR"})
    assert answer["data"]["balance"] == -20.0
    assert error_code(await call(client, "changebalance", change(player, 3, "BET", 1, token=token))) == "OP_31"


async def test_cancel_of_a_refused_transaction_moves_nothing(client: httpx.AsyncClient, wallet: Wallet,
                                                              player: str) -> None:
    token = await new_session(client, player)
    await call(client, "changebalance", change(player, 1, "BET", 500, token=token))
    assert (await call(client, "cancel", cancel(player, 1)))["data"]["transaction_status"] == "CANCELED"
    assert await tx_status(client, player, 1) == "CANCELED"
    assert await balance_of(wallet, player) == 10000


async def test_cancel_before_bet_leaves_a_tombstone(client: httpx.AsyncClient, wallet: Wallet, player: str,
                                                    settings: Settings) -> None:
    token = await new_session(client, player)
    assert error_code(await call(client, "cancel", cancel(player, 7))) == "OP_41"
    assert error_code(await call(client, "cancel", cancel(player, 7))) == "OP_41"
    assert await tx_status(client, player, 7) == "OP_41"
    late = await call(client, "changebalance", change(player, 7, "BET", 10, token=token))
    assert error_code(late) == "OP_49"
    assert error_code(await call(client, "changebalance", change(player, 7, "BET", 10, token=token))) == "OP_49"
    assert await balance_of(wallet, player) == 10000
    await drain(settings)
    # No money moved; the store holds the tombstone and the one refusal it caused (RECORD.md).
    rows = [(r["kind"], r["amount_minor"], r["code"]) for r in ledger_rows(settings, "source = 'oia'")]
    assert rows == [("tombstone", 0, ""), ("refusal", 0, "OP_49")]


async def test_cancel_status_finishround_for_an_unknown_player_are_op_34(client: httpx.AsyncClient) -> None:
    assert error_code(await call(client, "cancel", cancel("ghost", 1))) == "OP_34"
    assert error_code(await call(client, "status", status("ghost", 1))) == "OP_34"
    assert error_code(await call(client, "finishround", {"user_id": "ghost", "round_id": 1, "game_id": 1})) == "OP_34"


async def test_status_of_each_state(client: httpx.AsyncClient, player: str) -> None:
    token = await new_session(client, player)
    await call(client, "changebalance", change(player, 1, "BET", 1, token=token))
    await call(client, "changebalance", change(player, 2, "BET", 1000, token=token))
    await call(client, "changebalance", change(player, 3, "BET", 1, token=token))
    await call(client, "cancel", cancel(player, 3))
    answer = await call(client, "status", status(player, 1))
    assert answer["data"] == {"user_id": player, "transaction_id": 1, "transaction_status": "OK"}
    assert await tx_status(client, player, 2) == "ERROR"
    assert await tx_status(client, player, 3) == "CANCELED"
    assert await tx_status(client, player, 4) == "OP_41"


async def test_transaction_ids_are_namespaced_per_operator(client: httpx.AsyncClient, wallet: Wallet,
                                                           player: str) -> None:
    await wallet.create_player("612", "EUR", 500, "", "en", "", [], operator_id=OTHER_OPERATOR)
    await call(client, "changebalance", change(player, 1, "WIN", 1))
    answer = await call(client, "changebalance", change("612", 1, "WIN", 1), secret=OTHER_SECRET,
                        operator=OTHER_OPERATOR)
    assert answer["status"] == "OK"
    assert await balance_of(wallet, player) == 10100
    assert await balance_of(wallet, "612") == 600


async def test_finishround(client: httpx.AsyncClient, player: str, sync_redis: redis.Redis) -> None:
    data = {"round_id": 55, "user_id": player, "game_id": 200, "round_date": "2026-11-21", "round_ts": "1"}
    assert error_code(await call(client, "finishround", data)) == "OP_41"
    await call(client, "changebalance", change(player, 1, "WIN", 1, round_id=55))
    (round_key,) = sync_redis.keys("*:round:*|55")
    assert sync_redis.hget(round_key, "fin") == "0"
    for _ in range(2):
        answer = await call(client, "finishround", data)
        assert answer["data"] == {"round_id": 55, "user_id": player, "game_id": 200}
    assert sync_redis.hget(round_key, "fin") == "1"


async def test_round_finished_is_honoured_by_changebalance_and_cancel(client: httpx.AsyncClient, player: str,
                                                                       sync_redis: redis.Redis) -> None:
    await call(client, "changebalance", change(player, 1, "WIN", 1, round_id=8, finished=True))
    assert sync_redis.hget(next(iter(sync_redis.keys("*:round:*|8"))), "fin") == "1"
    await call(client, "changebalance", change(player, 2, "WIN", 1, round_id=9, finished=None))
    await call(client, "cancel", cancel(player, 2, round_id=9, finished=True))
    assert sync_redis.hget(next(iter(sync_redis.keys("*:round:*|9"))), "fin") == "1"


async def test_a_booking_past_its_deadline_is_op_47_and_moves_nothing(
    settings: Settings, client: httpx.AsyncClient, wallet: Wallet, player: str, sync_redis: redis.Redis
) -> None:
    settings.oia.budget_ms = 100  # read per request
    token = await new_session(client, player)
    # Redis is busy for 300 ms: the booking reaches its script after the deadline.
    blocker = asyncio.create_task(asyncio.to_thread(sync_redis.eval, BUSY_LUA, 0, 300_000))
    await asyncio.sleep(0.05)
    answer = await call(client, "changebalance", change(player, 1, "BET", 5, token=token))
    await blocker
    assert error_code(answer) == "OP_47"
    assert await balance_of(wallet, player) == 10000
    # The platform cancels a BET answered OP_47: nothing was booked, so nothing to give back.
    assert error_code(await call(client, "cancel", cancel(player, 1))) == "OP_41"
    assert await balance_of(wallet, player) == 10000


async def test_records_past_retention_fall_back_to_the_ledger_store(
    short_retention: Settings, client: httpx.AsyncClient, wallet: Wallet, player: str, sync_redis: redis.Redis
) -> None:
    settings = short_retention
    await call(client, "changebalance", change(player, 1, "WIN", 5))
    await call(client, "changebalance", change(player, 2, "WIN", 7))
    await call(client, "cancel", cancel(player, 2))
    await drain(settings)
    await records_expire(sync_redis)  # expired in Redis
    assert await tx_status(client, player, 1) == "OK"
    assert await tx_status(client, player, 2) == "CANCELED"
    assert await balance_of(wallet, player) == 10500
    assert (await call(client, "cancel", cancel(player, 1)))["data"]["transaction_status"] == "CANCELED"
    assert (await call(client, "cancel", cancel(player, 2)))["data"]["transaction_status"] == "CANCELED"
    assert await balance_of(wallet, player) == 10000
    assert await tx_status(client, player, 1) == "CANCELED"


@pytest.fixture
def short_socket_timeout(settings: Settings) -> Settings:
    settings.redis.socket_timeout_ms = 150
    return settings


async def test_a_redis_timeout_is_op_47_and_the_platforms_cancel_squares_it(
    short_socket_timeout: Settings, client: httpx.AsyncClient, wallet: Wallet, player: str,
    sync_redis: redis.Redis
) -> None:
    token = await new_session(client, player)
    blocker = asyncio.create_task(asyncio.to_thread(sync_redis.eval, BUSY_LUA, 0, 400_000))
    await asyncio.sleep(0.05)
    answer = await call(client, "changebalance", change(player, 1, "BET", 5, token=token))
    await blocker
    # Redis ran the booking after walletd stopped waiting: the outcome was unknown
    # when answering, so OP_47 ("will be cancelled"), never OK or a plain refusal.
    assert error_code(answer) == "OP_47"
    assert "outcome unknown" in answer["data"]["error_message"]
    assert (await call(client, "cancel", cancel(player, 1)))["status"] == "OK"
    assert await balance_of(wallet, player) == 10000
