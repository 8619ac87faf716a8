"""A player belongs to one operator: every OIA command from another operator is OP_34 and writes nothing."""

from __future__ import annotations

import sqlite3
from typing import Any

import httpx
import pytest
import redis

from app.settings import Settings
from app.wallet import Wallet
from tests.oia_calls import call, change, error_code, new_session, redis_state
from tests.support import ADMIN_TOKEN, OPERATOR, OTHER_OPERATOR, OTHER_SECRET, SECRET, balance_of, drain, ledger_rows

pytestmark = pytest.mark.anyio

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
FINISH = {"round_id": 1, "game_id": 200, "round_date": "2026-11-21", "round_ts": "1"}


async def as_other(client: httpx.AsyncClient, command: str, data: Any) -> str | None:
    return error_code(await call(client, command, data, secret=OTHER_SECRET, operator=OTHER_OPERATOR))


@pytest.fixture
async def played(client: httpx.AsyncClient, wallet: Wallet, player: str) -> str:
    """Player 611 of OPERATOR, with a live session, a booked BET 1 and an open round 1."""
    token = await new_session(client, player)
    assert (await call(client, "changebalance", change(player, 1, token=token)))["status"] == "OK"
    return token


@pytest.mark.parametrize(
    ("command", "data"),
    [
        ("changebalance", change("611", 7, "WIN", 5.00)),
        ("changebalance", change("611", 8, "REFUND", 1.00)),
        ("changebalance", change("611", 1, "WIN", 5.00)),  # same id as the owner's BET
        ("cancel", {"user_id": "611", "transaction_id": 1, "round_id": 1, "game_id": 200, "round_finished": True}),
        ("cancel", {"user_id": "611", "transaction_id": 99, "round_id": 1, "game_id": 200}),  # unknown: no tombstone
        ("status", {"user_id": "611", "transaction_id": 1}),
        ("status", {"user_id": "611", "transaction_id": 99}),
        ("finishround", {"user_id": "611", **FINISH}),
    ],
)
async def test_another_operator_gets_op_34_and_nothing_is_written(
    client: httpx.AsyncClient, wallet: Wallet, played: str, sync_redis: redis.Redis, command: str, data: dict,
) -> None:
    before = redis_state(sync_redis)
    assert await as_other(client, command, data) == "OP_34"
    assert redis_state(sync_redis) == before
    assert await balance_of(wallet, "611") == 9900


async def test_another_operator_with_the_owners_token_gets_op_34(
    client: httpx.AsyncClient, wallet: Wallet, played: str, sync_redis: redis.Redis,
) -> None:
    before = redis_state(sync_redis)
    assert await as_other(client, "authenticate", {"token": played}) == "OP_34"
    assert await as_other(client, "balance", {"token": played, "currency_code": "EUR", "user_id": "611"}) == "OP_34"
    assert await as_other(client, "changebalance", change("611", 9, token=played)) == "OP_34"
    assert redis_state(sync_redis) == before
    # the owner is still served
    assert (await call(client, "authenticate", {"token": played}))["status"] == "OK"


async def test_session_for_another_operators_player_is_refused(
    client: httpx.AsyncClient, player: str, sync_redis: redis.Redis,
) -> None:
    before = redis_state(sync_redis)
    r = await client.post("/admin/sessions", json={"player_id": player, "game_id": 200,
                                                   "operator_id": OTHER_OPERATOR}, headers=AUTH)
    assert r.status_code == 403
    assert f"player {player} belongs to another operator" in r.json()["error"]
    assert redis_state(sync_redis) == before


async def test_ownerless_account_is_refused_to_every_operator_when_several_are_configured(
    client: httpx.AsyncClient, wallet: Wallet, sync_redis: redis.Redis,
) -> None:
    await wallet.create_player("old", "EUR", 1000, "", "en", "", [], operator_id="")
    before = redis_state(sync_redis)
    for secret, operator in ((SECRET, OPERATOR), (OTHER_SECRET, OTHER_OPERATOR)):
        answer = await call(client, "changebalance", change("old", 1, "WIN", 1), secret=secret, operator=operator)
        assert error_code(answer) == "OP_34"
    r = await client.post("/admin/sessions", json={"player_id": "old", "game_id": 200, "operator_id": OPERATOR},
                          headers=AUTH)
    assert r.status_code == 403
    assert redis_state(sync_redis) == before


@pytest.fixture
def one_operator(settings: Settings) -> Settings:
    settings.oia.operators = settings.oia.operators[:1]
    return settings


