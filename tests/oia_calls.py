"""Signed OIA calls for the tests. Hashes are computed here, independently of app/."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from typing import Any

import httpx

from tests.support import ADMIN_TOKEN, OPERATOR, SECRET

TIMESTAMP = "2026-11-21 10:00:00"


def sha1(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()  # noqa: S324 - the protocol's choice


def envelope(command: str, data: Any, secret: str = SECRET, timestamp: str = TIMESTAMP) -> dict:
    return {"command": command, "request_timestamp": timestamp, "hash": sha1(command + timestamp + secret),
            "data": data}


async def post(client: httpx.AsyncClient, command: str, body: Any, *, secret: str = SECRET,
               operator: str | None = OPERATOR, authorization: str | None = None) -> httpx.Response:
    headers = {"Content-Type": "application/json; charset=utf-8",
               "X-Authorization": authorization if authorization is not None else sha1(command + secret)}
    if operator is not None:
        headers["X-Operator-Id"] = operator
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await client.post(f"/oia/{command}", content=content, headers=headers)


async def call(client: httpx.AsyncClient, command: str, data: Any, *, secret: str = SECRET,
               operator: str | None = OPERATOR) -> dict:
    """The reply's `response` member, after checking status code, echo and response hash."""
    body = envelope(command, data, secret)
    response = await post(client, command, body, secret=secret, operator=operator)
    assert response.status_code == 200, response.text
    reply = response.json()
    assert reply["request"] == body
    answer = reply["response"]
    assert answer["hash"] == sha1(answer["status"] + answer["response_timestamp"] + secret)
    return answer


def error_code(answer: dict) -> str | None:
    return answer["data"]["error_code"] if answer["status"] == "ERROR" else None


async def new_session(client: httpx.AsyncClient, player: str, game: int | None = 200,
                      lobby: str | None = None, operator: str = OPERATOR) -> str:
    body = {"player_id": player, "operator_id": operator}
    body.update({"game_id": game} if lobby is None else {"lobby_id": lobby})
    response = await client.post("/admin/sessions", json=body, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert response.status_code == 201, response.text
    return response.json()["token"]


def now_stamp(ago_s: float = 0) -> str:
    """A transaction_timestamp (UTC Y-m-d H:i:s) ago_s seconds ago."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(time.time() - ago_s))


def change(player: str, tx: int, kind: str = "BET", amount: Any = 1.00, *, token: str | None = None,
           round_id: int = 1, game: int = 200, currency: str = "EUR", finished: bool | None = False,
           stamp: str | None = None) -> dict:
    # A current transaction_timestamp, as a platform sends for a new transaction.
    return {"transaction_type": kind, "amount": amount, "currency_code": currency, "transaction_id": tx,
            "transaction_timestamp": stamp or now_stamp(), "round_id": round_id, "round_finished": finished,
            "game_id": game, "user_id": player, "token": token, "context": {"reason": "not_provided"}}


def cancel(player: str, tx: int) -> dict:
    """A cancel's data for the transaction `tx` of round 1, game 200."""
    return {"user_id": player, "transaction_id": tx, "round_id": 1, "round_finished": None, "game_id": 200}


async def records_expire(sync_redis: Any, within_s: float = 5) -> None:
    """Waits until every transaction record has expired (the retention passed), at most within_s."""
    deadline = time.monotonic() + within_s
    while sync_redis.keys("*:tx:*") and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert sync_redis.keys("*:tx:*") == []


def redis_state(client: Any) -> dict[str, Any]:
    """Every key with its value (streams by length): equal before and after means nothing changed."""
    state: dict[str, Any] = {}
    for key in client.keys("*"):
        kind = client.type(key)
        if kind == "hash":
            state[key] = client.hgetall(key)
        elif kind == "string":  # counters, and the late-retry filter's bitmaps (binary)
            state[key] = client.eval("return redis.sha1hex(redis.call('GET', KEYS[1]))", 1, key)
        elif kind == "stream":
            state[key] = client.xlen(key)
        else:
            state[key] = kind
    return state
