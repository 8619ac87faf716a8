"""OIA envelope: X-Authorization (403), body hash (OP_20), reply structure and hash, ping."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import AsyncIterator

import httpx
import pytest
import redis

from app.settings import OperatorSettings, Settings
from app.web import create_app
from tests.oia_calls import call, envelope, error_code, new_session, post, redis_state, sha1
from tests.support import OPERATOR, OTHER_OPERATOR, OTHER_SECRET, SECRET

pytestmark = pytest.mark.anyio

STAMP = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")


async def test_ping_answers_pong(client: httpx.AsyncClient) -> None:
    r = await client.get("/oia/ping")
    assert r.status_code == 200
    assert r.text == "PONG"


async def test_reply_has_the_seed_structure_and_a_correct_hash(client: httpx.AsyncClient, player: str) -> None:
    token = await new_session(client, player)
    body = envelope("balance", {"token": token, "user_id": player, "currency_code": "EUR"})
    r = await post(client, "balance", body)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    reply = r.json()
    assert list(reply) == ["request", "response"]
    assert reply["request"] == body  # the request echoed as it came
    answer = reply["response"]
    assert list(answer) == ["status", "response_timestamp", "hash", "data"]
    assert answer["status"] == "OK"
    assert STAMP.fullmatch(answer["response_timestamp"])
    sent = dt.datetime.strptime(answer["response_timestamp"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=dt.UTC)
    assert abs((dt.datetime.now(dt.UTC) - sent).total_seconds()) < 5  # UTC, not local time
    assert answer["hash"] == sha1("OK" + answer["response_timestamp"] + SECRET)
    assert answer["data"] == {"balance": 100.0, "currency_code": "EUR"}
    assert '"balance":100.00' in r.text  # DECIMAL(18,2) written with two decimals


async def test_error_reply_structure_and_hash(client: httpx.AsyncClient, player: str) -> None:
    answer = await call(client, "balance", {"token": "x" * 20, "user_id": player, "currency_code": "EUR"})
    assert answer["status"] == "ERROR"
    assert list(answer["data"]) == ["error_code", "error_message"]
    assert answer["data"]["error_code"] == "OP_21"
    assert answer["data"]["error_message"].startswith("Invalid token")
    assert answer["hash"] == sha1("ERROR" + answer["response_timestamp"] + SECRET)


@pytest.mark.parametrize(
    "headers",
    [
        {},  # no X-Authorization
        {"X-Authorization": "0" * 40},
        {"X-Authorization": sha1("balance" + OTHER_SECRET)},  # another operator's secret
        {"X-Authorization": sha1("status" + SECRET)},  # signed for another command
        {"X-Authorization": sha1("balance" + SECRET).upper()},
        {"X-Authorization": "é".encode("latin-1") * 10},  # not ASCII
    ],
)
async def test_bad_x_authorization_is_403_and_nothing_happens(
    client: httpx.AsyncClient, player: str, sync_redis: redis.Redis, headers: dict
) -> None:
    token = await new_session(client, player)
    before = redis_state(sync_redis)
    body = envelope("changebalance", {"user_id": player, "transaction_type": "BET", "transaction_id": 1,
                                      "round_id": 1, "game_id": 200, "currency_code": "EUR", "amount": 1,
                                      "token": token})
    r = await client.post("/oia/changebalance", json=body, headers={"X-Operator-Id": OPERATOR, **headers})
    assert r.status_code == 403
    assert redis_state(sync_redis) == before


async def test_unknown_operator_and_missing_operator_with_two_configured_are_403(
    client: httpx.AsyncClient, player: str
) -> None:
    body = envelope("ping", {})
    assert (await post(client, "balance", body, operator="nobody")).status_code == 403
    assert (await post(client, "balance", body, operator=None)).status_code == 403


async def test_legacy_operator_header_and_second_operator(client: httpx.AsyncClient, player: str) -> None:
    body = envelope("status", {"user_id": player, "transaction_id": 5}, secret=OTHER_SECRET)
    headers = {"X-TT-Operator-Id": OTHER_OPERATOR, "X-Authorization": sha1("status" + OTHER_SECRET)}
    r = await client.post("/oia/status", json=body, headers=headers)
    assert r.status_code == 200
    assert r.json()["response"]["data"]["error_code"] == "OP_34"  # 611 is testcasino's player
    assert r.json()["response"]["hash"] == sha1("ERROR" + r.json()["response"]["response_timestamp"] + OTHER_SECRET)


@pytest.fixture
async def one_operator_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    settings.oia.operators = [OperatorSettings(id=OPERATOR, secret_key=SECRET)]
    app = create_app(settings, settings.redis.url)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://w") as c:
        yield c


async def test_with_one_operator_the_header_may_be_missing(one_operator_client: httpx.AsyncClient,
                                                           player: str) -> None:
    answer = await call(one_operator_client, "status", {"user_id": player, "transaction_id": 5}, operator=None)
    assert error_code(answer) == "OP_41"


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (lambda b: b.update(hash=sha1("x")), "OP_20"),
        (lambda b: b.update(hash=sha1(b["command"] + b["request_timestamp"] + OTHER_SECRET)), "OP_20"),
        (lambda b: b.update(request_timestamp="2026-11-21 10:00:01"), "OP_20"),
        (lambda b: b.pop("hash"), "OP_20"),
        (lambda b: b.update(hash=17), "OP_50"),
        (lambda b: b.pop("request_timestamp"), "OP_50"),
        (lambda b: b.update(command="balance", hash=sha1("balance" + b["request_timestamp"] + SECRET)), "OP_50"),
        (lambda b: b.pop("data"), "OP_50"),
        (lambda b: b.update(data=[]), "OP_50"),
    ],
)
async def test_envelope_refusals(client: httpx.AsyncClient, player: str, sync_redis: redis.Redis,
                                 mutate: object, code: str) -> None:
    body = envelope("status", {"user_id": player, "transaction_id": 1})
    mutate(body)  # type: ignore[operator]
    before = redis_state(sync_redis)
    r = await post(client, "status", body)
    assert r.status_code == 200
    reply = r.json()
    assert reply["response"]["data"]["error_code"] == code
    assert reply["response"]["hash"] == sha1("ERROR" + reply["response"]["response_timestamp"] + SECRET)
    assert redis_state(sync_redis) == before


async def test_malformed_json_is_op_50_naming_the_problem(client: httpx.AsyncClient) -> None:
    r = await post(client, "status", b'{"command": "status", ')
    assert r.status_code == 200
    reply = r.json()
    assert reply["response"]["data"]["error_code"] == "OP_50"
    assert "not valid JSON" in reply["response"]["data"]["error_message"]
    assert reply["request"] == {"command": None, "data": None, "request_timestamp": None, "hash": None}


async def test_unknown_command_is_op_50(client: httpx.AsyncClient) -> None:
    r = await post(client, "withdrawall", envelope("withdrawall", {}))
    assert r.status_code == 200
    assert r.json()["response"]["data"]["error_code"] == "OP_50"
    assert "unknown command" in r.json()["response"]["data"]["error_message"]


async def test_oversized_body_is_refused(client: httpx.AsyncClient) -> None:
    body = envelope("status", {"user_id": "x", "transaction_id": 1, "pad": "y" * 70_000})
    r = await post(client, "status", body)
    assert r.status_code == 200
    assert "larger than" in r.json()["response"]["data"]["error_message"]


async def test_pipe_in_a_string_is_refused_naming_the_field(client: httpx.AsyncClient, player: str) -> None:
    answer = await call(client, "balance", {"user_id": player, "token": "ab|cd" * 5, "currency_code": "EUR"})
    assert error_code(answer) == "OP_50"
    assert "data.token" in answer["data"]["error_message"]


async def test_pipe_in_a_user_id_names_no_player(client: httpx.AsyncClient, player: str) -> None:
    # A user_id outside the player id alphabet (app/ids.py) cannot name a player: OP_34.
    answer = await call(client, "status", {"user_id": "61|1", "transaction_id": 1})
    assert error_code(answer) == "OP_34"
    assert "user_id" in answer["data"]["error_message"]


async def test_echo_keeps_the_request_bytes_exactly(client: httpx.AsyncClient, player: str) -> None:
    raw = json.dumps(envelope("status", {"user_id": player, "transaction_id": 1, "amount": 17.250}))
    r = await post(client, "status", raw.replace("17.25", "17.250").encode())
    assert '"amount":17.250' in r.text.replace(" ", "")
