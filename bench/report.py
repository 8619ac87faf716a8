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

import matplotlib

matplotlib.use("Agg")  # no screen
import matplotlib.pyplot as plt  # noqa: E402 - after the backend is chosen

from app.redis_server import binary_version, find_binary  # noqa: E402
from bench.loads import Latency, Saturation, Scenario  # noqa: E402

PACKAGES = ("starlette", "uvicorn", "uvloop", "httptools", "redis", "hiredis", "msgspec", "locust")


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def versions() -> str:
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("\n")[0]
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
        rows.append(f"| {r.share:.0%} of saturation | {r.rate:,} | {p['p50']:.2f} | {p['p90']:.2f} | {p['p99']:.2f} | "
                    f"{p['p99.9']:.2f} | {p['max']:.2f} | {r.errors} | {r.over_50ms} | {r.send_lag_p99_ms:.2f} | "
                    f"{r.server_cpu:.0%} | {r.redis_cpu:.0%} | {r.backlog_max:,} entries | {r.drained_s} s |")
    return "\n".join(rows)


def locust_table(s: Scenario) -> str:
    rows = [f"{s.users} users, {s.seconds:g} s, {s.rate} req/s, {s.requests} requests, {s.failures} failures, "
            f"p50 {s.p50_ms:g} ms, p99 {s.p99_ms:g} ms, max {s.max_ms:g} ms", "",
            "| request | count | failures | p50 ms | p99 ms | max ms |", "|---|---|---|---|---|---|"]
    for r in s.by_name:
        rows.append(f"| {r['Type']} {r['Name']} | {r['Request Count']} | {r['Failure Count']} | {r['50%']} | "
                    f"{r['99%']} | {float(r['Max Response Time']):.1f} |")
    return "\n".join(rows)


def plot(lat: list[Latency], path: Path) -> None:
    figure, axes = plt.subplots(figsize=(8, 4.5))
    for r in lat:
        xs = [1 / (1 - q / 100) for q, _ in r.curve]  # 1, 2, 10, 100, 1000 ...: the tail spread out
        axes.plot(xs, [ms for _, ms in r.curve], marker="o", label=f"{r.rate:,} req/s ({r.share:.0%} of saturation)")
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


def write(results: Path, args: argparse.Namespace, sat: dict[str, Saturation], lat: list[Latency],
          scenario: Scenario) -> Path:
    results.mkdir(parents=True, exist_ok=True)
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

## Latency at fixed offered rates (open loop, `bench/openloop.py`, OIA changebalance BET)

Requests are due at a fixed rate whatever the server does; latency counts from when a request was
due, so queueing shows. {args.latency_seconds:g} s per rate after a 2 s warm-up, 64 connections.

{latency_table(lat)}

![latency](latency.png)

## Realistic scenarios (locust, `bench/locustfile.py`)

{locust_table(scenario)}

locust command: `{scenario.command}`. Locust's own percentiles are rounded and its client
is slow; use it for the scenario mix and errors, the tables above for speed.
"""
    path = results / "report.md"
    path.write_text(text)
    return path
