"""Game sessions: POST /admin/sessions and `walletd session new`, launch URLs, block/unblock."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from app.sessions import token_partition
from app.wallet import Wallet
from tests.oia_calls import call, change, error_code
from tests.process import Server, walletd
from tests.support import ADMIN_TOKEN, OPERATOR

pytestmark = pytest.mark.anyio

TOKEN = re.compile(r"[A-Za-z0-9]{20,50}")
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
async def player(wallet: Wallet) -> str:
    await wallet.create_player("611", "EUR", 10000, "DE", "de-DE", "John", [], operator_id=OPERATOR)
    return "611"


async def test_admin_session_with_launch_urls(client: httpx.AsyncClient, player: str, wallet: Wallet) -> None:
    body = {"player_id": player, "game_id": 37, "operator_id": OPERATOR, "home_url": "https://casino.example/lobby",
            "device": "mobile", "fun": True}
    r = await client.post("/admin/sessions", json=body, headers=AUTH)
    assert r.status_code == 201
    session = r.json()
    assert TOKEN.fullmatch(session["token"])
    assert token_partition(session["token"], wallet.keys.partitions) == wallet.keys.partition(player)
    real = urlsplit(session["launch_url"])
    assert (real.scheme, real.netloc) == ("https", "games.example.com")
    assert parse_qs(real.query) == {"mode": ["real"], "game_id": ["37"], "token": [session["token"]],
                                    "currency": ["EUR"], "language": ["de-DE"], "operator_id": [OPERATOR],
                                    "home_url": ["https://casino.example/lobby"], "device": ["mobile"]}
    fun = parse_qs(urlsplit(session["fun_url"]).query)
    assert fun["mode"] == ["fun"] and "token" not in fun and fun["game_id"] == ["37"]


async def test_lobby_session_url(client: httpx.AsyncClient, player: str) -> None:
    r = await client.post("/admin/sessions", json={"player_id": player, "lobby_id": "portomaso",
                                                   "operator_id": OPERATOR}, headers=AUTH)
    query = parse_qs(urlsplit(r.json()["launch_url"]).query)
    assert query["lobby_id"] == ["portomaso"] and "game_id" not in query


async def test_each_launch_gets_a_unique_token(client: httpx.AsyncClient, player: str) -> None:
    tokens = set()
    for _ in range(20):
        r = await client.post("/admin/sessions", json={"player_id": player, "game_id": 1, "operator_id": OPERATOR},
                              headers=AUTH)
        tokens.add(r.json()["token"])
    assert len(tokens) == 20


@pytest.mark.parametrize(
    ("headers", "body", "status"),
    [
        ({}, {"player_id": "611", "game_id": 1}, 401),
        ({"Authorization": "Bearer wrong"}, {"player_id": "611", "game_id": 1}, 401),
        (AUTH, {"player_id": "ghost", "game_id": 1}, 404),  # two operators: the owner's, but no such player
        (AUTH, {"player_id": "611", "operator_id": OPERATOR}, 400),  # neither game nor lobby
        (AUTH, {"player_id": "611", "game_id": 1, "lobby_id": "x", "operator_id": OPERATOR}, 400),
        (AUTH, {"player_id": "611", "game_id": "1", "operator_id": OPERATOR}, 400),
        (AUTH, {"player_id": "611", "game_id": 1, "operator_id": "nobody"}, 400),
        (AUTH, {"player_id": "611", "game_id": 1, "operator_id": OPERATOR, "device": "tv"}, 400),
        (AUTH, {"player_id": "ghost", "game_id": 1, "operator_id": OPERATOR}, 404),
    ],
)
async def test_admin_session_refusals(client: httpx.AsyncClient, player: str, headers: dict, body: dict,
                                      status: int) -> None:
    r = await client.post("/admin/sessions", json=body, headers=headers)
    assert r.status_code == status
    assert r.json()["error"]


@pytest.mark.slow
async def test_cli_session_and_block_take_effect_on_the_next_callback(tmp_path: Path, redis_url: str) -> None:
    server = Server(tmp_path, redis_url).start()
    try:
        walletd(server.config, "player", "create", "c1", "--currency", "EUR", "--balance", "10.00")
        out = walletd(server.config, "session", "new", "c1", "--game", "200")
        session = json.loads(out.stdout)
        assert TOKEN.fullmatch(session["token"]) and session["operator_id"] == OPERATOR
        assert session["launch_url"] is None  # no oia.game_launch_host in this config
        async with httpx.AsyncClient(base_url=server.base_url) as client:
            bet = change("c1", 1, "BET", 1, token=session["token"])
            assert (await call(client, "changebalance", bet))["status"] == "OK"
            walletd(server.config, "player", "block", "c1")
            bet2 = change("c1", 2, "BET", 1, token=session["token"])
            assert error_code(await call(client, "changebalance", bet2)) == "OP_33"
            walletd(server.config, "player", "unblock", "c1")
            bet3 = change("c1", 3, "BET", 1, token=session["token"])
            assert (await call(client, "changebalance", bet3))["status"] == "OK"
        lobby = walletd(server.config, "session", "new", "c1", "--lobby", "portomaso")
        assert json.loads(lobby.stdout)["lobby_id"] == "portomaso"
        missing = walletd(server.config, "session", "new", "ghost", "--game", "1", check=False)
        assert missing.returncode == 1 and "unknown player" in missing.stderr
        unknown = walletd(server.config, "player", "block", "ghost", check=False)
        assert unknown.returncode == 1
    finally:
        server.stop()
