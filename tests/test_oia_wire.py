"""OIA wire limits (issue 9): field ranges, string transaction ids, duplicate members,
invalid UTF-8, the player id alphabet, and currency checked before the amount."""

from __future__ import annotations

import json

import httpx
import pytest
import redis

from app.wallet import Wallet
from tests.oia_calls import call, change, envelope, error_code, new_session, post, redis_state, sha1
from tests.support import OPERATOR, OTHER_OPERATOR, OTHER_SECRET, SECRET, balance_of

pytestmark = pytest.mark.anyio

DIGITS_20 = 10**20 - 1  # the spec's INT 20, largest


def cancel(player: str, tx: object, round_id: object = 1) -> dict:
    return {"user_id": player, "transaction_id": tx, "round_id": round_id, "game_id": 200, "round_finished": None}


async def refused_unchanged(client: httpx.AsyncClient, sync_redis: redis.Redis, command: str, body: bytes | dict,
                            code: str = "OP_50") -> dict:
    """Posts body; asserts the answer is `code`, a valid UTF-8 JSON reply with a correct hash,
    and that Redis did not change at all. Returns the answer's data."""
    before = redis_state(sync_redis)
    r = await post(client, command, body if isinstance(body, bytes) else json.dumps(body).encode())
    assert r.status_code == 200
    reply = json.loads(r.content.decode("utf-8"))  # strict: the reply is UTF-8 JSON
    answer = reply["response"]
    assert answer["hash"] == sha1(answer["status"] + answer["response_timestamp"] + SECRET)
    assert error_code(answer) == code, answer
    assert redis_state(sync_redis) == before
    return answer["data"]


# Item 19: INT 20 and INT 6.

@pytest.mark.parametrize("field, value", [
    ("transaction_id", 10**20), ("transaction_id", 10**299), ("transaction_id", str(10**20)),
    ("round_id", 10**20), ("round_id", 10**120), ("game_id", 1_000_000), ("game_id", 10**30),
])
async def test_ids_beyond_their_digits_are_op_50_and_write_nothing(
    client: httpx.AsyncClient, player: str, sync_redis: redis.Redis, field: str, value: object
) -> None:
    data = change(player, 7, "WIN", 5)
    data[field] = value
    detail = await refused_unchanged(client, sync_redis, "changebalance", envelope("changebalance", data))
    assert f"data.{field}" in detail["error_message"]


@pytest.mark.parametrize("command, data", [
    ("cancel", cancel("611", 10**20)), ("cancel", cancel("611", 1, 10**20)),
    ("status", {"user_id": "611", "transaction_id": 10**20}),
    ("finishround", {"user_id": "611", "round_id": 10**20, "game_id": 200}),
    ("finishround", {"user_id": "611", "round_id": 1, "game_id": 10**6}),
])
async def test_other_commands_bound_their_ids_too(client: httpx.AsyncClient, player: str, sync_redis: redis.Redis,
                                                  command: str, data: dict) -> None:
    await refused_unchanged(client, sync_redis, command, envelope(command, data))


async def test_the_largest_ids_are_accepted(client: httpx.AsyncClient, wallet: Wallet, player: str) -> None:
    data = change(player, DIGITS_20, "WIN", 5, round_id=DIGITS_20, game=999_999)
    answer = await call(client, "changebalance", data)
    assert answer["status"] == "OK"
    assert await balance_of(wallet, player) == 10500


# Item 16: a transaction_id as a string of digits is the same id.

async def test_a_digit_string_transaction_id_is_the_same_id_as_the_number(
    client: httpx.AsyncClient, wallet: Wallet, player: str
) -> None:
    first = await call(client, "changebalance", change(player, "2248000", "WIN", 5))
    assert first["status"] == "OK"
    retry = await call(client, "changebalance", change(player, 2248000, "WIN", 5))
    assert retry["data"] == first["data"]  # an identical retry, not a second booking
    assert await balance_of(wallet, player) == 10500
    other = await call(client, "changebalance", change(player, "2248000", "WIN", 6))
    assert error_code(other) == "OP_40"
    status = await call(client, "status", {"user_id": player, "transaction_id": "2248000"})
    assert status["data"] == {"user_id": player, "transaction_id": 2248000, "transaction_status": "OK"}
    cancelled = await call(client, "cancel", cancel(player, "002248000"))
    assert cancelled["data"]["transaction_status"] == "CANCELED"
    assert await balance_of(wallet, player) == 10000
    assert error_code(await call(client, "changebalance", change(player, 2248000, "WIN", 5))) == "OP_49"


@pytest.mark.parametrize("value", ["", " 12", "12 ", "1e3", "-1", "+1", "0x10", "1.0", "١٢", "12\n",
                                   "1" * 21, "{1}", "1:2"])
