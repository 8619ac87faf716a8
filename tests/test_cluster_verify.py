"""verify and rebuild end to end on a three-primary Redis Cluster: a workload of every
money kind served by `walletd serve` for players on each primary, `walletd verify`
passing on it, then the cluster emptied and `walletd rebuild` writing each partition
back to the primary that owns it, key for key, and walletd serving the same balances."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.cluster_walletd import Placement, cluster_snapshot
from tests.oia_calls import call, cancel, change, error_code, new_session
from tests.process import Server, walletd
from tests.rebuild_calls import same_state
from tests.redis_cluster import LocalCluster
from tests.support import ADMIN_TOKEN, OPERATOR

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

PLAYERS_PER_NODE = 2


async def workload(client: httpx.AsyncClient, config: Path, player: str, n: int) -> None:
    """OIA bet, win, refund, a cancel, a refusal, a tombstone, a finished round; StarGame
    bets and wins by alias and by id; an admin deposit and withdrawal."""
    body = {"player_id": player, "currency": "EUR", "balance": "50.00", "operator_id": OPERATOR,
            "aliases": [f"stargame:{900 + n}"]}
    created = await client.post("/admin/players", json=body, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert created.status_code == 201, created.text
    token = await new_session(client, player)
    for tx, kind, amount, round_id in ((1, "BET", 1.50, 1), (2, "WIN", 3.00, 1), (3, "BET", 2.00, 2),
                                       (4, "REFUND", 2.00, 2), (5, "BET", 0.25, 3)):
        answer = await call(client, "changebalance", change(player, tx, kind, amount, token=token, round_id=round_id))
        assert answer["status"] == "OK", answer
    assert (await call(client, "cancel", cancel(player, 5) | {"round_id": 3}))["status"] == "OK"
    assert error_code(await call(client, "changebalance", change(player, 6, "BET", 1000, token=token))) == "OP_31"
    assert error_code(await call(client, "cancel", cancel(player, 7))) == "OP_41"
    assert (await call(client, "finishround", {"user_id": player, "round_id": 1, "game_id": 200}))["status"] == "OK"
    for uid, bet, win in ((str(900 + n), "100", "250"), (player, "0", "700"), (player, "300", "0")):
        r = await client.get("/stargame", params={"cmd": "writeBet", "uid": uid, "bet": bet, "win": win})
        assert r.json()["status"] == "success", r.text
    walletd(config, "player", "deposit", player, "12.00", "--ref", f"dep-{n}")
    walletd(config, "player", "withdraw", player, "2.00", "--ref", f"wd-{n}")


async def balances(base_url: str, players: list[str]) -> dict[str, int]:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        replies = [await client.get("/stargame", params={"cmd": "getBalance", "uid": p}) for p in players]
    assert {r.json()["status"] for r in replies} == {"success"}, [r.text for r in replies]
    return {p: r.json()["cash"] for p, r in zip(players, replies, strict=True)}


async def test_verify_and_rebuild_after_a_served_workload(
    tmp_path: Path, redis_cluster: LocalCluster, cluster_url: str
) -> None:
    placement = Placement(redis_cluster)
    spread = placement.spread(PLAYERS_PER_NODE, "vr")
    players = [p for ps in spread.values() for p in ps]
    server = Server(tmp_path, cluster_url, budget_ms=1000)
    try:
        server.start()
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
            for n, player in enumerate(players):
                await workload(client, server.config, player, n)
        served = await balances(server.base_url, players)
        server.stop()  # verify drains what the flusher has not stored yet
        verified = walletd(server.config, "verify", check=False)
        before = cluster_snapshot(redis_cluster)
        redis_cluster.flush()  # every primary loses its data
        rebuilt = walletd(server.config, "rebuild", check=False)
        assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
        after = cluster_snapshot(redis_cluster)
        server.start()
        again = await balances(server.base_url, players)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
            bets = [await client.get("/stargame", params={"cmd": "writeBet", "uid": p, "bet": "1", "win": "0"})
                    for p in players]
        server.stop()
        verified_again = walletd(server.config, "verify", check=False)
    finally:
        server.stop()
    assert served == {p: 5000 - 150 + 300 - 200 + 200 - 25 + 25 - 100 + 250 + 700 - 300 + 1200 - 200 for p in players}
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "verify: OK" in verified.stdout
    assert {key.split()[0] for key in before} == {str(node.port) for node in redis_cluster.primaries}
    assert same_state(before, after) == []
    assert again == served
    assert [(r.json()["status"], r.json()["cash"]) for r in bets] == [("success", served[p] - 1) for p in players]
    assert verified_again.returncode == 0, verified_again.stdout + verified_again.stderr
