"""walletd's benchmark: saturation against a bare endpoint, open-loop latency,
the realistic locust scenarios; a Markdown report and a plot in bench/results/.

    python3 -m bench.run            # the full run (make bench), about 5 minutes
    python3 -m bench.run --smoke    # CI's budget guard: locust at a modest rate

Placement: walletd and the bare endpoint on --server-cpus; this runner, wrk,
the open-loop client, locust and redis-server on --load-cpus.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import uvloop

from app import settings as config
from app.redis_server import free_port
from bench import fixtures, loads, report
from bench.servers import Process, start_bare, start_redis, start_walletd, walletd_config

RESULTS = Path(__file__).resolve().parent / "results"
LATENCY_SHARES = (0.25, 0.5, 0.8)
SMOKE_P99_MAX_MS = 50.0


class Bench:
    """The processes of one run and the measurements taken so far."""

    def __init__(self, work: Path, args: argparse.Namespace) -> None:
        self.work = work
        self.args = args
        self.redis, self.redis_url = start_redis(work / "redis", args.load_cpus)
        self.walletd: Process | None = None
        self.walletd_port = 0
        self.players_file = work / "players.txt"
        self.commands: list[str] = []

    def start_walletd(self, workers: int = 1, script_client: str = "pipelined", cpus: str | None = None) -> None:
        if self.walletd is not None:
            self.walletd.stop()
        self.walletd_port = free_port()
        conf = walletd_config(self.work, self.walletd_port, self.redis_url, workers, script_client)
        self.walletd = start_walletd(conf, self.walletd_port, cpus or self.args.server_cpus)
        if not self.players_file.exists():
            tokens = asyncio.run(fixtures.create_players(config.load(str(conf)), self.redis_url))
            fixtures.write_players(tokens, self.players_file)

    def stop(self) -> None:
        if self.walletd is not None:
            self.walletd.stop()
        self.redis.stop()


def saturation(bench: Bench, bare_port: int) -> dict[str, loads.Saturation]:
    args = bench.args
    measured = {}
    for target, port in (("bare", bare_port), ("walletd", bench.walletd_port)):
        for kind in ("oia", "stargame"):
            server = bench.walletd if target == "walletd" else None
            measured[f"{target} {kind}"] = loads.wrk(port, kind, target, bench.players_file, args.connections,
                                                      args.seconds, bench.redis, server)
    return measured


def latency(bench: Bench, saturated: float) -> list[loads.Latency]:
    players = fixtures.read_players(bench.players_file)
    results = []
    for share in LATENCY_SHARES:
        rate = max(1.0, saturated * share)
        results.append(uvloop.run(loads.open_loop(bench.walletd_port, players, rate, share, bench.args.latency_seconds,
                                                  bench.redis, bench.walletd, bench.redis_url)))
    return results


def full_run(bench: Bench) -> int:
    args = bench.args
    bare = start_bare(bench.work, bare_port := free_port(), args.server_cpus)
    try:
        bench.start_walletd()
        sat = saturation(bench, bare_port)
        lat = latency(bench, sat["walletd oia"].rate)
        scenario = loads.locust(bench.walletd_port, bench.players_file, bench.work, args.locust_users,
                                args.locust_seconds)
        bench.start_walletd(script_client="redis-py")
        sat["walletd oia, redis-py"] = loads.wrk(bench.walletd_port, "oia", "walletd", bench.players_file,
                                                 args.connections, args.seconds, bench.redis, bench.walletd)
        both = f"{args.server_cpus},{args.load_cpus}"
        bench.start_walletd(workers=2, cpus=both)
        sat["walletd oia, 2 workers"] = loads.wrk(bench.walletd_port, "oia", "walletd", bench.players_file,
                                                  args.connections, args.seconds, bench.redis, bench.walletd)
    finally:
        bare.stop()
    written = report.write(RESULTS, args, sat, lat, scenario)
    print(f"report: {written}")
    return 0


def smoke_run(bench: Bench) -> int:
    """Fails (exit 1) on any failed request or a p99 over the platform's 50 ms."""
    bench.start_walletd()
    result = loads.locust(bench.walletd_port, bench.players_file, bench.work, bench.args.locust_users,
                          bench.args.locust_seconds)
    print(report.locust_table(result))
    problems = []
    if result.failures or result.requests == 0:
        problems.append(f"{result.failures} of {result.requests} requests failed")
    if result.p99_ms > SMOKE_P99_MAX_MS:
        problems.append(f"p99 {result.p99_ms} ms is over the {SMOKE_P99_MAX_MS} ms budget")
    for problem in problems:
        print(f"bench smoke: FAIL: {problem}")
    if not problems:
        print(f"bench smoke: OK: {result.requests} requests, no failure, p99 {result.p99_ms} ms")
    return 1 if problems else 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python3 -m bench.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="CI guard: short locust run, fail on error or p99")
    parser.add_argument("--server-cpus", default="0", help="taskset CPU list for walletd and the bare endpoint")
    parser.add_argument("--load-cpus", default="1", help="taskset CPU list for load generators and Redis")
    parser.add_argument("--seconds", type=float, default=10.0, help="each wrk saturation run")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections")
    parser.add_argument("--latency-seconds", type=float, default=15.0, help="each open-loop rate")
    parser.add_argument("--locust-users", type=int, default=20)
    parser.add_argument("--locust-seconds", type=float, default=20.0)
    args = parser.parse_args(argv)
    if args.smoke:
        args.server_cpus = args.load_cpus = None  # a guard, not a measurement: no pinning
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.load_cpus is not None:
        os.sched_setaffinity(0, {int(c) for c in args.load_cpus.split(",")})
    with tempfile.TemporaryDirectory(prefix="walletd-bench-") as tmp:
        bench = Bench(Path(tmp), args)
        try:
            return smoke_run(bench) if args.smoke else full_run(bench)
        finally:
            bench.stop()


if __name__ == "__main__":
    started = time.monotonic()
    code = main()
    print(f"bench: {time.monotonic() - started:.0f} s", file=sys.stderr)
    sys.exit(code)
