"""What the partition count costs, for choosing wallet.partitions (README "Scaling out").

Two things change with the count:

- how evenly a Redis Cluster spreads the partitions: each partition's keys share one
  hash tag, "{p<n>}", so a partition lives in one slot (crc16 of the tag % 16384) and
  a primary holds the partitions whose slots it serves. `--spread` prints, for slots
  split evenly over 3, 6, 12 and 32 primaries (what `redis-cli --cluster create` and
  tests/redis_cluster.py do), the fewest and most partitions any primary holds;
- what every partition costs every walletd process, all the time: the cold-start guard
  reads every partition's seq counter (Redis) and highest stored seq (the store) each
  second in every server worker and in the flush process; the flusher's idle tick reads
  every stream; its start creates a consumer group per stream and re-reads its pending
  entries; it claims dead consumers' entries (XAUTOCLAIM per stream) every
  flusher.claim_interval_ms. Measured on an empty deployment (idle: the floor every
  process pays) against a private durable redis-server (AOF, appendfsync always, the
  embedded one) and a SQLite store, each the median of ROUNDS.

    python3 -m bench.partition_cost [--spread] [--partitions 16 256 1024]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import redis
from redis.crc import key_slot

from app.keys import Keys
from app.ledger.guard import look_at_redis, stored_seqs
from app.redis_server import EmbeddedRedis
from app.runtime import Runtime
from app.settings import Settings

SLOTS = 16384
PRIMARIES = (3, 6, 12, 32)
COUNTS = (16, 256, 1024)
ROUNDS = 21  # per measure: the median of this many, so one scheduling hiccup does not count


def spread(partitions: int, primaries: int) -> list[int]:
    """Partitions per primary, slots split evenly in order (the last takes the remainder)."""
    share = SLOTS // primaries
    held = [0] * primaries
    for partition in range(partitions):
        held[min(key_slot(Keys(partitions).seq(partition).encode()) // share, primaries - 1)] += 1
    return held


def print_spread(counts: list[int]) -> None:
    print("| partitions | primaries | fewest | most | ideal | worst deviation |")
    print("|---|---|---|---|---|---|")
    for partitions in counts:
        for primaries in PRIMARIES:
            held = spread(partitions, primaries)
            ideal = partitions / primaries
            worst = max(abs(min(held) - ideal), abs(max(held) - ideal)) / ideal
            print(f"| {partitions} | {primaries} | {min(held)} | {max(held)} | {ideal:.1f} | {worst:.0%} |")


async def median_ms(work: Callable[[], Awaitable[object]], rounds: int = ROUNDS) -> float:
    took = []
    for _ in range(rounds):
        started = time.perf_counter()
        await work()
        took.append(time.perf_counter() - started)
    return statistics.median(took) * 1000


async def once_ms(work: Callable[[], Awaitable[object]]) -> float:
    return await median_ms(work, 1)


async def costs(url: str, directory: Path, partitions: int) -> dict[str, float]:
    settings = Settings(data_dir=str(directory / f"var{partitions}"))
    settings.redis.url = url
    settings.storage.url = f"sqlite:///{directory / f'ledger{partitions}.db'}"
    settings.wallet.partitions = partitions
    redis.Redis.from_url(url).flushall()
    async with Runtime(settings, url, ledger=True) as runtime:
        flusher, guard, store = runtime.flusher, runtime.guard, runtime.store
        assert flusher is not None and store is not None
        keys = runtime.wallet.keys

        async def store_read() -> None:
            await asyncio.to_thread(stored_seqs, store, partitions)

        measured = {"flusher start: consumer groups": await once_ms(flusher.setup),
                    "flusher start: own pending re-read and claim": await once_ms(flusher.recover)}
        measured |= {"guard check (every second, every process)": await median_ms(guard.check),
                     "  of which the store's seq_max reads": await median_ms(store_read),
                     "  of which Redis's seq counters": await median_ms(lambda: look_at_redis(runtime.redis, keys)),
                     "flusher idle tick (every tick_ms)": await median_ms(flusher.tick),
                     "flusher claim round (every claim_interval_ms)": await median_ms(flusher.claim_all, 5)}
        return measured


async def measure(counts: list[int]) -> None:
    with tempfile.TemporaryDirectory(prefix="walletd-partition-cost-") as name:
        directory = Path(name)
        server = EmbeddedRedis(directory / "redis")
        url = server.start()
        try:
            table = {count: await costs(url, directory, count) for count in counts}
        finally:
            server.stop()
    print("| ms (median) | " + " | ".join(f"{count} partitions" for count in counts) + " |")
    print("|---|" + "---|" * len(counts))
    for what in table[counts[0]]:
        print(f"| {what} | " + " | ".join(f"{table[count][what]:.1f}" for count in counts) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python3 -m bench.partition_cost")
    parser.add_argument("--spread", action="store_true", help="only the cluster spread table (no Redis)")
    parser.add_argument("--partitions", type=int, nargs="+", default=list(COUNTS))
    args = parser.parse_args()
    print_spread(args.partitions)
    if not args.spread:
        print()
        asyncio.run(measure(args.partitions))


if __name__ == "__main__":
    main()