@pytest.mark.parametrize("command", ["changebalance", "status", "cancel"])
async def test_any_other_transaction_id_string_is_op_50(
    client: httpx.AsyncClient, player: str, sync_redis: redis.Redis, value: str, command: str
) -> None:
    data = {"changebalance": change(player, value, "WIN", 5), "cancel": cancel(player, value),
            "status": {"user_id": player, "transaction_id": value}}[command]
    detail = await refused_unchanged(client, sync_redis, command, envelope(command, data))
    assert "data.transaction_id" in detail["error_message"]


# Item 19: duplicate members and invalid UTF-8.

def signed_text(command: str, data_text: str) -> bytes:
    stamp = "2026-11-21 10:00:00"
    return (f'{{"command":"{command}","request_timestamp":"{stamp}",'
            f'"hash":"{sha1(command + stamp + SECRET)}","data":{data_text}}}').encode()


def data_text(player: str, amount_members: str = '"amount":5.00') -> str:
    return (f'{{"transaction_type":"WIN",{amount_members},"currency_code":"EUR","transaction_id":9,'
            f'"round_id":1,"round_finished":false,"game_id":200,"user_id":"{player}","token":null,'
            f'"context":{{"reason":"x"}}}}')


@pytest.mark.parametrize("members, named", [
    ('"amount":5.00,"amount":900.00', "data.amount"),
    ('"amount":900.00,"amount":5.00', "data.amount"),
    ('"amount":5.00,"user_id":"someone-else"', "data.user_id"),
    ('"amount":5.00,"transaction_id":10', "data.transaction_id"),
    ('"am\\u006funt":900.00,"amount":5.00', "data.amount"),  # the same name spelled with an escape
])
async def test_a_duplicate_data_member_is_op_50_naming_it(
    client: httpx.AsyncClient, player: str, sync_redis: redis.Redis, members: str, named: str
) -> None:
    detail = await refused_unchanged(client, sync_redis, "changebalance",
                                     signed_text("changebalance", data_text(player, members)))
    assert named in detail["error_message"]


async def test_a_duplicate_envelope_member_is_op_50_naming_it(client: httpx.AsyncClient, player: str,
                                                              sync_redis: redis.Redis) -> None:
    body = signed_text("changebalance", data_text(player))
    twice = body[:-1] + b',"data":' + data_text(player, '"amount":900.00').encode() + b"}"
    detail = await refused_unchanged(client, sync_redis, "changebalance", twice)
    assert "`data`" in detail["error_message"]


async def test_the_same_name_in_different_objects_is_no_duplicate(client: httpx.AsyncClient, wallet: Wallet,
                                                                  player: str) -> None:
    text = data_text(player).replace('"reason":"x"', '"reason":"x","amount":1,"token":"t","hash":"h"')
    r = await post(client, "changebalance", signed_text("changebalance", text))
    assert r.json()["response"]["status"] == "OK", r.text
    assert await balance_of(wallet, player) == 10500


@pytest.mark.parametrize("context", ['{"reason":"a","reason":"b"}', '{"reason":"a\\"q","reason":"b"}'])
async def test_a_repeat_inside_a_member_walletd_does_not_read_is_accepted_either_way(
    client: httpx.AsyncClient, wallet: Wallet, player: str, context: str
) -> None:
    # The second case has an escape, so it takes the member-by-member path: same answer.
    text = data_text(player).replace('{"reason":"x"}', context)
    r = await post(client, "changebalance", signed_text("changebalance", text))
    assert r.json()["response"]["status"] == "OK", r.text
    assert await balance_of(wallet, player) == 10500


@pytest.mark.parametrize("raw, named", [
    (b'"reason":"bad \xff byte"', "data.context.reason"),
    (b'"reason":"cut \xe2\x82"', "data.context.reason"),
    (b'"\xc3\x28":"x"', "member name"),
])
async def test_invalid_utf8_anywhere_is_op_50_and_the_reply_is_utf8_json(
    client: httpx.AsyncClient, player: str, sync_redis: redis.Redis, raw: bytes, named: str
) -> None:
    body = signed_text("changebalance", data_text(player)).replace(b'"reason":"x"', raw)
    detail = await refused_unchanged(client, sync_redis, "changebalance", body)
    assert named in detail["error_message"]


async def test_invalid_utf8_in_a_read_member_is_op_50(client: httpx.AsyncClient, player: str,
                                                      sync_redis: redis.Redis) -> None:
    body = signed_text("changebalance", data_text(player)).replace(f'"{player}"'.encode(), b'"61\xff1"')
    detail = await refused_unchanged(client, sync_redis, "changebalance", body)
    assert "data.user_id" in detail["error_message"]


async def test_valid_utf8_text_is_still_accepted(client: httpx.AsyncClient, wallet: Wallet, player: str) -> None:
    text = data_text(player).replace('"reason":"x"', '"reason":"Grüße, 東京 \\"q\\" 🎰"')
    r = await post(client, "changebalance", signed_text("changebalance", text))
    assert r.json()["response"]["status"] == "OK", r.text
    assert "Grüße, 東京" in r.content.decode("utf-8")  # echoed as it came
    assert await balance_of(wallet, player) == 10500


