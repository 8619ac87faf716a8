"""The cluster bench's report: bench/results/cluster.md (and cluster.json, the raw
numbers), with the machine, versions, placement and command that produced them."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from bench.report import cpu_model, versions
from bench.servers import CONFIG_EXTRA_ENV

if TYPE_CHECKING:
    from bench.cluster import Run, Step

WALLETD, REDIS = "walletd", "redis"
HTTP, FLUSH = " HTTP", " flush"  # a walletd instance's two processes (bench/cluster_setups.py Instance.parts)
SINGLE = "single"


def cpu_per_request(step: Step, role: str, part: str = "") -> float:
    """µs of CPU per answered request of all the step's processes of a role (and part:
    a walletd's " HTTP" or " flush" process)."""
    return sum(p.us_per_request for p in step.cpu if p.name.startswith(role) and p.name.endswith(part))


class Mean(msgspec.Struct):
    """One setup's steps of one load, over the rounds."""

    setup: str
    load: str
    rounds: int
    rate: float  # answered req/s (saturation) or offered (open loop)
    p99_ms: float
    walletd_us: float  # CPU per request, all its processes
    http_us: float  # of which the HTTP processes' (the hot path, where cluster routing runs)
    flush_us: float  # and the flush processes'
    redis_us: float


def means(run: Run) -> list[Mean]:
    groups: dict[tuple[str, str], list[Step]] = {}
    for step in run.steps:
        groups.setdefault((step.setup, step.load), []).append(step)
    found = []
    for (setup, load), steps in groups.items():
        results = [s.closed or s.open for s in steps]
        n = len(steps)
        found.append(Mean(setup, load, n, sum(r.rate for r in results if r) / n,
                          sum(r.percentiles_ms["p99"] for r in results if r) / n,
                          sum(cpu_per_request(s, WALLETD) for s in steps) / n,
                          sum(cpu_per_request(s, WALLETD, HTTP) for s in steps) / n,
                          sum(cpu_per_request(s, WALLETD, FLUSH) for s in steps) / n,
                          sum(cpu_per_request(s, REDIS) for s in steps) / n))
    return found


def against(value: float, base: float) -> str:
    return f"{value:.0f} against {base:.0f} µs ({value / base:.2f}×)" if base else f"{value:.0f} µs"


def ratios(run: Run) -> list[str]:
    """Each setup over single, per load (means over the rounds): throughput, p99, CPU per request."""
    found = means(run)
    base = {m.load: m for m in found if m.setup == SINGLE}
    lines = []
    for m in found:
        b = base.get(m.load)
        if m.setup == SINGLE or b is None:
            continue
        rate = f"throughput {m.rate:,.0f} against {b.rate:,.0f} req/s ({m.rate / b.rate:.2f}×), " \
            if m.load != "open loop oia" else f"at {m.rate:,.0f} req/s: "
        lines.append(f"{m.setup} / single, {m.load} (mean of {m.rounds} against {b.rounds}): {rate}"
                     f"p99 {m.p99_ms:.1f} against {b.p99_ms:.1f} ms; CPU per request: walletd "
                     f"{against(m.walletd_us, b.walletd_us)} (HTTP {against(m.http_us, b.http_us)}, flush "
                     f"{against(m.flush_us, b.flush_us)}), Redis {against(m.redis_us, b.redis_us)}")
    return lines


def walletd_split(step: Step) -> str:
    return (f"{cpu_per_request(step, WALLETD):.0f} ({cpu_per_request(step, WALLETD, HTTP):.0f} + "
            f"{cpu_per_request(step, WALLETD, FLUSH):.0f})")


def saturation_table(run: Run) -> str:
    rows = ["| setup | round | load | req/s | per instance | errors | deadline refusals | p50 / p99 / p99.9 ms "
            "| walletd CPU µs/req (HTTP + flush) | Redis CPU µs/req |", "|---" * 10 + "|"]
    for step in run.steps:
        if step.closed is None:
            continue
        c, p = step.closed, step.closed.percentiles_ms
        rows.append(f"| {step.setup} | {step.round} | {step.load} | {c.rate:,.0f} | "
                    f"{' + '.join(f'{r:,.0f}' for r in c.per_instance)} | {c.errors} | {c.refused} | "
                    f"{p['p50']:.2f} / {p['p99']:.2f} / {p['p99.9']:.2f} | {walletd_split(step)} | "
                    f"{cpu_per_request(step, REDIS):.0f} |")
    return "\n".join(rows)


