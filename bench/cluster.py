"""walletd on Redis Cluster against walletd on one Redis, in one run (README "Scaling out").

    python3 -m bench.cluster --cores N     # make bench-cluster CORES=N; about 5 minutes
    python3 -m bench.cluster --smoke       # the mechanism only: short, no pinning; fails on any error

Three setups (bench/cluster_setups.py), measured with the same loads:
  single       one walletd (one worker) against one redis-server (AOF, appendfsync always);
  cluster      one walletd against a local Redis Cluster of three primaries (the same
               binary, AOF always), on the same cores as single;
  N instances  N walletd instances (one worker each, own data_dir and flusher consumer,
               one shared SQLite ledger store) against that cluster, the load spread over them.
single against cluster is the per-process cost of cluster routing: the same cores, so it
shows on 2 cores too. Both stay up and are measured in turns, single, cluster, cluster,
single (--rounds 2: a linear drift of a shared machine's load cancels out of the means),
each after the other's flushers have emptied its streams. The N instances are the
scaling, which needs cores to scale onto: `--cores N` places every process
(bench/placement.py), so the same command shows it on a larger machine.

The loads (bench/spread.py): wrk at saturation (OIA changebalance BETs, StarGame
writeBets), and open-loop OIA BETs at a fixed share of single's OIA saturation (latency at
an equal offered rate). Per-process CPU from /proc/<pid>/stat. The 1,004 bench players are
created on each Redis; on the cluster their partitions must be on every primary (the run
stops otherwise). At the end the flushers must have stored every ledger entry exactly once.

Writes bench/results/cluster.md (and cluster.json, the raw numbers).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import msgspec
import uvloop

from bench import cluster_setups, spread
from bench.cluster_setups import NodeShare, Target
from bench.fixtures import read_players
from bench.placement import Placement, cpus_of, plan
from bench.servers import cpu_seconds

RESULTS = Path(__file__).resolve().parent / "results"
# With --cores: at least two instances, so that sharing the flusher work shows on 2 cores too.
INSTANCES_MIN = 2
# --smoke: open-loop OIA BETs at this rate (a few per cent of one worker's saturation), this long.
SMOKE_RATE = 100.0
SMOKE_SECONDS = 5.0


class ProcessCpu(msgspec.Struct):
    name: str
    cpus: str  # where it may run (its affinity)
    share: float  # of one core, over the step
    us_per_request: float  # its CPU over the step's answered requests


class Step(msgspec.Struct):
    setup: str  # "single", "cluster", "cluster, N instances"
    round: int  # 1.. (--rounds); the N instances' steps are round 1
    load: str  # "oia", "stargame" (wrk), "open loop oia"
    closed: spread.Closed | None
    open: spread.Open | None
    cpu: list[ProcessCpu]


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
    try:
        return cpu_seconds(pid)
    except FileNotFoundError:  # it ended (a flush process restarted): its CPU is its parent's now
        return 0.0


class Run:
    """One run's settings and its measurements so far."""

    def __init__(self, work: Path, args: argparse.Namespace, placement: Placement) -> None:
        self.work = work
        self.args = args
        self.placement = placement
        self.partitions = 0  # the cluster instances' (the default unless WALLETD_BENCH_CONFIG_EXTRA says)
        self.steps: list[Step] = []
        self.shares: list[NodeShare] = []
        self.checks: list[str] = []

    def closed(self, target: Target, setup: str, kind: str, round_: int) -> None:
        meter = Meter(target.pids())
        result = spread.closed_loop(target.ports, kind, target.players, self.args.connections, self.args.seconds,
                                    self.placement.load_cpus(), self.work)
        print(f"bench cluster: {setup} {kind}: {result.rate:,.0f} req/s, p99 {result.percentiles_ms['p99']:.1f} ms, "
              f"errors {result.errors}, deadline refusals {result.refused}", file=sys.stderr)
        self.steps.append(Step(setup, round_, kind, result, None, meter.shares(result.requests)))
        target.wait_drained()

    def open(self, target: Target, setup: str, round_: int) -> None:
        rate = self.open_rate()
        if not rate:
            return
        meter = Meter(target.pids())
        result = uvloop.run(spread.open_loop(target.ports, read_players(target.players), rate, self.args.open_seconds))
        print(f"bench cluster: {setup} open loop {rate:,.0f}/s: p99 {result.percentiles_ms['p99']:.1f} ms, "
              f"errors {result.errors}", file=sys.stderr)
        self.steps.append(Step(setup, round_, "open loop oia", None, result, meter.shares(result.sent)))
        target.wait_drained()

    def open_rate(self) -> float:
        """--open-rate, or a share of single's mean OIA saturation (0: not measured)."""
        if self.args.open_rate:
            return float(self.args.open_rate)
        rates = [s.closed.rate for s in self.steps if s.setup == "single" and s.load == "oia" and s.closed]
        return max(1.0, sum(rates) / len(rates) * self.args.open_share) if rates and self.args.open_share else 0.0

    def errors(self) -> int:
        return sum((s.closed.errors if s.closed else 0) + (s.open.errors if s.open else 0) for s in self.steps)


