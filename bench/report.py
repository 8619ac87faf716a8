"""The bench report: bench/results/report.md and latency.png, with the machine,
versions, placement and commands that produced the numbers."""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import NamedTuple

import matplotlib

matplotlib.use("Agg")  # no screen
import matplotlib.pyplot as plt  # after the backend is chosen

from app.redis_server import AOF_REWRITE_MIN_SIZE, binary_version, find_binary
from app.settings import FlusherSettings
from bench import drain
from bench.drain import Drain
from bench.floor import EPISODE_GAP_S, EPISODES_LISTED, LATENCY_THRESHOLD_MS, Floor, quantiles
from bench.loads import Backlog, Latency, Saturation, Scenario
from bench.metrics_cost import ORDER, SCRAPE_INTERVAL_S, MetricsCost, summary, table

GOAL_SHARE = 0.5  # the goal is stated at 50 % of saturation
GOAL_MARGIN_MS = 5.0  # walletd's p99.9 at most this much above the disk's
DRAIN_TARGET = 3.0  # issue 11: the flusher drains at least 3x one worker's booking saturation
FLUSHER = FlusherSettings()  # the defaults the drain runs with (the bench config sets none)
BOOKING_LOADS = ("walletd oia", "walletd stargame")  # one worker; each request writes one ledger entry
PACKAGES = ("starlette", "uvicorn", "uvloop", "httptools", "redis", "hiredis", "msgspec", "locust")


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def versions() -> str:
    # `wrk -v` exits 1 after printing its version.
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False).stdout.split("\n")[0]
    redis = ".".join(map(str, binary_version(find_binary())))
    packages = ", ".join(f"{p} {importlib.metadata.version(p)}" for p in PACKAGES)
    return f"Python {platform.python_version()}, redis-server {redis}, {wrk.strip()}; {packages}"


def saturation_table(sat: dict[str, Saturation]) -> str:
    bare = {"oia": sat["bare oia"].rate, "stargame": sat["bare stargame"].rate}
    rows = ["| load (wrk, closed loop) | req/s | ratio to bare | errors | closed-loop p50 / p99 ms "
            "| server CPU | Redis CPU |", "|---|---|---|---|---|---|---|"]
    for name, s in sat.items():
        base = bare["stargame" if "stargame" in name else "oia"]
        rows.append(f"| {name} | {s.rate:,.0f} | {s.rate / base:.2f} | {s.errors} | "
                    f"{s.closed_p50_ms:.2f} / {s.closed_p99_ms:.2f} | {s.server_cpu:.0%} | {s.redis_cpu:.0%} |")
    return "\n".join(rows)


