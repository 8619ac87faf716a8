"""The flusher's cost on Redis Cluster against one Redis: the same backlog drained by the
same in-process Flusher (app/ledger/flusher.py) into SQLite, from one redis-server and
from a local cluster of three primaries (tests/redis_cluster.py), both AOF always.

On one Redis a window's streams are read by one XREADGROUP; on a cluster each stream by
its own, pipelined per primary (a multi-stream read is CROSSSLOT there). This measures
what that costs the flush process: wall time and CPU seconds (this process: the event
loop and the store's thread) per 10,000 entries, alternating the targets ROUNDS times.
Unpinned, on whatever machine runs it: compare the two rows of one run, not runs.

    python3 -m bench.flusher_cluster [--entries N] [--partitions P] [--rounds R]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import redis
from redis.cluster import RedisCluster

from app.keys import Keys, partition_of
from app.redis_server import EmbeddedRedis
from app.runtime import Runtime
from app.settings import Settings
from bench.drain import fill
from tests.redis_cluster import local_cluster

ENTRIES = 50_000  # the backlog each drain moves
PARTITIONS = 256  # wallet.partitions' default
ROUNDS = 2  # drains per target, alternated
PER = 10_000  # costs are reported per this many entries


def players_by_partition(partitions: int) -> dict[int, list[str]]:
    """A few players in every partition (ids tried in order until each has 4)."""
    found: dict[int, list[str]] = {p: [] for p in range(partitions)}
    n = 0
    while any(len(players) < 4 for players in found.values()):
        player = f"fc{n}"
        found[partition_of(player, partitions)].append(player)
        n += 1
    return found


async def drain(url: str, work: Path, partitions: int) -> tuple[int, float, float]:
    """(entries moved, wall seconds, CPU seconds) of one Flusher.drain() into a new SQLite."""
    settings = Settings(data_dir=str(work / "var"))
    settings.redis.url = url
    settings.storage.url = f"sqlite:///{work / 'ledger.db'}"
    settings.wallet.partitions = partitions
    runtime = Runtime(settings, url, ledger=True)  # not started: Redis is left as filled
    try:
        assert runtime.flusher is not None
        wall, cpu = time.perf_counter(), time.process_time()
        moved = await runtime.flusher.drain()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        await runtime.close()
    with contextlib.closing(sqlite3.connect(work / "ledger.db")) as db:
        (stored,) = db.execute("SELECT COUNT(*) FROM ledger").fetchone()
    if stored != moved:
        raise SystemExit(f"{url}: {moved} entries drained, {stored} in the store")
    return moved, wall, cpu


@contextlib.contextmanager
def targets(work: Path) -> Iterator[dict[str, tuple[str, redis.Redis | RedisCluster]]]:
    server = EmbeddedRedis(work / "one")
    url = server.start()
    try:
        with local_cluster(work / "cluster", primaries=3) as cluster:
            one = redis.Redis.from_url(url)
            spread = RedisCluster.from_url(cluster.url)
            try:
                yield {"one Redis": (url, one), "cluster (3 primaries)": (cluster.url, spread)}
            finally:
                one.close()
                spread.close()
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=ENTRIES)
    parser.add_argument("--partitions", type=int, default=PARTITIONS)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    args = parser.parse_args()
    keys = Keys(args.partitions)
    results: dict[str, list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="walletd-flusher-cluster-") as tmp, targets(Path(tmp)) as found:
        for round_no in range(args.rounds):
            for name, (url, client) in found.items():
                client.flushall()
                fill(client, keys, args.entries, players_by_partition(keys.partitions))
                moved, wall, cpu = asyncio.run(drain(url, Path(tmp) / f"{name[:3]}{round_no}", args.partitions))
                if moved != args.entries:
                    raise SystemExit(f"{name}: drained {moved} of {args.entries} entries")
                results.setdefault(name, []).append((wall, cpu))
    print(f"{args.entries} entries over {args.partitions} partitions, drained into SQLite, {args.rounds} rounds "
          f"(medians):")
    print("| target | entries/s | wall s per 10k | CPU s per 10k |\n|---|---|---|---|")
    for name, runs in results.items():
        wall = statistics.median(w for w, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        print(f"| {name} | {args.entries / wall:,.0f} | {wall * PER / args.entries:.3f} | "
              f"{cpu * PER / args.entries:.3f} |")


if __name__ == "__main__":
    main()