def in_turns(run: Run, single: Target, cluster: Target) -> None:
    """Each load on single and on cluster, in turns: single first in odd rounds, cluster in even ones."""
    for kind in run.args.kinds:
        for r in range(1, run.args.rounds + 1):
            for target in (single, cluster) if r % 2 else (cluster, single):
                run.closed(target, target.name, kind, r)
    for r in range(1, run.args.rounds + 1):
        for target in (single, cluster) if r % 2 else (cluster, single):
            run.open(target, target.name, r)


def scaled(run: Run, cluster: Target) -> None:
    """The cluster with --instances walletd instances, each load once."""
    while len(cluster.instances) < run.args.instances:
        cluster.add_instance(run.placement.walletd_cpus(len(cluster.instances)))
    setup = f"cluster, {len(cluster.instances)} instances"
    for kind in run.args.kinds:
        run.closed(cluster, setup, kind, 1)
    run.open(cluster, setup, 1)


def measure(run: Run) -> None:
    with cluster_setups.single(run.work / "single", run.placement) as single, \
            cluster_setups.on_cluster(run.work / "cluster", run.placement) as cluster:
        run.partitions = cluster.keys.partitions
        run.shares = cluster_setups.node_shares(cluster)
        in_turns(run, single, cluster)
        scaled(run, cluster)
        run.checks = [single.stored_exactly_once(), cluster.stored_exactly_once()]
        cluster_setups.count_keys(run.shares)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python3 -m bench.cluster", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cores", type=int, help="pin every process within the first N cores (bench/placement.py)")
    parser.add_argument("--instances", type=int,
                        help="walletd instances on the cluster at the end (default: one per walletd core, at least 2)")
    parser.add_argument("--rounds", type=int, default=2, help="turns of single and cluster (ABBA order)")
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
    if not set(args.kinds) <= {"oia", "stargame"} or args.rounds < 1:
        parser.error("--kinds: oia, stargame; --rounds: at least 1")
    if args.smoke:
        # No saturation (a shared CI machine's would only add deadline refusals): a modest fixed rate.
        args.kinds, args.rounds, args.open_rate, args.open_seconds = [], 1, SMOKE_RATE, SMOKE_SECONDS
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
        measure(run)
    print(cluster_report.summary(run))
    if not args.smoke:  # a smoke run's numbers are no measurement: the report keeps the last real run
        command = " ".join(["python3 -m bench.cluster", *(argv if argv is not None else sys.argv[1:])])
        print(f"report: {cluster_report.write(RESULTS, run, command)}")
    if run.errors():
        print(f"bench cluster: FAIL: {run.errors()} requests failed", file=sys.stderr)
    return 1 if run.errors() else 0


if __name__ == "__main__":
    started = time.monotonic()
    code = main()
    print(f"bench: {time.monotonic() - started:.0f} s", file=sys.stderr)
    sys.exit(code)
