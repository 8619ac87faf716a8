"""One primary of a Redis Cluster killed (-9) and started again, under the parts that use
redis-py's cluster client: the cold-start guard's check fails and its last verdict
stands; the durability check skips the node it cannot reach and still names a
replica that is not durable; nothing is lost or stored twice by the flusher, which
stores every entry once the node is back. The bookings on the other primaries go on."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError, TimeoutError as RedisTimeoutError

from app import redis_durability
from app.keys import Keys, partition_of
from app.ledger.guard import FLUSHER_ROLE
from app.runtime import Runtime
from app.settings import Settings
from tests.redis_cluster import ClusterNode, LocalCluster, local_cluster, slot_of
from tests.support import OPERATOR, ledger_rows

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

PARTITIONS = 64
PASSWORD = "cluster-secret/with:odd@chars"  # a test cluster's: quoted in the URL
# What a command for a killed node's slots raises (refused connection, or a time-out).
DOWN = (RedisConnectionError, RedisTimeoutError)
PLAYERS = 60


def settings_for(url: str, directory: Path) -> Settings:
    settings = Settings(data_dir=str(directory / "var"))
    settings.redis.url = url
    settings.storage.url = f"sqlite:///{directory / 'ledger.db'}"
    settings.wallet.partitions = PARTITIONS
    settings.flusher.claim_idle_ms = 0
    return settings


def owner_of(cluster: LocalCluster, player: str) -> ClusterNode:
    return cluster.owner(slot_of(Keys.tag(partition_of(player, PARTITIONS))))


def written_total(cluster: LocalCluster) -> int:
    """Ledger entries every partition's seq counter says were written, read on each primary."""
    keys = Keys(PARTITIONS)
    total = 0
    for partition in range(PARTITIONS):
        with contextlib.closing(cluster.owner(slot_of(keys.seq(partition))).client()) as direct:
            total += int(direct.get(keys.seq(partition)) or 0)
    return total


async def test_a_primary_down_and_back(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Three primaries and a replica of the first (the one killed is the second: no failover),
    every node asking for a password (walletd's connections to each node authenticate)."""
    with local_cluster(tmp_path / "cluster", primaries=3, replicas=1, password=PASSWORD) as cluster:
        await primary_down_and_back(cluster, tmp_path, caplog)


async def primary_down_and_back(cluster: LocalCluster, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = settings_for(cluster.url, tmp_path)
    victim = cluster.primaries[1]
    players = [f"n{i}" for i in range(PLAYERS)]
    async with Runtime(settings, cluster.url, ledger=True) as runtime:
        wallet, flusher = runtime.wallet, runtime.flusher
        assert flusher is not None and runtime.cluster
        for player in players:
            await wallet.create_player(player, "EUR", 1000, "", "en", "", [], operator_id=OPERATOR)
        assert {owner_of(cluster, p).port for p in players} == {n.port for n in cluster.primaries}
        assert await flusher.drain() == PLAYERS

        assert await redis_durability.problems(runtime.redis) == []
        replica = cluster.replicas[0]
        with contextlib.closing(replica.client()) as direct:
            direct.config_set("maxmemory-policy", "allkeys-lru")
        assert await redis_durability.problems(runtime.redis) == [
            f"node 127.0.0.1:{replica.port} (replica): maxmemory-policy is 'allkeys-lru', needs 'noeviction'"]

        cluster.kill(victim)
        try:  # as /healthz pings: once more after a connection error (the first may go to the dead node)
            await runtime.redis.ping()
        except DOWN:
            await runtime.redis.ping()
        with caplog.at_level(logging.WARNING, logger="walletd.redis"):
            assert await redis_durability.problems(runtime.redis) == [
                f"node 127.0.0.1:{replica.port} (replica): maxmemory-policy is 'allkeys-lru', needs 'noeviction'"]
        assert f"127.0.0.1:{victim.port} (primary) cannot be reached" in caplog.text

        guard = runtime.guard
        assert guard.refusal == ""
        with pytest.raises(DOWN):
            await guard.check()
        assert guard.refusal == "", "the last verdict stands"

        alive = [p for p in players if owner_of(cluster, p) is not victim]
        for player in alive:  # the other primaries' partitions go on booking
            await wallet.adjust(player, "deposit", 5, "while-down")
        with pytest.raises(DOWN):  # the dead node's streams cannot be read
            await flusher.drain()

        cluster.restart(victim)
        guard.role = FLUSHER_ROLE
        await guard.check()
        assert guard.refusal == ""
        await flusher.drain()
    written = written_total(cluster)
    assert written == PLAYERS + len(alive)
    rows = ledger_rows(settings)
    assert len(rows) == len({(r["partition"], r["seq"]) for r in rows}) == written
    assert sum(r["amount_minor"] for r in rows if r["ref"] == "while-down") == 5 * len(alive)
