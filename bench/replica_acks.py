"""What `[redis] replica_acks = 1` costs (issue 13): OIA bets and StarGame writeBets against
a primary with one replica, both AOF `appendfsync always` on this machine, walletd with
replica_acks 0 and 1 in turns (0, 1, 1, 0: ABBA, a linear drift of the shared machine's
load cancels out of the means), in one run: closed-loop saturation (wrk: throughput and
its p50/p99/p99.9) and open-loop latency at a fixed rate (p50/p99/p99.9, answers over
the 50 ms budget, errors: an answer that is not OK/success counts, e.g. outcome unknown).

    python3 -m bench.replica_acks --seconds 5 --latency-seconds 10 [--rate 300]   # bench.run's options

The primary is bench.run's Redis, with hz 100 (README "Scaling out": WAIT's time-out is
honoured at hz's resolution); the replica runs beside it on the load CPUs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
import redis
import uvloop

from app import settings as config
from app.redis_server import find_binary, free_port, server_args
from bench import fixtures, loads
from bench.openloop import SLOW_US, OpenLoop
from bench.servers import READY_TIMEOUT_S, Process, pinned, start_walletd, walletd_config

if TYPE_CHECKING:
    from bench.run import Bench

ORDER = (0, 1, 1, 0)
KINDS = ("oia", "stargame")
# The open loop's default rate: well under one worker's saturation on this machine, so
# the figures are the WAIT's own cost, not queueing.
RATE = 300.0
# A replica confirming a write within this long is taken as following the primary.
PROMPT_ACK_MS = 200
EXPECT = {"oia": b'"status":"OK"', "stargame": b'"status":"success"'}


class OpenLatency(msgspec.Struct):
    rate: float
    sent: int
    errors: int
    p50_ms: float
    p99_ms: float
    p999_ms: float
    over_50ms: int


class Run(msgspec.Struct):
    replica_acks: int
    kind: str
    saturation: loads.Saturation
    latency: OpenLatency


def start_replica(directory: Path, primary_url: str, cpus: str | None) -> Process:
    directory.mkdir(parents=True, exist_ok=True)
    primary_port = primary_url.rsplit(":", 1)[1].split("/", maxsplit=1)[0]
    command = [*server_args(find_binary(), directory, free_port()), "--replicaof", "127.0.0.1", primary_port]
    return Process("replica", pinned(cpus, command), directory / "stdout.log")


def wait_replicated(primary_url: str) -> None:
    """Until the replica confirms a new write at once (after a sync it first confirms only
    with its once-a-second ACK)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    with contextlib.closing(redis.Redis.from_url(primary_url)) as primary:
        primary.config_set("hz", 100)
        while time.monotonic() < deadline:
            primary.set("bench:replication-probe", "1")
            primary.delete("bench:replication-probe")
            if primary.execute_command("WAIT", 1, PROMPT_ACK_MS) == 1:
                return
    raise RuntimeError("the replica did not sync")


def walletd_with_acks(bench: Bench, acks: int) -> None:
    """bench.start_walletd's walletd, with redis.replica_acks = acks."""
    bench.stop_walletd()
    bench.walletd_port = free_port()
    conf = walletd_config(bench.work, bench.walletd_port, bench.redis_url, 1, "pipelined")
    text = conf.read_text()
    conf.write_text(text.replace('script_client = "pipelined"\n',
                                 f'script_client = "pipelined"\nreplica_acks = {acks}\n', 1))
    bench.walletd = start_walletd(conf, bench.walletd_port, bench.args.server_cpus)
    if not bench.players_file.exists():
        tokens = asyncio.run(fixtures.create_players(config.load(str(conf)), bench.redis_url))
        fixtures.write_players(tokens, bench.players_file)


