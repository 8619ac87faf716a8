"""Concurrent OIA callbacks against a real walletd process, then `walletd verify`."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.oia_calls import call, change, error_code, new_session
from tests.process import Server, walletd

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture
def server(tmp_path: Path, redis_url: str) -> Iterator[Server]:
    server = Server(tmp_path, redis_url).start()
    yield server
    server.stop()


@pytest.fixture
async def client(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=100)
    async with httpx.AsyncClient(base_url=server.base_url, limits=limits, timeout=30) as c:
        yield c


async def balance(client: httpx.AsyncClient, player: str, token: str) -> float:
    answer = await call(client, "balance", {"token": token, "user_id": player, "currency_code": "EUR"})
    return answer["data"]["balance"]


async def test_50_concurrent_retries_of_one_bet_book_it_once(server: Server, client: httpx.AsyncClient) -> None:
    walletd(server.config, "player", "create", "r1", "--currency", "EUR", "--balance", "10.00")
    token = await new_session(client, "r1")
    data = change("r1", 4242, "BET", 2.50, token=token)
    answers = await asyncio.gather(*[call(client, "changebalance", data) for _ in range(50)])
    assert {a["status"] for a in answers} == {"OK"}
    assert {a["data"]["balance"] for a in answers} == {7.5}
    assert await balance(client, "r1", token) == 7.5
    assert walletd(server.config, "verify").returncode == 0


async def test_100_concurrent_distinct_bets_on_a_balance_for_40_book_exactly_40(
    server: Server, client: httpx.AsyncClient
) -> None:
    walletd(server.config, "player", "create", "r2", "--currency", "EUR", "--balance", "40.00")
    token = await new_session(client, "r2")
    answers = await asyncio.gather(*[
        call(client, "changebalance", change("r2", tx, "BET", 1, token=token, round_id=tx)) for tx in range(100)
    ])
    assert Counter(error_code(a) or "OK" for a in answers) == {"OK": 40, "OP_31": 60}
    # Every success was decided on a distinct balance.
    assert sorted(a["data"]["balance"] for a in answers if a["status"] == "OK") == [float(n) for n in range(40)]
    assert await balance(client, "r2", token) == 0.0


async def test_verify_passes_after_a_mixed_run(server: Server, client: httpx.AsyncClient) -> None:
    players = [f"m{n}" for n in range(6)]
    for player in players:
        walletd(server.config, "player", "create", player, "--currency", "EUR", "--balance", "20.00")
    tokens = {p: await new_session(client, p, lobby="lobby") for p in players}
    rng = random.Random(7)
    calls = []
    for tx in range(300):
        player = rng.choice(players)
        kind = rng.choice(["BET", "BET", "WIN", "REFUND"])
        data = change(player, tx, kind, rng.choice([0, 0.5, 1, 3.25]), token=tokens[player], round_id=tx // 3)
        calls.append(call(client, "changebalance", data))
        if rng.random() < 0.2:
            calls.append(call(client, "changebalance", data))  # an identical retry
        if rng.random() < 0.15:
            calls.append(call(client, "cancel", {"user_id": player, "transaction_id": tx, "round_id": tx // 3,
                                                 "round_finished": True, "game_id": 200}))
    answers = await asyncio.gather(*calls)
    codes = Counter(error_code(a) or "OK" for a in answers)
    assert set(codes) <= {"OK", "OP_31", "OP_41", "OP_49"}, codes
    result = walletd(server.config, "verify")
    assert result.returncode == 0, result.stdout
    assert "verify: OK" in result.stdout
