"""First rough latency of StarGame getBalance/writeBet and OIA changebalance (closed loop).

Starts `walletd serve` with the embedded Redis (AOF appendfsync always, flusher
on, SQLite ledger) in a temporary data_dir, creates players, then sends
requests over keep-alive connections with a lean asyncio HTTP/1.1 client and
prints percentiles. Closed-loop numbers understate queueing tails; the
open-loop saturation suite is a later piece of work.

    python3 bench/latency.py [--requests 5000] [--connections 1 8] [--cmds getBalance writeBet changebalance]

changebalance requests are signed (X-Authorization and body hash), alternate BET
and, on every third round, WIN, each with a fresh transaction id, on sessions
opened through POST /admin/sessions.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

PLAYERS = 100
OPERATOR, SECRET, ADMIN = "benchcasino", "bench-secret", "bench-admin"
STAMP = "2026-11-21 10:00:00"
TX_IDS = itertools.count(1)


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


def sha1(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def get(path: str) -> bytes:
    return b"GET " + path.encode() + b" HTTP/1.1\r\nHost: bench\r\n\r\n"


def oia_post(command: str, data: dict) -> bytes:
    body = json.dumps({"command": command, "request_timestamp": STAMP,
                       "hash": sha1(command + STAMP + SECRET), "data": data}).encode()
    head = (f"POST /oia/{command} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"X-Operator-Id: {OPERATOR}\r\nX-Authorization: {sha1(command + SECRET)}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


def change(player: int, kind: str, token: str | None, round_id: int) -> bytes:
    return oia_post("changebalance", {
        "user_id": f"b{player}", "transaction_type": kind, "transaction_id": next(TX_IDS), "round_id": round_id,
        "round_finished": kind == "WIN", "game_id": 200, "currency_code": "EUR",
        "amount": 1.00 if kind == "BET" else 0.5, "token": token, "transaction_timestamp": STAMP,
        "context": {"reason": "SPIN"}})


def requests_for(cmd: str, c: int, count: int, tokens: list[str]) -> list[bytes]:
    players = [(c + i) % PLAYERS for i in range(count)]
    if cmd == "getBalance":
        return [get(f"/stargame?cmd=getBalance&uid=b{p}&foo={i}") for i, p in enumerate(players)]
    if cmd == "writeBet":
        return [get(f"/stargame?cmd=writeBet&uid=b{p}&bet=100&win={50 * (i % 3 == 0)}") for i, p in enumerate(players)]
    assert cmd == "changebalance", cmd
    built = []
    for i, player in enumerate(players):
        kind = "WIN" if i % 3 == 2 else "BET"
        built.append(change(player, kind, tokens[player] if kind == "BET" else None, i // 3))
    return built


def failed(body: bytes) -> bool:
    return b'"success"' not in body and b'"status":"OK"' not in body


async def worker(port: int, requests: list[bytes], latencies_ms: list[float], fails: list[bytes]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for request in requests:
        started = time.perf_counter()
        writer.write(request)
        body = await read_response(reader)
        latencies_ms.append((time.perf_counter() - started) * 1000)
        if failed(body):
            fails.append(body)
    writer.close()


async def measure(port: int, cmd: str, requests: int, connections: int,
                  tokens: list[str]) -> tuple[list[float], list[bytes]]:
    latencies: list[float] = []
    fails: list[bytes] = []
    per_conn = requests // connections
    jobs = [worker(port, requests_for(cmd, c, per_conn, tokens), latencies, fails) for c in range(connections)]
    await asyncio.gather(*jobs)
    return sorted(latencies), fails


def open_sessions(port: int) -> list[str]:
    tokens = []
    for i in range(PLAYERS):
        body = json.dumps({"player_id": f"b{i}", "lobby_id": "bench"}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/admin/sessions", data=body, method="POST",
                                         headers={"Authorization": f"Bearer {ADMIN}"})
        with urllib.request.urlopen(request, timeout=5) as reply:
            tokens.append(json.load(reply)["token"])
    return tokens


def start(directory: Path, port: int) -> subprocess.Popen:
    config = directory / "walletd.toml"
    config.write_text(f'data_dir = "{directory}/var"\n[server]\nport = {port}\n'
                      f'[[oia.operators]]\nid = "{OPERATOR}"\nsecret_key = "{SECRET}"\n'
                      f'[admin]\ntoken = "{ADMIN}"\n')
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
    parser.add_argument("--cmds", nargs="+", default=["getBalance", "writeBet", "changebalance"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = start(Path(tmp), args.port)
        try:
            tokens = open_sessions(args.port)
            columns = ("req/s", "p50 ms", "p90 ms", "p99 ms", "max ms")
            print(f"{'cmd':<13} {'conns':>5} " + " ".join(f"{c:>7}" for c in columns) + f" {'fails':>6}")
            for cmd in args.cmds:
                for connections in args.connections:
                    asyncio.run(measure(args.port, cmd, 500, connections, tokens))  # warm-up
                    began = time.perf_counter()
                    lat, fails = asyncio.run(measure(args.port, cmd, args.requests, connections, tokens))
                    rate = len(lat) / (time.perf_counter() - began)
                    print(f"{cmd:<13} {connections:>5} {rate:>8.0f} {percentile(lat, .5):>7.2f} "
                          f"{percentile(lat, .9):>7.2f} {percentile(lat, .99):>7.2f} {lat[-1]:>7.2f} {len(fails):>6}")
                    for body in sorted(set(fails))[:3]:
                        print("   fail:", body.decode()[:120])
        finally:
            server.terminate()
            server.wait(30)
    print(f"machine: {os.cpu_count()} cores; client and server share them (no pinning)")


if __name__ == "__main__":
    main()
