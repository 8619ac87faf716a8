"""What routing by hash slot costs per call: the same trivial script, on the same one
Redis Cluster node, through the standalone PipelinedRedis and through
ClusterPipelinedRedis (app/redis_cluster_pipe.py), in alternating rounds of one run.

The node holds all 16384 slots, so both clients reach the same server and every call
goes to it; the difference is the cluster client's own work per call (the key's
CRC16 slot, the map look-up, the redirect bookkeeping). Reported: calls per second
and this process's CPU time per call (the client side; Redis's is the same for both).
Not a test: numbers vary with the machine; run it alone.

    python3 -m bench.cluster_pipe [--seconds 3] [--rounds 3] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import redis
import uvloop

from app.keys import Keys
from app.redis_cluster_pipe import SLOTS, ClusterPipelinedRedis
from app.redis_pipe import PipelinedRedis, evalsha_head
from app.redis_server import find_binary, wait_ready

# A script with one key that does next to nothing: the client's cost shows, not Redis's.
SCRIPT = "return 1"
SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()  # noqa: S324 - Redis names scripts so
# Keys of this many partitions, cycled (walletd's default partition count).
PARTITIONS = 256
PORT = 27411
TIMEOUT_S = 5.0


@contextlib.contextmanager
def one_node_cluster(directory: Path) -> Iterator[str]:
    """A redis-server in cluster mode serving every slot alone (no AOF: Redis's cost is not measured)."""
    process = subprocess.Popen([find_binary(), "--port", str(PORT), "--bind", "127.0.0.1", "--dir", str(directory),
                                "--save", "", "--appendonly", "no", "--cluster-enabled", "yes"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{PORT}"
    try:
        wait_ready(url, process, 30.0)
        client = redis.Redis.from_url(url, decode_responses=True)
        with contextlib.closing(client):
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, SLOTS - 1)  # type: ignore[no-untyped-call]
            deadline = time.monotonic() + 30
            while "cluster_state:ok" not in client.execute_command("CLUSTER", "INFO"):  # type: ignore[no-untyped-call]
                assert time.monotonic() < deadline, "the one-node cluster did not become ok"
                time.sleep(0.05)
            client.script_load(SCRIPT)
        yield url
    finally:
        process.terminate()
        process.wait()


async def drive(client: PipelinedRedis | ClusterPipelinedRedis, seconds: float, concurrency: int) -> tuple[int, float]:
    """Calls made and CPU seconds used in `seconds` by `concurrency` callers."""
    keys = [Keys(PARTITIONS).account_at(p, "bench") for p in range(PARTITIONS)]
    head = evalsha_head(SHA, 1, 1)
    await client.evalsha_encoded(head, (keys[0],))  # connected (and mapped) before the clock starts
    stop = time.monotonic() + seconds
    calls = 0

    async def caller(offset: int) -> None:
        nonlocal calls
        i = offset
        while time.monotonic() < stop:
            await client.evalsha_encoded(head, (keys[i % PARTITIONS],))
            i += 1
            calls += 1

    cpu = time.process_time()
    await asyncio.gather(*(caller(n) for n in range(concurrency)))
    return calls, time.process_time() - cpu


async def measure(url: str, seconds: float, rounds: int, concurrency: int) -> dict[str, list[tuple[float, float]]]:
    results: dict[str, list[tuple[float, float]]] = {"standalone": [], "cluster": []}
    for _ in range(rounds):
        for name, rows in results.items():
            client = (PipelinedRedis(url, TIMEOUT_S, TIMEOUT_S) if name == "standalone"
                      else ClusterPipelinedRedis(url, TIMEOUT_S, TIMEOUT_S))
            try:
                calls, cpu = await drive(client, seconds, concurrency)
            finally:
                await client.aclose()
            rows.append((calls / seconds, cpu / calls * 1e6))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=64)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory, one_node_cluster(Path(directory)) as url:
        results = uvloop.run(measure(url, options.seconds, options.rounds, options.concurrency))
    print(f"{options.rounds} rounds of {options.seconds:g} s each, {options.concurrency} concurrent callers, "
          f"uvloop; median of the rounds")
    for name, rows in results.items():
        rates, costs = [rate for rate, _ in rows], [cost for _, cost in rows]
        print(f"  {name:<10} {statistics.median(rates):>9,.0f} calls/s   "
              f"{statistics.median(costs):6.1f} µs CPU per call   (rounds: "
              + ", ".join(f"{rate:,.0f}/s {cost:.1f} µs" for rate, cost in rows) + ")")
    extra = statistics.median(c for _, c in results["cluster"]) - statistics.median(c for _, c in results["standalone"])
    print(f"  routing costs {extra:+.1f} µs CPU per call")


if __name__ == "__main__":
    main()