async def open_latency(port: int, kind: str, players: list[tuple[str, str, bool]], rate: float,
                       seconds: float) -> OpenLatency:
    requests = (fixtures.oia_bet_requests(players, next(loads.TX_IDS)) if kind == "oia"
                else fixtures.stargame_bet_requests(players))
    load = OpenLoop("127.0.0.1", port, requests, EXPECT[kind], loads.OPEN_LOOP_CONNECTIONS)
    await load.open()
    try:
        result = await load.run(rate, seconds, loads.WARMUP_S)
    finally:
        load.close()
    ordered = sorted(result.latencies_us)
    return OpenLatency(rate, result.sent, result.errors, loads.percentile(ordered, 0.5),
                       loads.percentile(ordered, 0.99), loads.percentile(ordered, 0.999),
                       sum(1 for v in ordered if v > SLOW_US))


def measure(bench: Bench, rate: float) -> list[Run]:
    args = bench.args
    replica = start_replica(bench.work / "replica", bench.redis_url, args.load_cpus)
    try:
        wait_replicated(bench.redis_url)
        runs = []
        for acks in ORDER:
            walletd_with_acks(bench, acks)
            players = fixtures.read_players(bench.players_file)
            for kind in KINDS:
                step = loads.wrk(bench.walletd_port, kind, "walletd", bench.players_file, args.connections,
                                 args.seconds, bench.redis, bench.walletd)
                latency = uvloop.run(open_latency(bench.walletd_port, kind, players, rate, args.latency_seconds))
                print(f"replica_acks {acks} {kind}: {step.rate:,.0f} req/s; open loop {rate:g}/s p99 "
                      f"{latency.p99_ms:.2f} ms, errors {latency.errors}", file=sys.stderr)
                runs.append(Run(acks, kind, step, latency))
        return runs
    finally:
        bench.stop_walletd()
        replica.stop()


def mean(runs: list[Run], acks: int, kind: str, value: Callable[[Run], float]) -> float:
    return statistics.mean(value(r) for r in runs if r.replica_acks == acks and r.kind == kind)


def table(runs: list[Run]) -> str:
    rows = ["| replica_acks | load | wrk req/s | wrk p50 / p99 / p99.9 ms | open loop rate | p50 / p99 / p99.9 ms "
            "| over 50 ms | errors |", "|---|---|---|---|---|---|---|---|"]
    for r in runs:
        s, lat = r.saturation, r.latency
        rows.append(f"| {r.replica_acks} | {r.kind} | {s.rate:,.0f} | {s.closed_p50_ms:.2f} / {s.closed_p99_ms:.2f} / "
                    f"{s.closed_p999_ms:.2f} | {lat.rate:g}/s | {lat.p50_ms:.2f} / {lat.p99_ms:.2f} / "
                    f"{lat.p999_ms:.2f} | {lat.over_50ms} | {s.errors} + {lat.errors} |")
    return "\n".join(rows)


def summary(runs: list[Run]) -> str:
    lines = []
    for kind in KINDS:
        off, on = (mean(runs, acks, kind, lambda r: r.saturation.rate) for acks in (0, 1))
        p50_off, p50_on = (mean(runs, acks, kind, lambda r: r.latency.p50_ms) for acks in (0, 1))
        p99_off, p99_on = (mean(runs, acks, kind, lambda r: r.latency.p99_ms) for acks in (0, 1))
        lines.append(f"{kind}: saturation {on:,.0f} / {off:,.0f} req/s with replica_acks 1 / 0 "
                     f"({on / off - 1:+.0%}); open-loop p50 {p50_on:.2f} / {p50_off:.2f} ms, "
                     f"p99 {p99_on:.2f} / {p99_off:.2f} ms")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from bench.run import parse_args, with_bench  # noqa: PLC0415 - run's options and Bench

    own = argparse.ArgumentParser(add_help=False)
    own.add_argument("--rate", type=float, default=RATE, help="the open loop's requests per second")
    known, rest = own.parse_known_args(argv)

    def work(bench: Bench) -> int:
        runs = measure(bench, known.rate)
        print(table(runs))
        print(summary(runs))
        return 0

    return with_bench(parse_args(rest), work)


if __name__ == "__main__":
    sys.exit(main())
