"""walletd on Redis Cluster against walletd on one Redis, in one run (README "Scaling out").

    python3 -m bench.cluster --cores N     # make bench-cluster CORES=N; a few minutes
    python3 -m bench.cluster --smoke       # the mechanism only: short, no pinning; fails on any error

Three setups, one after the other, each measured with the same loads:
  single    one walletd (one worker) against one redis-server (AOF, appendfsync always);
  cluster   the same walletd against a local Redis Cluster of three primaries (the same
            binary, AOF always: tests/redis_cluster.py's), on the same cores;
  cluster, N instances: N walletd (one worker each, own data_dir and flusher consumer, one
            shared SQLite ledger store) against that cluster, the load spread over them.
single against cluster is the per-process cost of cluster routing (the same cores, so
it shows on 2 cores too); the N instances are the scaling, which needs cores to scale onto:
`--cores N` places every process (bench/placement.py) so that the same command shows
it on a larger machine. The loads (bench/spread.py): wrk at saturation, OIA
changebalance BETs and StarGame writeBets, and open-loop OIA BETs at a fixed share of
single's OIA saturation (latency at an equal offered rate). Per-process CPU comes from
/proc/<pid>/stat. The 1,004 bench players are created on each Redis, and on the
cluster their partitions must be on every primary (the run stops otherwise). After the
loads, the flushers must have stored every ledger entry exactly once: each partition's
count and highest sequence in the store equal its sequence counter in Redis.

Writes bench/results/cluster.md (and cluster.json, the raw numbers).

The cluster starter is tests/redis_cluster.py, shared with the tests rather than
copied: the bench runs from a source tree (as `make bench` does), which has tests/.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import redis
import uvloop
from redis.cluster import RedisCluster
from redis.crc import key_slot

from app import settings as config
from app.keys import Keys, partition_of
from app.ledger import open_store
from app.redis_server import free_port
from app.settings import WalletSettings
from bench import fixtures, spread
from bench.placement import Placement, cpus_of, pin, plan
from bench.servers import cpu_seconds, start_redis, start_walletd, walletd_config
from tests.redis_cluster import LocalCluster

RESULTS = Path(__file__).resolve().parent / "results"
PRIMARIES = 3
# With --cores: at least two instances, so that sharing the flusher work shows on 2 cores too.
INSTANCES_MIN = 2
# The flushers get this long after the loads to store every entry (the backlog of a saturation step is seconds).
DRAIN_WAIT_S = 120.0
DRAIN_POLL_S = 0.25
# --smoke: open-loop OIA BETs at this rate (a few per cent of one worker's saturation), this long.
SMOKE_RATE = 100.0
SMOKE_SECONDS = 5.0


class ProcessCpu(msgspec.Struct):
    name: str
    cpus: str  # where it may run (its affinity)
    share: float  # of one core, over the step
    us_per_request: float  # its CPU over the step's answered requests


class Step(msgspec.Struct):
    setup: str  # single, cluster, cluster, N instances
    load: str  # "oia", "stargame" (wrk), "open loop oia"
    closed: spread.Closed | None
    open: spread.Open | None
    cpu: list[ProcessCpu]


class NodeShare(msgspec.Struct):
    node: str  # host:port of a primary
    cpus: str
    slots: str  # ranges, as CLUSTER SLOTS has them
    partitions: int
    players: int
    keys: int = 0  # DBSIZE after the run


class Instance:
    """One `walletd serve` (one worker) of a setup."""

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

    def stop(self) -> None:
        self.process.stop()


class Meter:
    """CPU seconds of named processes over a step (each process alone, not its children's)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.began = time.monotonic()
        self.start = {name: own_cpu(pid) for name, pid in pids.items()}

    def shares(self, requests: int) -> list[ProcessCpu]:
        elapsed = time.monotonic() - self.began
        used = {name: own_cpu(pid) - self.start[name] for name, pid in self.pids.items()}
        return [ProcessCpu(name, cpus_of(self.pids[name]), round(seconds / elapsed, 3),
                           round(seconds * 1e6 / max(1, requests), 1)) for name, seconds in used.items()]


def own_cpu(pid: int) -> float:
    with contextlib.suppress(FileNotFoundError):
        return cpu_seconds(pid)
    return 0.0


class Run:
    """The processes of one run and its steps so far."""

    def __init__(self, work: Path, args: argparse.Namespace, placement: Placement) -> None:
        self.work = work
        self.args = args
        self.placement = placement
        self.steps: list[Step] = []
        self.shares: list[NodeShare] = []
        self.checks: list[str] = []
        self.keys = Keys(WalletSettings().partitions)  # the bench config keeps the default

    def measure(self, setup: str, instances: list[Instance], redis_pids: dict[str, int], players: Path) -> None:
        """Every load of the run against these instances."""
        pids = {name: pid for instance in instances for name, pid in instance.parts().items()} | redis_pids
        ports = [instance.port for instance in instances]
        for kind in self.args.kinds:
            meter = Meter(pids)
            closed = spread.closed_loop(ports, kind, players, self.args.connections, self.args.seconds,
                                        self.placement.load_cpus(), self.work)
            print(f"bench cluster: {setup} {kind}: {closed.rate:,.0f} req/s, p99 {closed.percentiles_ms['p99']:.1f} "
                  f"ms, errors {closed.errors}", file=sys.stderr)
            self.steps.append(Step(setup, kind, closed, None, meter.shares(closed.requests)))
        rate = self.open_rate()
        if rate:
            meter = Meter(pids)
            opened = uvloop.run(spread.open_loop(ports, fixtures.read_players(players), rate,
                                                 self.args.open_seconds))
            print(f"bench cluster: {setup} open loop {rate:,.0f}/s: p99 {opened.percentiles_ms['p99']:.1f} ms, "
                  f"errors {opened.errors}", file=sys.stderr)
            self.steps.append(Step(setup, "open loop oia", None, opened, meter.shares(opened.sent)))

    def open_rate(self) -> float:
        """The open-loop rate: --open-rate, or a share of single's OIA saturation (0: not measured)."""
        if self.args.open_rate:
            return float(self.args.open_rate)
        single = next((s for s in self.steps if s.setup == "single" and s.load == "oia" and s.closed), None)
        if single is None or not self.args.open_share or single.closed is None:
            return 0.0
        return max(1.0, single.closed.rate * self.args.open_share)


def create_players(conf: Path, url: str, players: Path) -> None:
    tokens = asyncio.run(fixtures.create_players(config.load(str(conf)), url))
    fixtures.write_players(tokens, players)


def single(run: Run) -> None:
    """One walletd, one redis-server."""
    redis_cpus = run.placement.redis_cpus(0)
    server, url = start_redis(run.work / "redis", ",".join(map(str, redis_cpus)) if redis_cpus else None)
    instance: Instance | None = None
    try:
        store = f"sqlite:///{run.work / 'single-ledger.db'}"
        instance = Instance(run.work / "single", 0, url, store, run.placement.walletd_cpus(0))
        players = run.work / "players-single.txt"
        create_players(instance.config, url, players)
        run.measure("single", [instance], {"redis": server.pid}, players)
        with contextlib.closing(redis.Redis.from_url(url, decode_responses=True)) as client:
            run.checks.append(stored_exactly_once("single", client, run.keys, store))
    finally:
        if instance is not None:
            instance.stop()
        server.stop()


def on_cluster(run: Run, cluster: LocalCluster) -> None:
    """One walletd, then N, against the cluster."""
    for i, node in enumerate(cluster.primaries):
        assert node.process is not None
        pin(node.process.pid, run.placement.redis_cpus(i))
    redis_pids = {f"redis :{node.port}": node.process.pid for node in cluster.primaries if node.process}
    store = f"sqlite:///{run.work / 'cluster-ledger.db'}"
    instances: list[Instance] = []
    try:
        instances.append(Instance(run.work / "cluster", 0, cluster.url, store, run.placement.walletd_cpus(0)))
        players = run.work / "players-cluster.txt"
        create_players(instances[0].config, cluster.url, players)
        run.shares = node_shares(cluster, run.keys, run.placement)
        run.measure("cluster", instances, redis_pids, players)
        for index in range(1, run.args.instances):
            instances.append(Instance(run.work / "cluster", index, cluster.url, store,
                                      run.placement.walletd_cpus(index)))
        run.measure(f"cluster, {len(instances)} instances", instances, redis_pids, players)
        with contextlib.closing(RedisCluster.from_url(cluster.url, decode_responses=True)) as client:
            run.checks.append(stored_exactly_once(f"cluster, {len(instances)} instances", client, run.keys, store))
        for share in run.shares:
            with contextlib.closing(redis.Redis.from_url(f"redis://{share.node}")) as node_client:
                share.keys = int(node_client.dbsize())
    finally:
        for instance in instances:
            instance.stop()


def node_shares(cluster: LocalCluster, keys: Keys, placement: Placement) -> list[NodeShare]:
    """Which partitions (and so which bench players) each primary holds; refuses a
    primary with none: the cluster setups would not measure what they say."""
    with contextlib.closing(cluster.primaries[0].client()) as client:
        ranges = client.execute_command("CLUSTER", "SLOTS")
    owners = {f"{holders[0][0]}:{holders[0][1]}": [] for _, _, *holders in ranges}
    for start, end, *holders in ranges:
        owners[f"{holders[0][0]}:{holders[0][1]}"].append((int(start), int(end)))

    def owner(partition: int) -> str:
        slot = key_slot(keys.tag(partition).encode())
        return next(node for node, spans in owners.items() if any(a <= slot <= b for a, b in spans))

    by_partition = {p: owner(p) for p in range(keys.partitions)}
    players = [by_partition[partition_of(player, keys.partitions)] for player in fixtures.player_ids()]
    cpus = {f"127.0.0.1:{node.port}": cpus_of(node.process.pid) for node in cluster.primaries if node.process}
    shares = [NodeShare(node, cpus.get(node, "?"), ", ".join(f"{a}–{b}" for a, b in sorted(spans)),
                        sum(1 for n in by_partition.values() if n == node), players.count(node))
              for node, spans in sorted(owners.items(), key=lambda owned: min(owned[1]))]
    empty = [s.node for s in shares if not s.players]
    if empty:
        raise SystemExit(f"bench: no bench player is on {', '.join(empty)} ({keys.partitions} partitions): "
                         f"the cluster setups would not use every node")
    return shares


def stored_exactly_once(setup: str, client: redis.Redis | RedisCluster, keys: Keys, store_url: str) -> str:
    """Waits for the streams to empty, then checks the store holds each partition's entries
    once each (count and highest sequence equal to Redis's counter); raises otherwise."""
    deadline = time.monotonic() + DRAIN_WAIT_S
    while (left := sum(pipelined(client, [("XLEN", keys.ledger(p)) for p in range(keys.partitions)]))) > 0:
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: {setup}: {left:,} ledger entries still in Redis {DRAIN_WAIT_S:g} s after the "
                             f"loads: the flushers did not store them")
        time.sleep(DRAIN_POLL_S)
    seqs = pipelined(client, [("GET", keys.seq(p)) for p in range(keys.partitions)])
    expected = {p: (int(n), int(n)) for p, n in enumerate(seqs) if n}
    store = open_store(store_url)
    try:
        got = {p: (s.count, s.seq_max) for p, s in store.partition_stats().items()}
    finally:
        store.close()
    if got != expected:
        wrong = {p: (got.get(p), want) for p, want in expected.items() if got.get(p) != want}
        raise SystemExit(f"bench: {setup}: the store does not hold every entry exactly once "
                         f"(partition: (count, highest) stored, expected): {wrong}")
    entries = sum(n for n, _ in expected.values())
    return f"{setup}: {entries:,} ledger entries over {len(expected)} partitions, each stored exactly once"


