"""OIA commands: authenticate, balance, changebalance and every error code they use."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import redis

from app.settings import Settings
from app.wallet import Wallet
from tests.oia_calls import call, change, envelope, error_code, new_session, post, redis_state
from tests.support import OPERATOR, OTHER_OPERATOR, OTHER_SECRET, balance_of, drain, ledger_rows

pytestmark = pytest.mark.anyio


# authenticate

async def test_authenticate_returns_the_player_behind_the_token(client: httpx.AsyncClient, player: str) -> None:
    token = await new_session(client, player)
    answer = await call(client, "authenticate", {"token": token})
    assert answer["status"] == "OK"
    assert answer["data"] == {"user_id": "611", "user_name": "611", "user_country": "DE",
                              "display_name": "John Doe", "currency_code": "EUR", "balance": 100.0}


@pytest.mark.parametrize("token", ["00000" + "a" * 27, "short", "x" * 50, "99999" + "a" * 27, ""])
async def test_authenticate_unknown_token_is_op_21(client: httpx.AsyncClient, player: str, token: str) -> None:
    assert error_code(await call(client, "authenticate", {"token": token})) == "OP_21"


async def test_authenticate_token_of_another_operators_player_is_op_34(client: httpx.AsyncClient,
                                                                       wallet: Wallet) -> None:
    await wallet.create_player("612", "EUR", 500, "", "en", "", [], operator_id=OTHER_OPERATOR)
    token = await new_session(client, "612", operator=OTHER_OPERATOR)
    assert error_code(await call(client, "authenticate", {"token": token})) == "OP_34"
    answer = await call(client, "authenticate", {"token": token}, secret=OTHER_SECRET, operator=OTHER_OPERATOR)
    assert answer["status"] == "OK"


async def test_authenticate_expired_token_is_op_21(settings: Settings, wallet: Wallet, client: httpx.AsyncClient,
                                                   player: str, sync_redis: redis.Redis) -> None:
    token = await new_session(client, player)
    key = next(iter(sync_redis.keys("*:sess:" + token)))
    assert 0 < sync_redis.ttl(key) <= settings.oia.session_idle_s
    sync_redis.pexpire(key, 50)  # the idle expiry, shortened for the test
    await asyncio.sleep(0.1)
    assert error_code(await call(client, "authenticate", {"token": token})) == "OP_21"


async def test_authenticate_blocked_player_is_op_22(client: httpx.AsyncClient, wallet: Wallet, player: str) -> None:
    token = await new_session(client, player)
    await wallet.set_blocked(player, True)
    assert error_code(await call(client, "authenticate", {"token": token})) == "OP_22"
    await wallet.set_blocked(player, False)
    assert (await call(client, "authenticate", {"token": token}))["status"] == "OK"


async def test_authenticate_currency_not_enabled_for_operator_is_op_22(
    client: httpx.AsyncClient, wallet: Wallet
) -> None:
    await wallet.create_player("usd", "USD", 100, "", "en", "", [], operator_id=OTHER_OPERATOR)
    token = await new_session(client, "usd", operator=OTHER_OPERATOR)  # othercasino: EUR only
    answer = await call(client, "authenticate", {"token": token}, secret=OTHER_SECRET, operator=OTHER_OPERATOR)
    assert error_code(answer) == "OP_22"


# balance

async def test_balance_codes(client: httpx.AsyncClient, wallet: Wallet, player: str) -> None:
    await wallet.create_player("612", "EUR", 500, "", "en", "", [], operator_id=OPERATOR)
    token = await new_session(client, player)
    data = {"token": token, "user_id": player, "currency_code": "EUR"}
    assert (await call(client, "balance", data))["data"] == {"balance": 100.0, "currency_code": "EUR"}
    assert error_code(await call(client, "balance", {**data, "user_id": "612"})) == "OP_21"
    assert error_code(await call(client, "balance", {**data, "currency_code": "USD"})) == "OP_30"
    assert error_code(await call(client, "balance", {**data, "user_id": "nobody"})) == "OP_34"
    await wallet.set_blocked(player, True)
    assert error_code(await call(client, "balance", data)) == "OP_33"


async def test_balance_accepts_an_integer_user_id(client: httpx.AsyncClient, player: str) -> None:
    token = await new_session(client, player)
    answer = await call(client, "balance", {"token": token, "user_id": 611, "currency_code": "EUR"})
    assert answer["status"] == "OK"


# changebalance

async def test_bet_win_refund_move_money_exactly(client: httpx.AsyncClient, wallet: Wallet, player: str,
                                                 settings: Settings) -> None:
    token = await new_session(client, player)
    bet = await call(client, "changebalance", change(player, 1, "BET", 0.29, token=token))
    assert bet["data"] == {"balance": 99.71, "currency_code": "EUR"}
    win = await call(client, "changebalance", change(player, 2, "WIN", "17.25", round_id=1))
    assert win["data"]["balance"] == 116.96
    refund = await call(client, "changebalance", change(player, 3, "REFUND", 0.01, token=None, round_id=2))
    assert refund["data"]["balance"] == 116.97
    assert await balance_of(wallet, player) == 11697
    await drain(settings)
    rows = ledger_rows(settings, "player_id = ? AND source = 'oia'", (player,))
    assert [(r["kind"], r["amount_minor"], r["ref"]) for r in rows] == [
        ("bet", -29, "testcasino|1"), ("win", 1725, "testcasino|2"), ("refund", 1, "testcasino|3")]


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        (1.001, "more than 2 decimals"),
        (-1, "must not be negative"),
        ("-0.00", "must not be negative"),
        ("1e3", "decimal number"),
        (10**17, "decimal number"),
        (90071992547409.93, "out of range"),
        (None, "decimal number"),
        ([], "decimal number"),
        (True, "decimal number"),
    ],
)
async def test_bad_amounts_are_refused_and_move_nothing(client: httpx.AsyncClient, player: str,
                                                       sync_redis: redis.Redis, amount: object,
                                                       message: str) -> None:
    token = await new_session(client, player)
    before = redis_state(sync_redis)
    answer = await call(client, "changebalance", change(player, 1, "BET", amount, token=token))
    assert error_code(answer) == "OP_50"
    assert message in answer["data"]["error_message"] and "data.amount" in answer["data"]["error_message"]
    assert redis_state(sync_redis) == before


async def test_trailing_zeros_are_exact(client: httpx.AsyncClient, player: str) -> None:
    token = await new_session(client, player)
    answer = await call(client, "changebalance", change(player, 1, "BET", "1.2500", token=token))
    assert answer["data"]["balance"] == 98.75


async def test_bet_session_checks_are_op_21(client: httpx.AsyncClient, wallet: Wallet, player: str) -> None:
    await wallet.create_player("612", "EUR", 500, "", "en", "", [], operator_id=OPERATOR)
    token = await new_session(client, player, game=200)
    other = await new_session(client, "612", game=200)
    for tx, data in enumerate([
        change(player, 0, token=None),
        change(player, 0, token=token, game=201),  # session opened for game 200
        change(player, 0, token=other),  # another player's session
        change(player, 0, token="00000" + "Z" * 27),
        change(player, 0, token="abc"),
    ], start=10):
        data["transaction_id"] = tx
        assert error_code(await call(client, "changebalance", data)) == "OP_21", data
    assert await balance_of(wallet, player) == 10000


async def test_lobby_session_allows_bets_on_any_game(client: httpx.AsyncClient, wallet: Wallet, player: str) -> None:
    token = await new_session(client, player, lobby="portomaso")
    for tx, game in enumerate([1, 200, 5523]):
        answer = await call(client, "changebalance", change(player, tx, token=token, game=game))
        assert answer["status"] == "OK"
    assert await balance_of(wallet, player) == 9700


async def test_bet_refusals_30_31_33_35(client: httpx.AsyncClient, wallet: Wallet, player: str) -> None:
    token = await new_session(client, player)
    assert error_code(await call(client, "changebalance", change(player, 1, currency="USD", token=token))) == "OP_30"
    assert error_code(await call(client, "changebalance", change(player, 2, amount=100.01, token=token))) == "OP_31"
    await wallet.create_player("612", "EUR", 500, "", "en", "", [], operator_id=OTHER_OPERATOR)
    other_token = await new_session(client, "612", game=666, operator=OTHER_OPERATOR)
    disabled = change("612", 3, token=other_token, game=666)
    answer = await call(client, "changebalance", disabled, secret=OTHER_SECRET, operator=OTHER_OPERATOR)
    assert error_code(answer) == "OP_35"
    assert await balance_of(wallet, "612") == 500
    await wallet.set_blocked(player, True)
    assert error_code(await call(client, "changebalance", change(player, 4, token=token))) == "OP_33"
    assert await balance_of(wallet, player) == 10000


async def test_currency_not_enabled_for_the_operator_is_op_30(client: httpx.AsyncClient, wallet: Wallet) -> None:
    await wallet.create_player("usd", "USD", 100, "", "en", "", [], operator_id=OTHER_OPERATOR)
    answer = await call(client, "changebalance", change("usd", 1, "WIN", 1, currency="USD"),
                        secret=OTHER_SECRET, operator=OTHER_OPERATOR)
    assert error_code(answer) == "OP_30"


async def test_win_and_refund_need_no_session_and_credit_a_blocked_player(
    client: httpx.AsyncClient, wallet: Wallet, player: str
) -> None:
    await wallet.set_blocked(player, True)
    assert (await call(client, "changebalance", change(player, 1, "WIN", 2, token=None)))["status"] == "OK"
    assert (await call(client, "changebalance", change(player, 2, "REFUND", 3, token="expired-or-bogus-token")))[
        "status"] == "OK"
    assert await balance_of(wallet, player) == 10500


async def test_unknown_player_is_op_34(client: httpx.AsyncClient) -> None:
    assert error_code(await call(client, "changebalance", change("ghost", 1, "WIN", 1))) == "OP_34"


async def test_missing_fields_and_wrong_types_are_op_50_naming_the_field(client: httpx.AsyncClient,
                                                                        player: str) -> None:
    for field, value in [("transaction_id", "12x"), ("round_id", None), ("game_id", -1),
                         ("transaction_type", "DEPOSIT"), ("currency_code", "EU|R"), ("round_finished", "no")]:
        data = change(player, 1, "WIN", 1)
        data[field] = value
        answer = await call(client, "changebalance", data)
        assert error_code(answer) == "OP_50"
        assert f"data.{field}" in answer["data"]["error_message"]
    for field in ("user_id", "transaction_type", "transaction_id", "round_id", "game_id", "currency_code", "amount"):
        data = change(player, 1, "WIN", 1)
        del data[field]
        answer = await call(client, "changebalance", data)
        assert error_code(answer) == "OP_50"
        assert field in answer["data"]["error_message"]


async def test_zero_amounts_are_booked_and_large_ones_are_exact(client: httpx.AsyncClient, wallet: Wallet,
                                                                player: str) -> None:
    token = await new_session(client, player)
    assert (await call(client, "changebalance", change(player, 1, "BET", 0, token=token)))["status"] == "OK"
    assert (await call(client, "changebalance", change(player, 2, "WIN", 0.00)))["status"] == "OK"
    big = await call(client, "changebalance", change(player, 3, "WIN", "90071992547309.91"))
    assert big["status"] == "OK"
    assert await balance_of(wallet, player) == 9007199254740991  # 2**53 - 1: the largest exact balance
    over = await call(client, "changebalance", change(player, 4, "WIN", 0.01))
    assert error_code(over) == "OP_50" and "range" in over["data"]["error_message"]
    assert await balance_of(wallet, player) == 9007199254740991


async def test_an_exponent_written_number_is_refused(client: httpx.AsyncClient, player: str) -> None:
    body = json.dumps(envelope("changebalance", change(player, 1, "WIN", 12345))).replace("12345", "1.5e1")
    r = await post(client, "changebalance", body.encode())
    assert r.json()["response"]["data"]["error_code"] == "OP_50"
    assert "data.amount" in r.json()["response"]["data"]["error_message"]
