"""The setups the cluster bench measures (bench/cluster.py): walletd instances on one
redis-server or on a local Redis Cluster, their players, where the partitions are,
and the check that every ledger entry reached the store exactly once.

The cluster starter is tests/redis_cluster.py, shared with the tests rather than
copied: the bench runs from a source tree (as `make bench` does), which has tests/.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot

from app import settings as config
from app.keys import Keys, partition_of
from app.ledger import open_store
from app.redis_server import free_port
from bench import fixtures
from bench.placement import Placement, cpus_of, pin
from bench.servers import Process, start_redis, start_walletd, walletd_config
from tests.redis_cluster import LocalCluster

PRIMARIES = 3
# The flushers get this long to empty the streams after a load (a saturation step leaves seconds of backlog).
DRAIN_WAIT_S = 120.0
DRAIN_POLL_S = 0.25


class NodeShare(msgspec.Struct):
    node: str  # host:port of a primary
    cpus: str
    slots: str  # ranges, as CLUSTER SLOTS has them
    partitions: list[int]
    players: int
    keys: int = 0  # DBSIZE after the run


class Instance:
    """One `walletd serve` (one worker): its own data_dir and flusher consumer name."""

    def __init__(self, work: Path, index: int, redis_url: str, store_url: str, cpus: str | None) -> None:
        self.index = index
        self.port = free_port()
        directory = work / f"walletd{index}"
        directory.mkdir(parents=True, exist_ok=True)
        self.config = walletd_config(directory, self.port, redis_url, 1, "pipelined", data_dir=directory / "var",
                                     store_url=store_url, flusher_consumer=f"bench-{index}")
        self.process = start_walletd(self.config, self.port, cpus)

    def parts(self) -> dict[str, int]:
        """Its processes: the HTTP server and the flush process it supervises (name -> pid)."""
        found = {f"walletd {self.index} HTTP": self.process.pid}
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        for child in children.read_text().split() if children.exists() else []:
            found[f"walletd {self.index} flush"] = int(child)
        return found


class Target:
    """A setup under load: walletd instances on one Redis (or one cluster), their
    players, the ledger store they share, and the Redis processes to meter."""

    def __init__(self, name: str, work: Path, redis_url: str, redis_pids: dict[str, int], cluster: bool) -> None:
        self.name = name
        self.work = work
        self.redis_url = redis_url
        self.redis_pids = redis_pids
        self.cluster = cluster
        self.keys = Keys(1)  # the instances' partition count, once the first one is configured
        self.store_url = f"sqlite:///{work / 'ledger.db'}"
        self.players = work / "players.txt"
        self.instances: list[Instance] = []

    def add_instance(self, cpus: str | None) -> None:
        """One more walletd; the first one creates the bench players (through walletd's own code)."""
        self.instances.append(Instance(self.work, len(self.instances), self.redis_url, self.store_url, cpus))
        if len(self.instances) == 1:
            settings = config.load(str(self.instances[0].config))
            self.keys = Keys(settings.wallet.partitions)  # the default, or WALLETD_BENCH_CONFIG_EXTRA's
            tokens = asyncio.run(fixtures.create_players(settings, self.redis_url))
            fixtures.write_players(tokens, self.players)

    @property
    def ports(self) -> list[int]:
        return [instance.port for instance in self.instances]

    def pids(self) -> dict[str, int]:
        return {name: pid for instance in self.instances for name, pid in instance.parts().items()} | self.redis_pids

    def client(self) -> redis.Redis | RedisCluster:
        if self.cluster:
            return RedisCluster.from_url(self.redis_url, decode_responses=True)
        return redis.Redis.from_url(self.redis_url, decode_responses=True)

    def wait_drained(self) -> None:
        """Until the flushers have emptied the streams: a setup's backlog must not take the
        next one's CPU (raises when they do not within DRAIN_WAIT_S)."""
        deadline = time.monotonic() + DRAIN_WAIT_S
        with contextlib.closing(self.client()) as client:
            while (left := sum(pipelined(client, [("XLEN", self.keys.ledger(p))
                                                  for p in range(self.keys.partitions)]))) > 0:
                if time.monotonic() > deadline:
                    raise SystemExit(f"bench: {self.name}: {left:,} ledger entries still in Redis {DRAIN_WAIT_S:g} "
                                     f"s after the load: the flushers did not store them")
                time.sleep(DRAIN_POLL_S)

    def stored_exactly_once(self) -> str:
        """Once drained, the store holds each partition's entries once each: its count and
        highest sequence equal Redis's counter of entries written (raises otherwise)."""
        self.wait_drained()
        with contextlib.closing(self.client()) as client:
            seqs = pipelined(client, [("GET", self.keys.seq(p)) for p in range(self.keys.partitions)])
        expected = {p: (int(n), int(n)) for p, n in enumerate(seqs) if n}
        store = open_store(self.store_url)
        try:
            got = {p: (s.count, s.seq_max) for p, s in store.partition_stats().items()}
        finally:
            store.close()
        if got != expected:
            wrong = {p: (got.get(p), want) for p, want in expected.items() if got.get(p) != want}
            raise SystemExit(f"bench: {self.name}: the store does not hold every entry exactly once "
                             f"(partition: (count, highest) stored, expected): {wrong}")
        entries = sum(n for n, _ in expected.values())
        return (f"{self.name}, {len(self.instances)} instance(s): {entries:,} ledger entries over {len(expected)} "
                f"partitions, each stored exactly once")

    def stop(self) -> None:
        for instance in self.instances:
            instance.process.stop()


def pipelined(client: redis.Redis | RedisCluster, commands: list[tuple[str, str]]) -> list:
    pipe = client.pipeline()  # redis-py's: no MULTI; a cluster's sends each command to its key's node
    for command in commands:
        pipe.execute_command(*command)
    return pipe.execute()


@contextlib.contextmanager
def single(work: Path, placement: Placement) -> Iterator[Target]:
    """One walletd against one redis-server (AOF always), on the placement's first cores."""
    redis_cpus = placement.redis_cpus(0)
    server: Process
    server, url = start_redis(work / "redis", ",".join(map(str, redis_cpus)) if redis_cpus else None)
    target = Target("single", work, url, {"redis": server.pid}, False)
    try:
        target.add_instance(placement.walletd_cpus(0))
        yield target
    finally:
        target.stop()
        server.stop()


@contextlib.contextmanager
def on_cluster(work: Path, placement: Placement) -> Iterator[Target]:
    """One walletd against a local cluster of PRIMARIES primaries, each node pinned; more
    instances are added by the caller (Target.add_instance)."""
    cluster = LocalCluster(work / "nodes", primaries=PRIMARIES).start()
    try:
        pids = {}
        for i, node in enumerate(cluster.primaries):
            assert node.process is not None
            pin(node.process.pid, placement.redis_cpus(i))
            pids[f"redis :{node.port}"] = node.process.pid
        target = Target("cluster", work, cluster.url, pids, True)
        try:
            target.add_instance(placement.walletd_cpus(0))
            yield target
        finally:
            target.stop()
    finally:
        cluster.stop()


def node_shares(target: Target) -> list[NodeShare]:
    """Which partitions (and so which bench players) each primary holds, in slot order;
    refuses a primary with none: the cluster setups would not measure what they say."""
    with contextlib.closing(redis.Redis.from_url(target.redis_url, decode_responses=True)) as client:
        ranges = client.execute_command("CLUSTER", "SLOTS")
    owners: dict[str, list[tuple[int, int]]] = {}
    for start, end, *holders in ranges:
        owners.setdefault(f"{holders[0][0]}:{holders[0][1]}", []).append((int(start), int(end)))
    keys = target.keys

    def owner(partition: int) -> str:
        slot = key_slot(keys.tag(partition).encode())
        return next(node for node, spans in owners.items() if any(a <= slot <= b for a, b in spans))

    by_partition = {p: owner(p) for p in range(keys.partitions)}
    players = [by_partition[partition_of(player, keys.partitions)] for player in fixtures.player_ids()]
    cpus = {f"127.0.0.1:{name.split(':')[1]}": cpus_of(pid) for name, pid in target.redis_pids.items()}
    shares = [NodeShare(node, cpus.get(node, "?"), ", ".join(f"{a}–{b}" for a, b in sorted(spans)),
                        [p for p, n in by_partition.items() if n == node], players.count(node))
              for node, spans in sorted(owners.items(), key=lambda owned: min(owned[1]))]
    empty = [s.node for s in shares if not s.players]
    if empty:
        raise SystemExit(f"bench: no bench player is on {', '.join(empty)} ({keys.partitions} partitions): "
                         f"the cluster setups would not use every node")
    return shares


def count_keys(shares: list[NodeShare]) -> None:
    """Each primary's DBSIZE, into its share."""
    for share in shares:
        with contextlib.closing(redis.Redis.from_url(f"redis://{share.node}")) as client:
            share.keys = int(client.dbsize())