def pipelined(client: redis.Redis | RedisCluster, commands: list[tuple[str, str]]) -> list:
    pipe = client.pipeline(transaction=False) if isinstance(client, redis.Redis) else client.pipeline()
    for command in commands:
        pipe.execute_command(*command)
    return pipe.execute()


@contextlib.contextmanager
def cluster_of(work: Path) -> Iterator[LocalCluster]:
    cluster = LocalCluster(work / "cluster-nodes", primaries=PRIMARIES).start()
    try:
        yield cluster
    finally:
        cluster.stop()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python3 -m bench.cluster", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cores", type=int, help="pin every process to the first N cores (bench/placement.py)")
    parser.add_argument("--instances", type=int,
                        help="walletd instances on the cluster (default: one per walletd core, at least 2)")
    parser.add_argument("--seconds", type=float, default=10.0, help="each wrk saturation run")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections in all, split over instances")
    parser.add_argument("--kinds", default="oia,stargame", help="wrk loads: oia, stargame")
    parser.add_argument("--open-share", type=float, default=0.5,
                        help="open-loop OIA rate as a share of single's OIA saturation (0: none)")
    parser.add_argument("--open-rate", type=float, default=0.0,
                        help="open-loop OIA rate in requests/s (instead of --open-share)")
    parser.add_argument("--open-seconds", type=float, default=10.0)
    parser.add_argument("--smoke", action="store_true", help="a short run of the mechanism; fails on any error")
    args = parser.parse_args(argv)
    args.kinds = [k for k in args.kinds.split(",") if k]
    if not set(args.kinds) <= {"oia", "stargame"}:
        parser.error("--kinds: oia, stargame")
    if args.smoke:
        # No saturation (a shared CI machine's would only add deadline refusals): a modest fixed rate.
        args.kinds, args.open_rate, args.open_seconds = [], SMOKE_RATE, SMOKE_SECONDS
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    placement = plan(args.cores)
    if args.instances is None:
        args.instances = max(INSTANCES_MIN, len(placement.walletd_cores) if placement.pinned else INSTANCES_MIN)
    if placement.pinned:
        os.sched_setaffinity(0, set(placement.load_cores))  # this runner is a load generator
    from bench import cluster_report  # noqa: PLC0415 - matplotlib and locust's metadata, only for the report

    with tempfile.TemporaryDirectory(prefix="walletd-bench-cluster-") as tmp:
        run = Run(Path(tmp), args, placement)
        single(run)
        with cluster_of(run.work) as cluster:
            on_cluster(run, cluster)
    errors = sum((s.closed.errors if s.closed else 0) + (s.open.errors if s.open else 0) for s in run.steps)
    print(cluster_report.summary(run))
    if not args.smoke:  # a smoke run's numbers are no measurement: the report keeps the last real run
        written = cluster_report.write(RESULTS, run, " ".join(["python3 -m bench.cluster", *sys.argv[1:]]))
        print(f"report: {written}")
    if errors:
        print(f"bench cluster: FAIL: {errors} requests failed", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    started = time.monotonic()
    code = main()
    print(f"bench: {time.monotonic() - started:.0f} s", file=sys.stderr)
    sys.exit(code)
