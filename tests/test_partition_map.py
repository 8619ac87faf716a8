"""`walletd info` (app/partition_map.py): CLUSTER NODES read as Redis writes it, and the
report on one Redis (the cluster's is tests/test_cluster_tools.py)."""

from __future__ import annotations

import json

import pytest
import redis
from redis.crc import key_slot

from app import cli
from app.keys import META_PARTITIONS, Keys
from app.partition_map import node_address, parse_cluster_nodes, ranges
from app.settings import Settings
from app.version import version
from tests.support import write_config

# CLUSTER NODES of a cluster in trouble: a primary failed, one migrating a slot (the
# bracketed part is no slot it serves), a replica of the second, one in handshake.
NODES = """\
07c3 127.0.0.1:30004@40004 master - 0 1426238317239 4 connected 10923-16383
292f 127.0.0.1:30002@40002,node-2 master,fail - 1426238316232 1426238315000 2 disconnected 5461-10922
e7d1 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460 [5461->-292f]
6ec2 127.0.0.1:30005@40005 slave 292f 0 1426238316232 2 connected
824f 127.0.0.1:30006@40006 handshake - 0 0 0 connected
"""


def test_cluster_nodes_are_read_with_their_slots_state_and_primary() -> None:
    nodes = {n.address: n for n in parse_cluster_nodes(NODES)}
    assert [n.address for n in parse_cluster_nodes(NODES)][:3] == [
        "127.0.0.1:30001", "127.0.0.1:30002", "127.0.0.1:30004"]  # primaries first, in slot order
    assert nodes["127.0.0.1:30001"].slots == [(0, 5460)] and nodes["127.0.0.1:30001"].state == "ok"
    assert nodes["127.0.0.1:30002"].state == "fail" and nodes["127.0.0.1:30002"].slots == [(5461, 10922)]
    assert nodes["127.0.0.1:30005"].role == "replica" and nodes["127.0.0.1:30005"].primary == "127.0.0.1:30002"
    assert nodes["127.0.0.1:30006"].state == "handshake"


def test_ranges_and_addresses() -> None:
    assert ranges([0, 1, 2, 5, 7, 8]) == "0-2 5 7-8"
    assert ranges([]) == ""
    assert node_address("redis://:pw@10.0.0.5:7001/0") == "10.0.0.5:7001"
    assert node_address("rediss://cache.example") == "cache.example:6379"
    assert node_address("unix:///run/redis.sock?db=1") == "/run/redis.sock"


def test_info_on_one_redis_shows_it_holding_every_partition(
        settings: Settings, sync_redis: redis.Redis, capsys: pytest.CaptureFixture[str]) -> None:
    keys = Keys(settings.wallet.partitions)
    sync_redis.xadd(keys.ledger(3), {"e": "1"})  # two entries not stored yet in partition 3
    sync_redis.xadd(keys.ledger(3), {"e": "2"})
    config = write_config(settings)
    assert cli.main(["--config", str(config), "info", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    address = node_address(settings.redis.url)
    assert (shown["version"], shown["mode"], shown["partitions"]) == (version(), "standalone", 256)
    assert shown["redis_partitions"] is None  # walletd never started on it
    assert [(n["address"], n["role"], n["state"]) for n in shown["nodes"]] == [(address, "primary", "ok")]
    assert shown["nodes"][0]["partitions"] == list(range(256))
    assert [row["partition"] for row in shown["placement"]] == list(range(256))
    assert {row["node"] for row in shown["placement"]} == {address}
    assert [row["backlog"] for row in shown["placement"] if row["backlog"]] == [2]
    assert shown["placement"][3]["slot"] == key_slot(b"p3")  # the hash tag's slot, as on a cluster
    sync_redis.hset(Keys.meta(), META_PARTITIONS, "16")  # an old deployment's data
    assert cli.main(["--config", str(config), "info"]) == 0
    text = capsys.readouterr().out
    assert "Redis: standalone, 1 primary, 0 replicas" in text
    assert f"primary {address} (ok): 256 partitions, backlog 2" in text
    assert "Redis holds data for 16 partitions: walletd refuses to start until [wallet] partitions = 16" in text
    assert "\n3 " in text and text.rstrip().endswith(f"255 {shown['placement'][255]['slot']} {address} 0")
