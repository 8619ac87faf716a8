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

if TYPE_CHECKING:
    from bench.cluster import Run, Step

WALLETD, REDIS = "walletd", "redis"


def cpu_per_request(step: Step, role: str) -> float:
    """µs of CPU per answered request of all the step's processes of a role."""
    return sum(p.us_per_request for p in step.cpu if p.name.startswith(role))


def baseline(run: Run, load: str) -> Step | None:
    return next((s for s in run.steps if s.setup == "single" and s.load == load), None)


def saturation_table(run: Run) -> str:
    rows = ["| setup | load | req/s | per instance | × single | errors | deadline refusals "
            "| p50 / p99 / p99.9 ms | walletd CPU µs/req | Redis CPU µs/req |", "|---" * 10 + "|"]
    for step in run.steps:
        if step.closed is None:
            continue
        c, base = step.closed, baseline(run, step.load)
        ratio = c.rate / base.closed.rate if base and base.closed and base.closed.rate else 0.0
        p = c.percentiles_ms
        rows.append(f"| {step.setup} | {step.load} | {c.rate:,.0f} | {' + '.join(f'{r:,.0f}' for r in c.per_instance)} "
                    f"| {ratio:.2f} | {c.errors} | {c.refused} | {p['p50']:.2f} / {p['p99']:.2f} / {p['p99.9']:.2f} "
                    f"| {cpu_per_request(step, WALLETD):.0f} | {cpu_per_request(step, REDIS):.0f} |")
    return "\n".join(rows)


def open_loop_table(run: Run) -> str:
    rows = ["| setup | offered req/s | p50 | p99 | p99.9 | max | errors | > 50 ms | walletd CPU µs/req "
            "| Redis CPU µs/req |", "|---|---|---|---|---|---|---|---|---|---|"]
    for step in run.steps:
        if step.open is None:
            continue
        o, p = step.open, step.open.percentiles_ms
        rows.append(f"| {step.setup} | {o.rate:,} | {p['p50']:.2f} | {p['p99']:.2f} | {p['p99.9']:.2f} | "
                    f"{p['max']:.2f} | {o.errors} | {o.over_50ms} | {cpu_per_request(step, WALLETD):.0f} | "
                    f"{cpu_per_request(step, REDIS):.0f} |")
    return "\n".join(rows)


def process_table(run: Run) -> str:
    rows = ["| setup | load | process | CPUs | CPU (share of one core) | CPU µs per request |",
            "|---|---|---|---|---|---|"]
    for step in run.steps:
        for p in step.cpu:
            rows.append(f"| {step.setup} | {step.load} | {p.name} | {p.cpus} | {p.share:.0%} | "
                        f"{p.us_per_request:.0f} |")
    return "\n".join(rows)


def nodes_table(run: Run) -> str:
    rows = ["| primary | CPUs | hash slots | partitions | bench players | keys after the run |",
            "|---|---|---|---|---|---|"]
    rows += [f"| {s.node} | {s.cpus} | {s.slots} | {s.partitions} | {s.players} | {s.keys:,} |" for s in run.shares]
    return "\n".join(rows)


def ratios(run: Run) -> list[str]:
    """cluster over single per load: throughput, p99 and walletd's CPU per request."""
    lines = []
    for step in run.steps:
        base = next((s for s in run.steps if s.setup == "single" and s.load == step.load), None)
        if step.setup == "single" or base is None:
            continue
        now, then = (step.closed, base.closed) if step.closed else (step.open, base.open)
        if now is None or then is None:
            continue
        rate = f"throughput {now.rate / then.rate:.2f}×, " if step.closed else ""
        lines.append(f"{step.setup}/single, {step.load}: {rate}p99 {now.percentiles_ms['p99']:.1f} against "
                     f"{then.percentiles_ms['p99']:.1f} ms, walletd CPU per request "
                     f"{cpu_per_request(step, WALLETD) / max(1.0, cpu_per_request(base, WALLETD)):.2f}×, "
                     f"Redis CPU per request "
                     f"{cpu_per_request(step, REDIS) / max(1.0, cpu_per_request(base, REDIS)):.2f}×")
    return lines


def summary(run: Run) -> str:
    return "\n".join(["bench cluster:", *(f"  {line}" for line in ratios(run) + run.checks)])


def rate_text(args: argparse.Namespace) -> str:
    return f"{args.open_rate:g} requests/s" if args.open_rate else f"{args.open_share:.0%} of single's OIA saturation"


def write(results: Path, run: Run, command: str) -> Path:
    args = run.args
    text = f"""# walletd on Redis Cluster, {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}

Machine: {os.cpu_count()} cores, {cpu_model()}, Linux {os.uname().release}.
Versions: {versions()}.
Command: `{command}` (`make bench-cluster CORES=N` runs it with `--cores N`).

Setups, one after the other: **single** = one walletd (one worker) against one redis-server; **cluster** = the same
walletd against a local Redis Cluster of {len(run.shares)} primaries (same binary), on the same cores, so the
difference is the per-process cost of cluster routing; **cluster, N instances** = N walletd instances (one worker
each, own data_dir and flusher consumer, one shared SQLite ledger store) against that cluster, the load spread over them
(one wrk per instance, an equal share of the connections; latencies merged over all requests). Every Redis: AOF,
`appendfsync always`. Each walletd's flush process runs on its instance's core.

Placement: {run.placement.describe()}.

## Partitions on the cluster's primaries ({run.keys.partitions} partitions, 1,004 bench players)

{nodes_table(run)}

## Saturation (wrk, {args.connections} connections in all, {args.seconds:g} s after a 2 s warm-up)

"oia" is a signed changebalance BET with a new transaction id each time; "stargame" a writeBet bet. Deadline
refusals: answers refusing, unbooked, a request that waited past the platform's budget (walletd keeping it under
overload), apart from the errors. "× single": the
setup's throughput over single's, same load, same run. CPU µs/req: the CPU of all the setup's walletd processes
(HTTP and flush) or Redis nodes over the step, per answered request (`/proc/<pid>/stat`).

{saturation_table(run)}

## Latency at an equal offered rate

Open loop (bench/openloop.py, latency from when each request was due): OIA BETs at {rate_text(args)} for
{args.open_seconds:g} s after a 2 s warm-up, an equal share to each instance, the same rate for every setup.

{open_loop_table(run) if any(s.open for s in run.steps) else "Not measured (--open-share 0, or no OIA load)."}

## Cluster over single

{chr(10).join(f"- {line}" for line in ratios(run))}

## Every ledger entry stored once

{chr(10).join(f"- {line}" for line in run.checks)}

## Per process

{process_table(run)}
"""
    results.mkdir(parents=True, exist_ok=True)
    path = results / "cluster.md"
    path.write_text(text)
    raw = {"command": command, "placement": run.placement, "nodes": run.shares, "steps": run.steps,
           "checks": run.checks}
    (results / "cluster.json").write_bytes(msgspec.json.format(msgspec.json.encode(raw)))
    return path
