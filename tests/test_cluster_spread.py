"""Partitions spread over every primary of a three-primary Redis Cluster: the default
partition count gives each primary a fair share of the partitions' hash slots, players
wherever their ids put them are all served by `walletd serve`, and each primary holds the
ledger streams of its own partitions only."""

from __future__ import annotations

import json
from collections import Counter

import httpx
import pytest

from app.keys import PREFIX, partition_of
from tests.cluster_walletd import KEYS, PARTITIONS, Placement, keys_on
from tests.process import Server, walletd
from tests.redis_cluster import LocalCluster, slot_of
from tests.support import ADMIN_TOKEN, OPERATOR

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


# Each primary owns at least this share of a fair third of the default partitions: the
# default must be large enough for a cluster to spread (16 left one of three with 4).
FAIR_SHARE_MIN = 0.8
SPREAD_PLAYERS = 30


async def test_partitions_spread_over_every_primary(cluster_walletd: Server, redis_cluster: LocalCluster) -> None:
    placement = Placement(redis_cluster)
    owned = Counter(placement.node_of_slot(slot_of(KEYS.tag(p))).port for p in range(PARTITIONS))
    fair = PARTITIONS / len(redis_cluster.primaries)
    low = [node.port for node in redis_cluster.primaries if owned[node.port] < FAIR_SHARE_MIN * fair]
    assert low == [], f"{PARTITIONS} partitions per primary: {dict(owned)}"
    players = [f"sp{n}" for n in range(SPREAD_PLAYERS)]  # wherever their ids put them
    async with httpx.AsyncClient(base_url=cluster_walletd.base_url, timeout=30) as client:
        for player in players:
            body = {"player_id": player, "currency": "EUR", "balance": "10.00", "operator_id": OPERATOR}
            created = await client.post("/admin/players", json=body, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
            assert created.status_code == 201, created.text
        bets = [await client.get("/stargame", params={"cmd": "writeBet", "uid": p, "bet": "100", "win": "0"})
                for p in players]
    assert [(r.json()["status"], r.json()["cash"]) for r in bets] == [("success", 900)] * SPREAD_PLAYERS
    served = Counter(placement.node_of(p).port for p in players)
    assert set(served) == {node.port for node in redis_cluster.primaries}, served
    for node in redis_cluster.primaries:
        streams = keys_on(node, f"{PREFIX}:{{p*}}:ledger")
        tags = {key.split(":")[1] for key in streams}
        expected = {KEYS.tag(partition_of(p, PARTITIONS)).split(":")[1] for p in players
                    if placement.node_of(p) is node}
        assert tags >= expected, (node.port, expected - tags)
        assert all(placement.node_of_slot(slot_of(key)) is node for key in streams), node.port
    # `walletd info` reports the same map: each partition on the primary owning its slot.
    info = json.loads(walletd(cluster_walletd.config, "info", "--json").stdout)
    assert info["mode"] == "cluster"
    reported = {item["partition"]: item["node"] for item in info["placement"]}
    assert reported == {p: f"127.0.0.1:{placement.node_of_slot(slot_of(KEYS.tag(p))).port}" for p in range(PARTITIONS)}
