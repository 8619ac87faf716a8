"""First rough latency of StarGame getBalance and writeBet (closed loop).

Starts `walletd serve` with the embedded Redis (AOF appendfsync always, flusher
on, SQLite ledger) in a temporary data_dir, creates players, then sends
requests over keep-alive connections with a lean asyncio HTTP/1.1 client and
prints percentiles. Closed-loop numbers understate queueing tails; the
open-loop saturation suite is a later piece of work.

    python3 bench/latency.py [--requests 5000] [--connections 1 8]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

PLAYERS = 100


def percentile(sorted_values: list[float], q: float) -> float:
    index = min(len(sorted_values) - 1, int(round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


async def read_response(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return await reader.readexactly(length)


async def worker(port: int, paths: list[bytes], latencies_ms: list[float], fails: list[bytes]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for path in paths:
        request = b"GET " + path + b" HTTP/1.1\r\nHost: bench\r\n\r\n"
        started = time.perf_counter()
        writer.write(request)
        body = await read_response(reader)
        latencies_ms.append((time.perf_counter() - started) * 1000)
        if b'"success"' not in body:
            fails.append(body)
    writer.close()


async def measure(port: int, cmd: str, requests: int, connections: int) -> tuple[list[float], list[bytes]]:
    latencies: list[float] = []
    fails: list[bytes] = []
    per_conn = requests // connections
    jobs = []
    for c in range(connections):
        if cmd == "getBalance":
            paths = [f"/stargame?cmd=getBalance&uid=b{(c + i) % PLAYERS}&foo={i}".encode() for i in range(per_conn)]
        else:
            paths = [f"/stargame?cmd=writeBet&uid=b{(c + i) % PLAYERS}&bet=100&win={50 * (i % 3 == 0)}".encode()
                     for i in range(per_conn)]
        jobs.append(worker(port, paths, latencies, fails))
    await asyncio.gather(*jobs)
    return sorted(latencies), fails


def start(directory: Path, port: int) -> subprocess.Popen:
    config = directory / "walletd.toml"
    config.write_text(f'data_dir = "{directory}/var"\n[server]\nport = {port}\n')
    walletd = [sys.executable, "-m", "app.cli", "--config", str(config)]
    server = subprocess.Popen([*walletd, "serve"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                break
        except OSError:
            time.sleep(0.1)
    for i in range(PLAYERS):
        subprocess.run([*walletd, "player", "create", f"b{i}", "--currency", "EUR", "--balance", "1000000.00"],
                       check=True, capture_output=True)
    return server


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--port", type=int, default=18080)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = start(Path(tmp), args.port)
        try:
            columns = ("req/s", "p50 ms", "p90 ms", "p99 ms", "max ms")
            print(f"{'cmd':<11} {'conns':>5} " + " ".join(f"{c:>7}" for c in columns) + f" {'fails':>6}")
            for cmd in ("getBalance", "writeBet"):
                for connections in args.connections:
                    asyncio.run(measure(args.port, cmd, 500, connections))  # warm-up
                    began = time.perf_counter()
                    lat, fails = asyncio.run(measure(args.port, cmd, args.requests, connections))
                    rate = len(lat) / (time.perf_counter() - began)
                    print(f"{cmd:<11} {connections:>5} {rate:>8.0f} {percentile(lat, .5):>7.2f} "
                          f"{percentile(lat, .9):>7.2f} {percentile(lat, .99):>7.2f} {lat[-1]:>7.2f} {len(fails):>6}")
                    for body in sorted(set(fails))[:3]:
                        print("   fail:", body.decode()[:120])
        finally:
            server.terminate()
            server.wait(30)
    print(f"machine: {os.cpu_count()} cores; client and server share them (no pinning)")


if __name__ == "__main__":
    main()