# Item 8 (OIA): user_id outside the player id alphabet.

HOSTILE_IDS = ["x}:acct:y", "{p1}", "a:b", "a|b", "a b", "a\tb", "", "x" * 65, "é", "a/b", "a\nb", -5.5]


@pytest.mark.parametrize("user_id", HOSTILE_IDS)
async def test_a_user_id_outside_the_alphabet_is_op_34_for_every_command(
    client: httpx.AsyncClient, player: str, sync_redis: redis.Redis, user_id: object
) -> None:
    token = await new_session(client, player)
    calls = {
        "balance": {"user_id": user_id, "token": token, "currency_code": "EUR"},
        "changebalance": change(player, 1, "BET", 1, token=token) | {"user_id": user_id},
        "status": {"user_id": user_id, "transaction_id": 1},
        "cancel": cancel(player, 1) | {"user_id": user_id},
        "finishround": {"user_id": user_id, "round_id": 1, "game_id": 200},
    }
    for command, data in calls.items():
        code = "OP_50" if isinstance(user_id, float) else "OP_34"  # not a string or integer at all
        await refused_unchanged(client, sync_redis, command, envelope(command, data), code)


async def test_an_integer_user_id_is_its_decimal_text(client: httpx.AsyncClient, wallet: Wallet, player: str) -> None:
    answer = await call(client, "changebalance", change(int(player), 1, "WIN", 5))  # type: ignore[arg-type]
    assert answer["status"] == "OK"
    assert await balance_of(wallet, player) == 10500


# Item 10: the currency is checked before the amount's precision.

async def test_wrong_currency_with_an_amount_it_cannot_hold_is_op_30_recorded(
    client: httpx.AsyncClient, wallet: Wallet, player: str, sync_redis: redis.Redis
) -> None:
    data = change(player, 5, "WIN", "1.50", currency="JPY")  # JPY has no decimals; the player is EUR
    answer = await call(client, "changebalance", data)
    assert error_code(answer) == "OP_30", answer
    assert len(sync_redis.keys("*:tx:*")) == 1  # recorded, as every currency refusal
    assert error_code(await call(client, "changebalance", data)) == "OP_30"  # the retry: same answer
    assert error_code(await call(client, "changebalance", change(player, 5, "WIN", "1.00"))) == "OP_40"
    assert await balance_of(wallet, player) == 10000


async def test_a_currency_not_enabled_for_the_operator_is_op_30_whatever_the_amount(
    client: httpx.AsyncClient, wallet: Wallet, sync_redis: redis.Redis
) -> None:
    await wallet.create_player("jp", "JPY", 1000, "JP", "ja", "", [], operator_id=OTHER_OPERATOR)
    data = change("jp", 5, "WIN", "1.50", currency="JPY")
    answer = await call(client, "changebalance", data, secret=OTHER_SECRET, operator=OTHER_OPERATOR)
    assert error_code(answer) == "OP_30", answer  # othercasino enables EUR only
    assert await balance_of(wallet, "jp") == 1000


async def test_the_players_own_currency_with_too_many_decimals_is_op_50_unrecorded(
    client: httpx.AsyncClient, wallet: Wallet, sync_redis: redis.Redis
) -> None:
    await wallet.create_player("jp", "JPY", 1000, "JP", "ja", "", [], operator_id=OPERATOR)
    detail = await refused_unchanged(client, sync_redis, "changebalance",
                                     envelope("changebalance", change("jp", 5, "WIN", "1.50", currency="JPY")))
    assert "data.amount" in detail["error_message"]
    assert (await call(client, "changebalance", change("jp", 5, "WIN", "2", currency="JPY")))["status"] == "OK"
    assert await balance_of(wallet, "jp") == 1002


async def test_an_unknown_player_with_an_amount_the_currency_cannot_hold_is_op_34_recorded(
    client: httpx.AsyncClient, sync_redis: redis.Redis
) -> None:
    answer = await call(client, "changebalance", change("nobody", 5, "WIN", "1.50", currency="JPY"))
    assert error_code(answer) == "OP_34"


@pytest.mark.parametrize("field", ["transaction_type", "currency_code", "user_id", "token"])
async def test_a_lone_surrogate_escape_is_an_invalid_request_not_an_internal_error(
    client: httpx.AsyncClient, player: str, sync_redis: redis.Redis, field: str
) -> None:
    # A guard (msgspec refuses the escape when it first reads the body), not a regression test.
    body = json.dumps(envelope("changebalance", change(player, 9, "WIN", 5) | {field: "SURROGATE"}))
    detail = await refused_unchanged(client, sync_redis, "changebalance",
                                     body.replace('"SURROGATE"', '"\\ud800"').encode())
    assert detail["error_message"].startswith("Invalid request"), detail