def open_loop_table(run: Run) -> str:
    rows = ["| setup | round | offered req/s | p50 | p99 | p99.9 | max | errors | > 50 ms | walletd CPU µs/req "
            "(HTTP + flush) | Redis CPU µs/req |", "|---" * 11 + "|"]
    for step in run.steps:
        if step.open is None:
            continue
        o, p = step.open, step.open.percentiles_ms
        rows.append(f"| {step.setup} | {step.round} | {o.rate:,.0f} | {p['p50']:.2f} | {p['p99']:.2f} | "
                    f"{p['p99.9']:.2f} | {p['max']:.2f} | {o.errors} | {o.over_50ms} | "
                    f"{walletd_split(step)} | {cpu_per_request(step, REDIS):.0f} |")
    return "\n".join(rows)


def process_table(run: Run) -> str:
    rows = ["| setup | round | load | process | CPUs | CPU (share of one core) | CPU µs per request |",
            "|---" * 7 + "|"]
    for step in run.steps:
        for p in step.cpu:
            rows.append(f"| {step.setup} | {step.round} | {step.load} | {p.name} | {p.cpus} | {p.share:.0%} | "
                        f"{p.us_per_request:.0f} |")
    return "\n".join(rows)


def nodes_table(run: Run) -> str:
    rows = ["| primary | CPUs | hash slots | partitions | bench players | keys after the run |", "|---" * 6 + "|"]
    rows += [f"| {s.node} | {s.cpus} | {s.slots} | {len(s.partitions)} | {s.players} | {s.keys:,} |"
             for s in run.shares]
    lists = [f"- {s.node}: {', '.join(map(str, s.partitions))}" for s in run.shares]
    return "\n".join([*rows, "", "Partitions on each primary:", "", *lists])


def rate_text(args: argparse.Namespace) -> str:
    if args.open_rate:
        return f"{args.open_rate:g} requests/s"
    return f"{args.open_share:.0%} of single's mean OIA saturation"


def extra_text() -> str:
    extra = os.environ.get(CONFIG_EXTRA_ENV, "")
    return f", with {CONFIG_EXTRA_ENV}='{extra}' added to every walletd config" if extra else ""


def summary(run: Run) -> str:
    return "\n".join(["bench cluster:", *(f"  {line}" for line in ratios(run) + run.checks)])


def write(results: Path, run: Run, command: str) -> Path:
    args = run.args
    text = f"""# walletd on Redis Cluster, {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}

Machine: {os.cpu_count()} cores, {cpu_model()}, Linux {os.uname().release}; load average at the end
{", ".join(f"{v:.1f}" for v in os.getloadavg())}.
Versions: {versions()}.
Command: `{command}` (`make bench-cluster CORES=N` runs it with `--cores N`){extra_text()}.

Setups (bench/cluster.py): **single** = one walletd (one worker) against one redis-server; **cluster** = one walletd
against a local Redis Cluster of {len(run.shares)} primaries (the same binary) on the same cores, so that the
difference is the per-process cost of cluster routing; **cluster, N instances** = N walletd instances (one worker
each, own data_dir and flusher consumer, one shared SQLite ledger store) against that cluster, the load spread over
them (one wrk per instance with an equal share of the connections; latencies merged over all requests). Every Redis:
AOF, `appendfsync always`. Each walletd's flush process runs on its instance's core. single and cluster are measured
in turns ({args.rounds} rounds, single first in odd rounds, cluster first in even ones), each step after the
previous setup's flushers had emptied its streams.

Placement: {run.placement.describe()}.

## Partitions on the cluster's primaries ({run.partitions} partitions, 1,004 bench players)

{nodes_table(run)}

## Cluster over single (means over the rounds)

{chr(10).join(f"- {line}" for line in ratios(run))}

## Saturation (wrk, {args.connections} connections in all, {args.seconds:g} s after a 2 s warm-up)

"oia" is a signed changebalance BET with a new transaction id each time; "stargame" a writeBet bet. Deadline
refusals: answers refusing, unbooked, a request that waited past the platform's budget (walletd keeping it under
overload), counted apart from the errors. CPU µs/req: the CPU of all the setup's walletd processes (HTTP and flush)
or Redis nodes over the step, per answered request (`/proc/<pid>/stat`).

{saturation_table(run)}

## Latency at an equal offered rate

Open loop (bench/openloop.py, latency from when each request was due): OIA BETs at {rate_text(args)} for
{args.open_seconds:g} s after a 2 s warm-up, an equal share to each instance, the same rate for every setup.

{open_loop_table(run) if any(s.open for s in run.steps) else "Not measured (--open-share 0, or no OIA load)."}

## Every ledger entry stored once

{chr(10).join(f"- {line}" for line in run.checks)}

## Per process

{process_table(run)}
"""
    results.mkdir(parents=True, exist_ok=True)
    path = results / "cluster.md"
    path.write_text(text)
    raw = {"command": command, "placement": run.placement, "nodes": run.shares, "steps": run.steps,
           "means": means(run), "checks": run.checks}
    (results / "cluster.json").write_bytes(msgspec.json.format(msgspec.json.encode(raw)))
    return path