def latency_table(lat: list[Latency]) -> str:
    rows = ["| offered | req/s | p50 | p90 | p99 | p99.9 | max | errors | > 50 ms | client send lag p99 "
            "| server CPU | Redis CPU | flusher backlog max | drained in |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in lat:
        p = r.percentiles_ms
        rows.append(f"| {share(r)[2:]} | {r.rate:,} | {p['p50']:.2f} | {p['p90']:.2f} | {p['p99']:.2f} | "
                    f"{p['p99.9']:.2f} | {p['max']:.2f} | {r.errors} | {r.over_50ms} | {r.send_lag_p99_ms:.2f} | "
                    f"{r.server_cpu:.0%} | {r.redis_cpu:.0%} | {r.backlog_max:,} entries | {r.drained_s} s |")
    return "\n".join(rows)


class Step(NamedTuple):
    name: str
    walletd_ms: dict[str, float]  # p50, p99, p99.9, max
    floor: Floor
    open_loop: bool  # latency from when each request was due (the floor's records are comparable)


def closed_loop_steps(sat: dict[str, Saturation]) -> list[Step]:
    return [Step(f"{name} (wrk)", {"p50": s.closed_p50_ms, "p99": s.closed_p99_ms, "p99.9": s.closed_p999_ms,
                                   "max": s.closed_max_ms}, s.floor, False)
            for name, s in sat.items() if s.floor is not None]


def open_loop_steps(lat: list[Latency]) -> list[Step]:
    return [Step(f"{r.rate:,} req/s{share(r)}", r.percentiles_ms, r.floor, True) for r in lat]


def share(r: Latency) -> str:
    """', 50 % of saturation, LABEL' as far as the step has them."""
    return (f", {r.share:.0%} of saturation" if r.share else "") + (f", {r.label}" if r.label else "")


def ms(values: dict[str, float]) -> str:
    return " / ".join(f"{values[k]:.1f}" for k in ("p50", "p99", "p99.9", "max"))


def events_text(floor: Floor) -> str:
    worst: dict[str, list[int]] = {}
    for e in floor.events:
        worst.setdefault(e.name, []).append(e.ms)
    return ", ".join(f"{name} {len(v)}× ≤ {max(v)}" for name, v in sorted(worst.items())) or "none"


def tail_table(steps: list[Step]) -> str:
    rows = ["| step | walletd p50 / p99 / p99.9 / max | disk sync p50 / p99 / p99.9 / max | durable append at "
            "the step's rate p50 / p99 / p99.9 / max | walletd p99.9 over the floor's | Redis LATENCY events "
            "≥ 5 ms (seconds × worst ms) | AOF growth, forks |", "|---|---|---|---|---|---|---|"]
    for step in steps:
        f = step.floor
        sync = quantiles([d * 1000 for _, d in f.calls()])
        records = quantiles([us / 1000 for us in f.records_us()]) if step.open_loop else None
        append = ms(records) if records else f"– (probe at {f.probe.rate:,.0f}/s)"
        over = f"{step.walletd_ms['p99.9'] - records['p99.9']:+.1f}" if records else "–"
        rows.append(f"| {step.name} | {ms(step.walletd_ms)} | {ms(sync)} | {append} | {over} | {events_text(f)} | "
                    f"{f.aof_bytes / 1e6:,.1f} MB, {f.forks} |")
    return "\n".join(rows)


def episodes_text(lat: list[Latency]) -> str:
    """Every open-loop step's answers over 50 ms, by episode, with what the disk did meanwhile."""
    parts = []
    for r in lat:
        slow = sum(e.answers for e in r.episodes)
        caused = sum(e.disk_caused for e in r.episodes)
        head = f"{r.rate:,} req/s{share(r)}"
        if not slow:
            parts.append(f"- {head}: no answer over 50 ms.")
            continue
        parts.append(f"- {head}: {slow} answers over 50 ms in {len(r.episodes)} episodes; a disk stall explains "
                     f"{caused}, **{slow - caused} the disk did not cause**.")
        start = r.floor.window[0]
        for e in r.episodes[:EPISODES_LISTED]:
            met = "; ".join(e.stalls[:4]) + (f"; {len(e.stalls) - 4} more" if len(e.stalls) > 4 else "")
            parts.append(f"  - {e.start - start:.2f}–{e.end - start:.2f} s: {e.answers} answers, worst "
                         f"{e.worst_ms:.0f} ms, disk-caused {e.disk_caused}; met: {met or 'no stall'}")
        if len(r.episodes) > EPISODES_LISTED:
            parts.append(f"  - and {len(r.episodes) - EPISODES_LISTED} more episodes")
    return "\n".join(parts)


def goal_text(lat: list[Latency]) -> str:
    """The issue's goal at 50 % of saturation, checked on the plain step (no rewrite)."""
    step = next((r for r in lat if r.share == GOAL_SHARE and not r.label), None)
    if step is None:
        return "No plain step at 50 % of saturation in this run."
    floor = quantiles([us / 1000 for us in step.floor.records_us()])["p99.9"]
    sync = quantiles([d * 1000 for _, d in step.floor.calls()])["p99.9"]
    over = step.percentiles_ms["p99.9"] - floor
    slow = sum(e.answers for e in step.episodes)
    not_disk = slow - sum(e.disk_caused for e in step.episodes)
    met = over <= GOAL_MARGIN_MS and not_disk == 0
    return (f"Goal at 50 % of saturation ({step.rate:,} req/s): walletd's p99.9 at most {GOAL_MARGIN_MS:g} ms "
            f"above the disk's (a durable append at the same rate, measured in the same step), and no answer "
            f"over 50 ms the disk did not cause. This run: p99.9 {step.percentiles_ms['p99.9']:.1f} ms against "
            f"the disk's {floor:.1f} ms ({over:+.1f} ms; a single sync's p99.9 was {sync:.1f} ms, a booking waits "
            f"for the sync in progress and then its own); {slow} answers over 50 ms, {not_disk} of them without "
            f"a disk stall to explain them: **{'met' if met else 'not met'}**.")


def rewrite_text(lat: list[Latency], bytes_per_booking: int) -> str:
    """What an AOF rewrite does to the 50 % step, and how often each threshold starts one."""
    plain = next((r for r in lat if r.share == GOAL_SHARE and not r.label), None)
    rewrite = next((r for r in lat if r.label), None)
    if plain is None or rewrite is None or not bytes_per_booking:
        return ""
    growth = plain.rate * bytes_per_booking  # bytes/s
    every = lambda size: size / growth  # noqa: E731 - seconds between rewrites at this rate
    row = lambda r: (f"| {share(r)[2:]} | {ms(r.percentiles_ms)} | {r.over_50ms} | {r.floor.forks} | "  # noqa: E731
                     f"{events_text(r.floor)} |")
    return f"""An OIA booking appended {bytes_per_booking:,} bytes to the AOF in this run (AOF growth over the
walletd oia wrk step / its requests). At {plain.rate:,} bookings/s the AOF grows {growth / 1e6:.1f} MB/s: Redis's
default (`auto-aof-rewrite-min-size 64mb`) starts a rewrite every {every(64 * 2**20):.0f} s, walletd's
embedded Redis (`{AOF_REWRITE_MIN_SIZE}`, its backstop) every {every(parse_size(AOF_REWRITE_MIN_SIZE)) / 60:.0f} min;
`walletd serve` rewrites it sooner, at quiet moments (README "Durability"; the steps here run back to back,
so none comes in this run). The same rate with and without a rewrite (BGREWRITEAOF halfway through the step):

| step | walletd p50 / p99 / p99.9 / max ms | answers > 50 ms | forks | Redis LATENCY events ≥ 5 ms |
|---|---|---|---|---|
{row(plain)}
{row(rewrite)}"""


def parse_size(size: str) -> int:
    units = {"kb": 2**10, "mb": 2**20, "gb": 2**30}
    return int(size[:-2]) * units[size[-2:].lower()]


def booking_saturation(sat: dict[str, Saturation]) -> tuple[str, float]:
    """The faster of one worker's booking loads in this run: entries/s the flusher must keep up with."""
    name = max(BOOKING_LOADS, key=lambda n: sat[n].rate)
    return name, sat[name].rate


def drain_summary(drained: list[Drain], sat: dict[str, Saturation]) -> str:
    name, rate = booking_saturation(sat)
    lines = [f"drain into {d.store}: {d.rate:,.0f} entries/s = {d.rate / rate:.2f}x walletd's single-worker "
             f"booking saturation ({name}, {rate:,.0f} req/s, one entry each); target >= {DRAIN_TARGET:g}x: "
             f"{'met' if d.rate >= DRAIN_TARGET * rate else 'NOT met'} ({d.settings})" for d in drained]
    return "\n".join(lines)


def drain_table(drained: list[Drain], sat: dict[str, Saturation]) -> str:
    name, rate = booking_saturation(sat)
    rows = [f"| store | settings | backlog | drained in | entries/s | × {name} saturation ({rate:,.0f}/s) "
            f"| target ≥ {DRAIN_TARGET:g}× |", "|---|---|---|---|---|---|---|"]
    for d in drained:
        met = "met" if d.rate >= DRAIN_TARGET * rate else "**not met**"
        rows.append(f"| {d.store} | {d.settings} | {d.entries:,} entries | {d.seconds:.2f} s (start-up "
                    f"{d.started_s:.2f} s before) | {d.rate:,.0f} | {d.rate / rate:.2f} | {met} |")
    if not any(d.store == "PostgreSQL" for d in drained):
        rows.append("| PostgreSQL | not measured: this walletd has no PostgreSQL store | | | | | |")
    return "\n".join(rows)


def backlog_table(backlogs: list[Backlog]) -> str:
    rows = ["| step (wrk, flusher on) | req/s | backlog max | at the load's end | emptied in after "
            "| backlog per second (the second's largest sample) |", "|---|---|---|---|---|---|"]
    for b in backlogs:
        per_second: dict[int, int] = {}
        for at, entries in b.series:
            per_second[int(at)] = max(per_second.get(int(at), 0), entries)
        series = " ".join(f"{entries:,}" for _, entries in sorted(per_second.items()))
        rows.append(f"| {b.step} | {b.rate:,.0f} | {b.highest:,} | {b.last:,} | {b.drained_s} s | {series} |")
    return "\n".join(rows)


def locust_table(s: Scenario) -> str:
    rows = [f"{s.users} users, {s.seconds:g} s, {s.rate} req/s, {s.requests} requests, {s.failures} failures, "
            f"p50 {s.p50_ms:g} ms, p99 {s.p99_ms:g} ms, max {s.max_ms:g} ms", "",
            "| request | count | failures | p50 ms | p99 ms | max ms |", "|---|---|---|---|---|---|"]
    for r in s.by_name:
        rows.append(f"| {r['Type']} {r['Name']} | {r['Request Count']} | {r['Failure Count']} | {r['50%']} | "
                    f"{r['99%']} | {float(r['Max Response Time']):.1f} |")
    rows += ["", *(f"- failed: {n} × {name}: {what[:200]}" for name, what, n in s.failed)]
    return "\n".join(rows)


def plot(lat: list[Latency], path: Path) -> None:
    figure, axes = plt.subplots(figsize=(8, 4.5))
    for r in lat:
        xs = [1 / (1 - q / 100) for q, _ in r.curve]  # 1, 2, 10, 100, 1000 ...: the tail spread out
        axes.plot(xs, [ms for _, ms in r.curve], marker="o", label=f"{r.rate:,} req/s ({share(r)[2:]})")
    axes.set_xscale("log")
    axes.set_yscale("log")
    ticks = [0, 50, 90, 99, 99.9, 99.99]
    axes.set_xticks([1 / (1 - q / 100) for q in ticks], [f"p{q:g}" for q in ticks])
    axes.axhline(50, color="red", linestyle="--", linewidth=1, label="50 ms platform budget")
    axes.set_ylabel("latency, ms (from when the request was due)")
    axes.set_title("walletd OIA changebalance BET, open loop, one worker")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def metrics_cost_text(measured: MetricsCost, args: argparse.Namespace) -> str:
    order = ", ".join("on" if on else "off" for on in ORDER)
    return f"""## The metrics' cost (`bench/metrics_cost.py`)

OIA saturation (wrk as above, {args.seconds:g} s after a 2 s warm-up) of a walletd with `[metrics] enabled = false`
and one with it true, in the order {order} (a linear drift of the machine's load cancels out of the means), one
worker on CPU {args.server_cpus}; with metrics on, `/metrics` is scraped every {SCRAPE_INTERVAL_S:g} s meanwhile
(Prometheus's default is 15 s). "walletd CPU" counts all its processes (the flush process too).

{table(measured)}

{summary(measured)}."""


def write(results: Path, args: argparse.Namespace, sat: dict[str, Saturation], lat: list[Latency],
          scenario: Scenario, drained: list[Drain], backlogs: list[Backlog], cost: MetricsCost) -> Path:
    results.mkdir(parents=True, exist_ok=True)
    floors = [s.floor for s in sat.values() if s.floor] + [r.floor for r in lat]
    probe_cpu = max(f.probe.cpu_seconds / max(1e-9, f.window[1] - f.window[0]) for f in floors)
    record_bytes = floors[-1].probe.record_bytes if floors else 0
    walletd_oia = sat.get("walletd oia")
    bytes_per_booking = walletd_oia.floor.aof_bytes // walletd_oia.requests if walletd_oia and walletd_oia.floor else 0
    threshold, gap = LATENCY_THRESHOLD_MS, EPISODE_GAP_S
    plot(lat, results / "latency.png")
    text = f"""# walletd benchmark, {time.strftime("%Y-%m-%d %H:%M")} UTC

Machine: {os.cpu_count()} cores, {cpu_model()}, {platform.system()} {platform.release()}.
Versions: {versions()}.
Placement (taskset): walletd and the bare endpoint on CPU {args.server_cpus}; wrk, the open-loop client,
locust, this runner and redis-server on CPU {args.load_cpus}. The two-worker row puts walletd on
CPUs {args.server_cpus},{args.load_cpus}, shared with the load.
walletd: one worker unless stated, Redis AOF `appendfsync always`, SQLite ledger, flusher on.

Command: `make bench` (= `python3 -m bench.run --server-cpus {args.server_cpus} --load-cpus {args.load_cpus}
--seconds {args.seconds:g} --connections {args.connections} --latency-seconds {args.latency_seconds:g}`)

## Saturation (wrk, {args.connections} connections, {args.seconds:g} s after a 2 s warm-up)

"oia" is a signed changebalance BET with a new transaction id each time; "stargame" is a writeBet
bet. The bare endpoint gets the same requests and answers a constant.

{saturation_table(sat)}

wrk command: `{next(iter(sat.values())).command}`

{metrics_cost_text(cost, args)}

## Latency at fixed offered rates (open loop, `bench/openloop.py`, OIA changebalance BET)

Requests are due at a fixed rate whatever the server does; latency counts from when a request was
due, so queueing shows. {args.latency_seconds:g} s per rate after a 2 s warm-up, 64 connections.

{latency_table(lat)}

![latency](latency.png)

## The tail next to the disk (`bench/floor.py`, `bench/fsyncprobe.py`)

Measured during every walletd step, in the same run:
- **disk sync**: a probe process appends records of an OIA booking's AOF size ({record_bytes:,} bytes) to a file
  beside the AOF and fdatasyncs it, as Redis does with `appendfsync always`, group-committing all records due
  by then; "disk sync" is each write + fdatasync. It runs during the step, not beside it, so a slow answer can
  be matched with a slow disk at the same moment. Its CPU on the load core: {probe_cpu:.0%} of a core at most.
- **durable append at the step's rate**: the probe's records are due at the step's offered rate (open loop,
  like the load; 1,000/s under wrk), and each one's latency runs from when it was due until its fdatasync
  returned: what any server that fsyncs before answering gets from this disk at this rate. It is the floor
  walletd's open-loop latencies are compared with.
- **Redis LATENCY events**: `latency-monitor-threshold {threshold}` ms, `LATENCY RESET` before each step,
  `LATENCY HISTORY` of every event after it (Redis keeps the worst per second).

{tail_table(closed_loop_steps(sat) + open_loop_steps(lat))}

{goal_text(lat)}

Answers over 50 ms, by episode (answers less than {gap:g} s apart), with the disk stalls over {threshold} ms
that overlapped each, longest first (probe syncs, Redis AOF events; Redis forks are shown but are not the
disk). An answer counts as caused by the disk when the disk stalls that overlapped its wait lasted at least
half of it in all, the probe's and Redis's summed apart (two views of one disk) and the larger taken
(queueing behind a stall at half load drains in about the stall's own length; Redis stamps an event
with the second it ended in, so one counts for any answer in that second):

{episodes_text(lat)}

## AOF rewrites

{rewrite_text(lat, bytes_per_booking)}

## The flusher: drain rate and backlog (`bench/drain.py`)

Drain rate: {drained[0].entries:,} ledger entries XADDed into the 16 partition streams (1,004 players' `open`
entries, then OIA BETs with every field a booking writes) of a Redis database of their own on the bench's
redis-server, with no flusher running; then `walletd flush` (walletd's default `[flusher]`: batch_max
{FLUSHER.batch_max:,} entries per transaction, read_max {FLUSHER.read_max} per XREADGROUP, tick
{FLUSHER.tick_ms} ms) starts on an empty store, pinned to CPU
{args.server_cpus}, and the runner samples the streams' length every {drain.SAMPLE_EVERY_S * 1000:g} ms until
it is 0. The rate counts from the first entry gone to the last (the process's start-up apart), and the store
is checked to hold exactly the backlog. PostgreSQL: {"the server named by " + drain.POSTGRES_ENV if
os.environ.get(drain.POSTGRES_ENV) else "a private pgserver (PostgreSQL 16) on this machine, on CPU " + args.load_cpus
+ " with Redis"}, a database of its own.

{drain_table(drained, sat)}

Backlog under saturation: the streams' total length sampled every 250 ms through each wrk step on walletd
(2 s warm-up, then {args.seconds:g} s), the flusher running as `walletd serve` runs it, then how long the
streams took to empty after the load stopped.

{backlog_table(backlogs)}

## Realistic scenarios (locust, `bench/locustfile.py`)

{locust_table(scenario)}

locust command: `{scenario.command}`. Locust's own percentiles are rounded and its client
is slow; use it for the scenario mix and errors, the tables above for speed.
"""
    path = results / "report.md"
    path.write_text(text)
    return path
