"""The OIA and StarGame conformance subset against `walletd serve` on a three-primary
Redis Cluster (cluster mode detected from redis.url), with one player on each primary:
every conversation answers exactly as on one Redis, and each player's keys live on the
primary that owns its partition's hash slot, and on no other."""

from __future__ import annotations

import httpx
import pytest

from app.keys import partition_of
from tests.cluster_walletd import KEYS, PARTITIONS, Placement, keys_on
from tests.oia_calls import call, cancel, change, error_code, new_session
from tests.process import Server
from tests.redis_cluster import LocalCluster
from tests.support import ADMIN_TOKEN, OPERATOR

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def create(client: httpx.AsyncClient, player: str, balance: str, currency: str = "EUR",
                 aliases: tuple[str, ...] = ()) -> None:
    body = {"player_id": player, "currency": currency, "balance": balance, "country": "DE",
            "name": f"Player {player}", "aliases": list(aliases), "operator_id": OPERATOR}
    created = await client.post("/admin/players", json=body, headers=AUTH)
    assert created.status_code == 201, created.text


def status(player: str, tx: int) -> dict:
    return {"user_id": player, "transaction_id": tx, "transaction_type": "BET",
            "transaction_date": "2026-11-21", "transaction_ts": "1795000000000", "round_id": 1}


async def tx_status(client: httpx.AsyncClient, player: str, tx: int) -> str:
    answer = await call(client, "status", status(player, tx))
    return answer["data"]["transaction_status"] if answer["status"] == "OK" else answer["data"]["error_code"]


async def oia_conversation(client: httpx.AsyncClient, player: str) -> None:
    """The OIA seed's calls for one player holding EUR 100.00, each checked."""
    token = await new_session(client, player)
    auth = await call(client, "authenticate", {"token": token})
    assert auth["data"] == {"user_id": player, "user_name": player, "user_country": "DE",
                            "display_name": f"Player {player}", "currency_code": "EUR", "balance": 100.0}
    balance = await call(client, "balance", {"token": token, "user_id": player, "currency_code": "EUR"})
    assert balance["data"] == {"balance": 100.0, "currency_code": "EUR"}
    first = {}
    for tx, kind, amount, balance_after in ((1, "BET", 10, 90.0), (2, "WIN", 25, 115.0), (3, "REFUND", 5, 120.0)):
        first[tx] = await call(client, "changebalance", change(player, tx, kind, amount, token=token))
        assert first[tx]["data"] == {"balance": balance_after, "currency_code": "EUR"}, (player, tx)
    for tx, kind, amount in ((1, "BET", 10), (2, "WIN", 25), (3, "REFUND", 5)):  # retries: the original answer
        again = await call(client, "changebalance", change(player, tx, kind, amount, token=token))
        assert again["data"] == first[tx]["data"]
    assert error_code(await call(client, "changebalance", change(player, 1, "BET", 11, token=token))) == "OP_40"
    assert error_code(await call(client, "changebalance", change(player, 4, "BET", 500, token=token))) == "OP_31"
    assert await tx_status(client, player, 1) == "OK"
    assert await tx_status(client, player, 4) == "ERROR"
    cancelled = await call(client, "cancel", cancel(player, 1))
    assert cancelled["data"] == {"user_id": player, "transaction_id": 1, "transaction_status": "CANCELED"}
    assert await tx_status(client, player, 1) == "CANCELED"
    assert error_code(await call(client, "changebalance", change(player, 1, "BET", 10, token=token))) == "OP_49"
    # Cancel before its bet: OP_41 (a tombstone), and the bet arriving afterwards is OP_49.
    assert error_code(await call(client, "cancel", cancel(player, 7))) == "OP_41"
    assert error_code(await call(client, "changebalance", change(player, 7, "BET", 10, token=token))) == "OP_49"
    finish = {"round_id": 55, "user_id": player, "game_id": 200, "round_date": "2026-11-21", "round_ts": "1"}
    assert error_code(await call(client, "finishround", finish)) == "OP_41"
    await call(client, "changebalance", change(player, 8, "WIN", 1, token=token, round_id=55))
    assert (await call(client, "finishround", finish))["data"] == {"round_id": 55, "user_id": player, "game_id": 200}
    final = await call(client, "balance", {"token": token, "user_id": player, "currency_code": "EUR"})
    assert final["data"]["balance"] == 131.0  # 100 - 10 + 25 + 5, the bet cancelled, + 1


async def test_oia_conformance_on_each_primary(cluster_walletd: Server, redis_cluster: LocalCluster) -> None:
    placement = Placement(redis_cluster)
    players = {node: placement.players_on(node, 1, f"oc{i}-")[0] for i, node in enumerate(redis_cluster.primaries)}
    async with httpx.AsyncClient(base_url=cluster_walletd.base_url, timeout=30) as client:
        for player in players.values():
            await create(client, player, "100.00")
        for player in players.values():
            await oia_conversation(client, player)
    for node, player in players.items():
        # Its partition's keys naming it (account, transaction and round records); its
        # alias key (w:alias:..., looked up before the partition is known) is not one.
        pattern = f"{KEYS.tag(partition_of(player, PARTITIONS))}:*{player}*"
        own = keys_on(node, pattern)
        assert any(":acct:" in key for key in own) and any(":tx:" in key for key in own), (player, own)
        assert any(":round:" in key for key in own), (player, own)
        for other in redis_cluster.primaries:
            if other is not node:
                assert keys_on(other, pattern) == [], f"{player}'s keys on {other.port}"


async def test_stargame_conformance_on_each_primary(cluster_walletd: Server, redis_cluster: LocalCluster) -> None:
    placement = Placement(redis_cluster)
    players = [placement.players_on(node, 1, f"sc{i}-")[0] for i, node in enumerate(redis_cluster.primaries)]
    async with httpx.AsyncClient(base_url=cluster_walletd.base_url, timeout=30) as client:
        for n, player in enumerate(players):
            await create(client, player, "2950.71", "RUB", aliases=(f"stargame:{117 + n}",))
        for n, player in enumerate(players):
            uid = str(117 + n)  # by alias, as the seed's example
            got = (await client.get("/stargame", params={"cmd": "getBalance", "uid": uid, "foo": "42"})).json()
            assert got == {"status": "success", "error": "", "userLogin": uid, "cash": 295071,
                           "currencyname": "RUB", "currencyiso": "643", "language": "ENG"}, player
            bet = await client.get("/stargame", params={"cmd": "writeBet", "uid": uid, "bet": "1000", "win": "2500"})
            assert (bet.json()["status"], bet.json()["cash"]) == ("success", 296571)
            broke = await client.get("/stargame", params={"cmd": "writeBet", "uid": player, "bet": "999999",
                                                          "win": "5"})
            assert (broke.json()["status"], broke.json()["error"]) == ("fail", "insufficient funds")
            after = await client.get("/stargame", params={"cmd": "getBalance", "uid": player})
            assert after.json()["cash"] == 296571

