"""Load spread over several walletd instances, as a load balancer would spread it.

Closed loop: one wrk process per instance (wrk talks to one address), all started
together, each with an equal share of the connections; their answers are summed
and their latency distributions merged into one of every request: each wrk prints
its quantiles (bench/wrk/load.lua, WRK_QUANTILES), and each quantile step carries
that wrk's requests in it. Open loop: one bench/openloop.py client per instance in
this process, each at an equal share of the rate; their latencies are pooled.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import msgspec

from bench import fixtures
from bench.loads import EXPECT, TX_IDS, WARMUP_S, percentile, wrk_command
from bench.openloop import OpenLoop
from bench.servers import pinned

OPEN_LOOP_CONNECTIONS = 64  # in all, as bench.run's open-loop steps use with one instance
MARKS = {"p50": 0.5, "p99": 0.99, "p99.9": 0.999}


class Closed(msgspec.Struct):
    """wrk against every instance at once, merged."""

    rate: float  # answered requests/s, all instances
    requests: int
    errors: int  # socket errors and unexpected answers, deadline refusals apart
    refused: int  # deadline refusals: walletd keeping the platform's budget, nothing booked
    percentiles_ms: dict[str, float]  # p50, p99, p99.9, max
    per_instance: list[float]  # each instance's answered requests/s
    wrk_cpu: float  # all wrk processes, share of one core
    seconds: float
    command: str


class Open(msgspec.Struct):
    """The open-loop clients against every instance at once, pooled."""

    rate: float  # offered requests/s, all instances
    sent: int
    errors: int
    percentiles_ms: dict[str, float]  # p50, p99, p99.9, max
    over_50ms: int


def quantiles_of(out: str) -> list[tuple[float, int]]:
    """(percent, µs) pairs from a wrk run's WRK_QUANTILES line, ascending."""
    line = re.search(r"WRK_QUANTILES (\S+)", out)
    assert line, f"wrk printed no quantiles (bench/wrk/load.lua):\n{out[-2000:]}"
    return [(float(p), int(us)) for p, us in (pair.split(":") for pair in line[1].split(","))]


def merged_ms(parts: list[tuple[int, list[tuple[float, int]]]], q: float) -> float:
    """The q-quantile (0..1) of several wrk runs' requests together; parts: (requests,
    quantiles) each. Each quantile step (from the previous percent to this one) holds
    that share of the run's requests at the step's upper value: never below the truth."""
    weighted: list[tuple[int, float]] = []
    for requests, quantiles in parts:
        previous = 0.0
        for percent, us in quantiles:
            weighted.append((us, requests * (percent - previous) / 100))
            previous = percent
    assert weighted, "no wrk run to merge"
    weighted.sort()
    target = q * sum(weight for _, weight in weighted)
    seen = 0.0
    for us, weight in weighted:
        seen += weight
        if seen >= target * (1 - 1e-9):
            return us / 1000
    return weighted[-1][0] / 1000


def run_all(commands: list[list[str]], logs: list[Path]) -> list[tuple[str, float]]:
    """Runs the commands at once; each one's output and CPU seconds (from its rusage)."""
    processes = []
    for command, log in zip(commands, logs, strict=True):
        with open(log, "w") as out:
            processes.append(subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT))
    results = []
    for process, log, command in zip(processes, logs, commands, strict=True):
        # wait4, not wait: its rusage is the process's own CPU, whatever else ran meanwhile.
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode:
            raise RuntimeError(f"{' '.join(command[:6])} exited {process.returncode}:\n{log.read_text()[-2000:]}")
        results.append((log.read_text(), usage.ru_utime + usage.ru_stime))
    return results


def closed_loop(ports: list[int], kind: str, players: Path, connections: int, seconds: float,
                cpus: str | None, work: Path) -> Closed:
    """wrk against every port at once (after a warm-up of each), merged."""
    each = max(1, connections // len(ports))
    logs = [work / f"wrk-{port}.log" for port in ports]
    warmup = [pinned(cpus, wrk_command(port, kind, "walletd", players, each, WARMUP_S)) for port in ports]
    run_all(warmup, logs)
    commands = [pinned(cpus, wrk_command(port, kind, "walletd", players, each, seconds)) for port in ports]
    outputs = run_all(commands, logs)
    found = [json.loads(re.search(r"WRK_JSON (\{.*\})", out)[1]) for out, _ in outputs]  # type: ignore[index]
    for port, (out, _) in zip(ports, outputs, strict=True):
        first_bad = re.search(r"WRK_FIRST_BAD (.*)", out)
        if first_bad:
            print(f"wrk {kind} on :{port}: first unexpected answer: {first_bad[1]}", file=sys.stderr)
    parts = [(f["requests"], quantiles_of(out)) for f, (out, _) in zip(found, outputs, strict=True)]
    per_instance = [f["requests"] / (f["duration_us"] / 1e6) for f in found]
    duration = max(f["duration_us"] for f in found) / 1e6
    percentiles = {name: merged_ms(parts, q) for name, q in MARKS.items()}
    percentiles["max"] = max(f["max_us"] for f in found) / 1000
    refused = sum(f["deadline_refusals"] for f in found)
    errors = sum(f["socket_errors"] + f["bad_answers"] for f in found) - refused
    shown = " ".join(commands[0][commands[0].index("wrk"):][:5])
    return Closed(round(sum(per_instance)), sum(f["requests"] for f in found), errors, refused, percentiles,
                  [round(r) for r in per_instance], round(sum(cpu for _, cpu in outputs) / duration, 2), duration,
                  f"{len(ports)} × `{shown} -s bench/wrk/load.lua http://… -- players {kind} …`")


async def open_loop(ports: list[int], players: list[tuple[str, str, bool]], rate: float, seconds: float) -> Open:
    """OIA changebalance BETs at rate in all (an equal share to each port), latency from when each was due."""
    each = max(1, OPEN_LOOP_CONNECTIONS // len(ports))
    loads = [OpenLoop("127.0.0.1", port, fixtures.oia_bet_requests(players, next(TX_IDS)),
                      EXPECT[("walletd", "oia")].encode(), each) for port in ports]
    try:
        for load in loads:
            await load.open()
        results = await asyncio.gather(*(load.run(rate / len(ports), seconds, WARMUP_S) for load in loads))
    finally:
        for load in loads:
            load.close()
    ordered = sorted(latency for result in results for latency in result.latencies_us)
    percentiles = {name: percentile(ordered, q) for name, q in MARKS.items()}
    percentiles["max"] = ordered[-1] / 1000 if ordered else 0.0
    return Open(round(rate), sum(r.sent for r in results), sum(r.errors for r in results), percentiles,
                sum(1 for latency in ordered if latency > 50_000))