async def test_ownerless_account_belongs_to_the_only_operator(
    one_operator: Settings, wallet: Wallet, client: httpx.AsyncClient,
) -> None:
    await wallet.create_player("old", "EUR", 1000, "", "en", "", [], operator_id="")
    token = await new_session(client, "old")
    assert (await call(client, "changebalance", change("old", 1, "WIN", 1)))["status"] == "OK"
    assert (await call(client, "authenticate", {"token": token}))["status"] == "OK"
    assert await balance_of(wallet, "old") == 1100


async def test_owner_is_on_the_account_and_the_open_entry(
    wallet: Wallet, settings: Settings, player: str, sync_redis: redis.Redis,
) -> None:
    assert sync_redis.hget(wallet.keys.account(player), "op") == OPERATOR
    (entry,) = sync_redis.xrange(wallet.keys.ledger(wallet.keys.partition(player)))
    assert entry[1]["op"] == OPERATOR
    await drain(settings)
    assert len(ledger_rows(settings)) == 1
    db = sqlite3.connect(settings.storage_url.removeprefix("sqlite:///"))
    assert db.execute("SELECT operator FROM players WHERE player_id = ?", (player,)).fetchone() == (OPERATOR,)
    db.close()


async def test_admin_api_creates_a_player_of_one_operator(
    client: httpx.AsyncClient, wallet: Wallet, sync_redis: redis.Redis,
) -> None:
    body = {"player_id": "p9", "currency": "EUR", "balance": "12.50", "aliases": ["stargame:909"]}
    before = redis_state(sync_redis)
    missing = await client.post("/admin/players", json=body, headers=AUTH)
    assert missing.status_code == 400 and "owning operator is required" in missing.json()["error"]
    unknown = await client.post("/admin/players", json={**body, "operator_id": "nobody"}, headers=AUTH)
    assert unknown.status_code == 400 and "unknown operator" in unknown.json()["error"]
    unauthorized = await client.post("/admin/players", json={**body, "operator_id": OPERATOR})
    assert unauthorized.status_code == 401
    assert redis_state(sync_redis) == before
    created = await client.post("/admin/players", json={**body, "operator_id": OTHER_OPERATOR}, headers=AUTH)
    assert created.status_code == 201, created.text
    assert created.json()["operator_id"] == OTHER_OPERATOR and created.json()["entry_id"]
    assert await balance_of(wallet, "p9") == 1250
    again = await client.post("/admin/players", json={**body, "operator_id": OTHER_OPERATOR}, headers=AUTH)
    assert again.status_code == 409 and "player p9 already exists" in again.json()["error"]
    assert await as_other(client, "changebalance", change("p9", 1, "WIN", 1)) is None
    assert error_code(await call(client, "changebalance", change("p9", 2, "WIN", 1))) == "OP_34"
    assert await balance_of(wallet, "p9") == 1350


@pytest.mark.parametrize("body", [
    {"player_id": "p9", "currency": "EUR", "balance": "1.234", "operator_id": OPERATOR},
    {"player_id": "p9", "currency": "ZZZ", "operator_id": OPERATOR},
    {"player_id": "p9", "currency": "EUR", "balance": "-1", "operator_id": OPERATOR},
    {"player_id": "p9", "currency": "EUR", "operator_id": OPERATOR, "extra": 1},
])
async def test_admin_api_refuses_bad_players(client: httpx.AsyncClient, sync_redis: redis.Redis, body: dict) -> None:
    before = redis_state(sync_redis)
    r = await client.post("/admin/players", json=body, headers=AUTH)
    assert r.status_code == 400, r.text
    assert redis_state(sync_redis) == before


async def test_session_operator_defaults_to_the_players_owner(client: httpx.AsyncClient, wallet: Wallet) -> None:
    await wallet.create_player("612", "EUR", 500, "", "en", "", [], operator_id=OTHER_OPERATOR)
    r = await client.post("/admin/sessions", json={"player_id": "612", "game_id": 200}, headers=AUTH)
    assert r.status_code == 201, r.text
    assert r.json()["operator_id"] == OTHER_OPERATOR
    unknown = await client.post("/admin/sessions", json={"player_id": "613", "game_id": 200}, headers=AUTH)
    assert unknown.status_code == 404
    await wallet.create_player("old", "EUR", 1000, "", "en", "", [], operator_id="")
    ownerless = await client.post("/admin/sessions", json={"player_id": "old", "game_id": 200}, headers=AUTH)
    assert ownerless.status_code == 400 and "operator_id is required" in ownerless.json()["error"]
