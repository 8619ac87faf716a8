"""walletd on a local Redis Cluster (tests/redis_cluster.py), for the tests/test_cluster_*
tests (README "Scaling out"): which primary serves a player (player -> partition ->
the partition's hash tag -> hash slot -> owner), players picked to live on given
primaries, keys and balances read on the node that owns them, and Redis's own counts
of the redirections it answered (INFO errorstats), so a test sees MOVED and ASK happen
without trusting the client that followed them.

The tests run walletd with the default partition count (wallet.partitions): placement
is computed with that count, so it follows the default when it changes.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from pathlib import Path
from typing import Any

import redis

from app.keys import Keys, partition_of
from app.settings import Settings
from tests.outage import OPENING_MINOR, SG_BUDGET_MS, Answer
from tests.process import Server
from tests.rebuild_calls import snapshot
from tests.redis_cluster import ClusterNode, LocalCluster, slot_of

# The partition count every cluster test's walletd runs with: the default.
PARTITIONS = Settings().wallet.partitions
KEYS = Keys(PARTITIONS)
# Candidate ids tried when picking players for a node: with any sane partition count a
# node owns a third of them; past this the cluster cannot be serving that node at all.
CANDIDATES_MAX = 100_000
# Keys read per SCAN round trip when listing a node's keys.
SCAN_COUNT = 1000
# The redirections Redis answers instead of running a command (INFO errorstats names).
REDIRECTS = ("MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN")


def cluster_server(directory: Path, cluster: LocalCluster, budget_ms: int = SG_BUDGET_MS, redis_extra: str = "",
                   **config: str | Path | int) -> Server:
    """`walletd serve` (not started) with redis.url naming the cluster's first primary;
    cluster mode is detected (redis.cluster = "auto") unless redis_extra says otherwise."""
    return Server(directory, redis_url=cluster.url, budget_ms=budget_ms, redis_extra=redis_extra, **config)


def slot_of_player(player: str) -> int:
    """The hash slot of every key of the player's partition."""
    return slot_of(KEYS.tag(partition_of(player, PARTITIONS)))


class Placement:
    """Which primary owns each slot, as CLUSTER SLOTS said when this was made."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        by_port = {node.port: node for node in cluster.nodes}
        first = next(n for n in cluster.primaries if n.process is not None and n.process.poll() is None)
        with contextlib.closing(first.client()) as client:
            self.ranges = [(int(start), int(end), by_port[int(holders[0][1])])
                           for start, end, *holders in client.execute_command("CLUSTER", "SLOTS")]

    def node_of_slot(self, slot: int) -> ClusterNode:
        return next(node for start, end, node in self.ranges if start <= slot <= end)

    def node_of(self, player: str) -> ClusterNode:
        return self.node_of_slot(slot_of_player(player))

    def players_on(self, node: ClusterNode, count: int, prefix: str, exclude_slots: frozenset[int] = frozenset(),
                   ) -> list[str]:
        """count player ids (prefix + a number) whose partitions the node owns, none in
        exclude_slots."""
        found: list[str] = []
        for n in range(CANDIDATES_MAX):
            player = f"{prefix}{n}"
            slot = slot_of_player(player)
            if slot not in exclude_slots and self.node_of_slot(slot) is node:
                found.append(player)
                if len(found) == count:
                    return found
        raise AssertionError(f"no {count} players of prefix {prefix} on node {node.port}")

    def spread(self, count: int, prefix: str) -> dict[ClusterNode, list[str]]:
        """count players on each primary."""
        return {node: self.players_on(node, count, f"{prefix}{i}-") for i, node in enumerate(self.cluster.primaries)}


def keys_on(node: ClusterNode, pattern: str) -> list[str]:
    """The node's own keys matching the glob (SCAN: a cluster node holds only its slots')."""
    with contextlib.closing(node.client()) as client:
        return sorted(client.scan_iter(match=pattern, count=SCAN_COUNT))


def account_on(node: ClusterNode, player: str) -> dict[str, str]:
    """The player's account hash as the node holds it ({} when it has none)."""
    with contextlib.closing(node.client()) as client:
        return client.hgetall(KEYS.account(player))  # type: ignore[return-value]


def balance_in_cluster(cluster: LocalCluster, player: str) -> int:
    """The balance in minor units, read on the primary that owns the player's slot now."""
    account = account_on(cluster.owner(slot_of_player(player)), player)
    assert account, f"no account for {player}"
    return int(account["bal"])


def redirects(node: ClusterNode) -> Counter[str]:
    """How many MOVED, ASK, TRYAGAIN and CLUSTERDOWN replies the node has sent since it
    started (INFO errorstats counts error replies by their first word)."""
    with contextlib.closing(node.client()) as client:
        stats = client.info("errorstats")
    return Counter({kind: int(stats.get(f"errorstat_{kind}", {}).get("count", 0)) for kind in REDIRECTS})


def sg_balances_settled(cluster: LocalCluster, answers: list[Answer]) -> bool:
    """Each StarGame player's balance is its opening less one cent per success (the
    reconciler has reversed every fail whose booking had landed)."""
    try:
        for player in {a.player for a in answers if a.protocol == "stargame"}:
            oks = sum(1 for a in answers if a.player == player and a.outcome == "OK")
            if balance_in_cluster(cluster, player) != OPENING_MINOR - oks:
                return False
    except (redis.RedisError, RuntimeError):  # a node still restarting
        return False
    return True


def cluster_snapshot(cluster: LocalCluster) -> dict[str, Any]:
    """What a rebuild must recreate (tests/rebuild_calls.py's snapshot; compare two with
    its same_state), each key named "<port of the primary holding it> <key>": a key
    rebuilt on another node is a difference."""
    state: dict[str, Any] = {}
    for node in cluster.primaries:
        with contextlib.closing(node.client()) as client:
            state |= {f"{node.port} {key}": value for key, value in snapshot(client).items()}
    return state
