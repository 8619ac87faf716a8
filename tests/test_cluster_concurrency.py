"""Exact counts under concurrency on a three-primary Redis Cluster: a player on each
primary, all of them hit at once, each booking exactly what its balance affords (each
success decided on a balance no other success saw) and each retry of one bet booked
once; the flusher of the same `walletd serve` stores exactly those bookings."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.cluster_walletd import Placement
from tests.oia_calls import call, change, error_code, new_session
from tests.outage import stored_entries, wait_for
from tests.process import Server, walletd
from tests.redis_cluster import LocalCluster

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

CALLS = 100  # concurrent bets per player
AFFORD = 30  # bets of 1.00 each player's balance covers
RETRIES = 30  # identical retries of one OIA bet per player
CONNECTIONS = 100
# A burst of hundreds on one worker can queue past a tight budget: this test is about
# atomicity, so the budget leaves deadline refusals out of the counts.
BUDGET_MS = 10_000


def players_per_primary(cluster: LocalCluster, prefix: str) -> list[str]:
    placement = Placement(cluster)
    return [placement.players_on(node, 1, f"{prefix}{i}-")[0] for i, node in enumerate(cluster.primaries)]


def stored_bets(storage_url: str, player: str) -> list[int]:
    return [e.amount_minor for e in stored_entries(storage_url) if e.player_id == player and e.kind == "bet"]


async def test_concurrent_writebets_book_exactly_what_each_player_affords(
    tmp_path: Path, redis_cluster: LocalCluster, cluster_url: str
) -> None:
    server = Server(tmp_path, cluster_url, budget_ms=BUDGET_MS).start()
    storage_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    players = players_per_primary(redis_cluster, "hot")
    try:
        for player in players:  # the CLI, on the cluster too
            walletd(server.config, "player", "create", player, "--currency", "EUR", "--balance", f"{AFFORD}.00")
        limits = httpx.Limits(max_connections=CONNECTIONS)
        async with httpx.AsyncClient(base_url=server.base_url, limits=limits, timeout=60) as client:
            calls = [client.get("/stargame", params={"cmd": "writeBet", "uid": player, "bet": "100", "win": "0"})
                     for _ in range(CALLS) for player in players]
            replies = await asyncio.gather(*calls)
            finals = [(await client.get("/stargame", params={"cmd": "getBalance", "uid": p})).json() for p in players]
        stored = await wait_for(lambda: all(len(stored_bets(storage_url, p)) >= AFFORD for p in players))
        bets = {p: stored_bets(storage_url, p) for p in players}
    finally:
        server.stop()
    assert {r.status_code for r in replies} == {200}
    for player in players:
        answers = [r.json() for r in replies if r.json()["userLogin"] == player]
        assert Counter(a["status"] for a in answers) == {"success": AFFORD, "fail": CALLS - AFFORD}, player
        assert {a["error"] for a in answers if a["status"] == "fail"} == {"insufficient funds"}
        assert sorted(a["cash"] for a in answers if a["status"] == "success") == list(range(0, AFFORD * 100, 100))
    assert [f["cash"] for f in finals] == [0, 0, 0]
    assert stored, bets
    assert {p: (len(b), sum(b)) for p, b in bets.items()} == {p: (AFFORD, -AFFORD * 100) for p in players}


async def test_concurrent_oia_bets_and_retries_book_exactly_once(
    tmp_path: Path, redis_cluster: LocalCluster, cluster_url: str
) -> None:
    server = Server(tmp_path, cluster_url, budget_ms=BUDGET_MS).start()
    players = players_per_primary(redis_cluster, "oh")
    try:
        limits = httpx.Limits(max_connections=CONNECTIONS)
        async with httpx.AsyncClient(base_url=server.base_url, limits=limits, timeout=60) as client:
            for player in players:
                walletd(server.config, "player", "create", player, "--currency", "EUR", "--balance", f"{AFFORD}.00")
            tokens = {p: await new_session(client, p) for p in players}
            retries = [call(client, "changebalance", change(p, 1, "BET", 2.50, token=tokens[p]))
                       for _ in range(RETRIES) for p in players]
            retried = await asyncio.gather(*retries)
            bets = [call(client, "changebalance", change(p, tx, "BET", 1, token=tokens[p], round_id=tx))
                    for tx in range(2, CALLS + 2) for p in players]
            answers = await asyncio.gather(*bets)
            finals = [await call(client, "balance", {"token": tokens[p], "user_id": p, "currency_code": "EUR"})
                      for p in players]
        check = walletd(server.config, "verify", check=False)
    finally:
        server.stop()
    assert {a["status"] for a in retried} == {"OK"}
    assert sorted(a["data"]["balance"] for a in retried) == [27.5] * (RETRIES * len(players))
    # 27.50 left: 27 bets of 1.00 each, decided on 27 distinct balances per player.
    affordable = int(AFFORD - 2.5)
    assert Counter(error_code(a) or "OK" for a in answers) == {
        "OK": affordable * len(players), "OP_31": (CALLS - affordable) * len(players)}
    ok_balances = sorted(a["data"]["balance"] for a in answers if a["status"] == "OK")
    assert ok_balances == sorted([n + 0.5 for n in range(affordable)] * len(players))
    assert [f["data"]["balance"] for f in finals] == [0.5, 0.5, 0.5]
    assert check.returncode == 0, check.stdout + check.stderr
