"""kill -9 of walletd and its embedded Redis under load loses no answered booking."""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import sqlite3
from collections import Counter, defaultdict
from pathlib import Path

import httpx
import pytest
import redis

from tests.process import Server, walletd

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

PLAYERS = 8
OPENING_MINOR = 1_000_000
WORKERS = 24
LOAD_S = 1.5


async def spin(client: httpx.AsyncClient, successes: dict[str, list[int]], stop: asyncio.Event) -> None:
    rng = random.Random()
    while not stop.is_set():
        player = f"k{rng.randrange(PLAYERS)}"
        try:
            r = await client.get("/stargame", params={"cmd": "writeBet", "uid": player, "bet": "1", "win": "0"})
        except httpx.HTTPError:
            return  # the server is gone: this answer never arrived, so it promised nothing
        body = r.json()
        if body["status"] == "success":
            successes[player].append(body["cash"])


def ledger_sums(ledger_db: Path) -> dict[str, int]:
    """Balance per player by the ledger: opening, bets, and any reversal of a bet
    whose outcome was unknown when walletd answered fail (the reconciler's)."""
    db = sqlite3.connect(ledger_db)
    rows = db.execute("SELECT player_id, SUM(amount_minor) FROM ledger GROUP BY player_id").fetchall()
    db.close()
    return dict(rows)


def reversed_bet_balances(ledger_db: Path) -> dict[str, Counter[int]]:
    """balance_after of each bet the reconciler reversed (its ref names the original
    entries), with how many reversed bets left that balance."""
    db = sqlite3.connect(ledger_db)
    found: dict[str, Counter[int]] = defaultdict(Counter)
    for player, ref in db.execute("SELECT player_id, ref FROM ledger WHERE kind = 'reverse'").fetchall():
        for entry_id in re.findall(r"\d+:\d+", ref):
            row = db.execute("SELECT balance_after_minor FROM ledger WHERE entry_id = ? AND kind = 'bet'",
                             (entry_id,)).fetchone()
            if row:
                found[player][row[0]] += 1
    db.close()
    return found


def bet_balances(ledger_db: Path) -> dict[str, list[int]]:
    db = sqlite3.connect(ledger_db)
    rows = db.execute("SELECT player_id, balance_after_minor FROM ledger WHERE kind = 'bet'").fetchall()
    db.close()
    found: dict[str, list[int]] = defaultdict(list)
    for player, balance in rows:
        found[player].append(balance)
    return found


async def test_kill_9_under_load_keeps_every_answered_booking(tmp_path: Path) -> None:
    server = Server(tmp_path).start()  # embedded Redis, AOF appendfsync always
    for i in range(PLAYERS):  # the CLI finds the running server's Redis under data_dir
        walletd(server.config, "player", "create", f"k{i}", "--currency", "EUR", "--balance", "10000.00")
    redis_url = (tmp_path / "var" / "redis.url").read_text().strip()
    redis_pid = redis.Redis.from_url(redis_url).info("server")["process_id"]

    successes: dict[str, list[int]] = defaultdict(list)
    stop = asyncio.Event()
    limits = httpx.Limits(max_connections=WORKERS)
    async with httpx.AsyncClient(base_url=server.base_url, limits=limits, timeout=5) as client:
        workers = [asyncio.create_task(spin(client, successes, stop)) for _ in range(WORKERS)]
        await asyncio.sleep(LOAD_S)
        os.kill(redis_pid, signal.SIGKILL)
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait(10)
        stop.set()
        await asyncio.gather(*workers)
    answered = sum(len(v) for v in successes.values())
    assert answered > 100, "the load did not get going"

    server.start()  # same data_dir: replays the AOF
    try:
        async with httpx.AsyncClient(base_url=server.base_url) as client:
            balances = {}
            for i in range(PLAYERS):
                r = await client.get("/stargame", params={"cmd": "getBalance", "uid": f"k{i}"})
                balances[f"k{i}"] = r.json()["cash"]
        check = walletd(server.config, "verify", check=False)  # drains, then compares
    finally:
        server.stop()
    assert check.returncode == 0, check.stdout + check.stderr

    stored = bet_balances(tmp_path / "ledger.db")
    for player, cash_values in successes.items():
        # Bets of 1 make every balance_after unique: each answered booking is one entry.
        assert len(stored[player]) == len(set(stored[player]))
        assert set(cash_values) <= set(stored[player]), f"{player}: an answered booking is missing"
        assert balances[player] == ledger_sums(tmp_path / "ledger.db")[player]
        assert balances[player] <= OPENING_MINOR - len(cash_values)
        assert not set(cash_values) & set(reversed_bet_balances(tmp_path / "ledger.db")[player]), \
            "answered, then reversed"
    print(f"\nkill -9 test: {answered} bookings answered success before the kill, "
          f"{sum(len(v) for v in stored.values())} booked after restart (the rest were in flight)")


RESUME_WITHIN_S = 15.0
BALANCE_TRIES = 20


async def cash_of(client: httpx.AsyncClient, uid: str) -> int:
    """getBalance, retried: on a busy 2-core machine one may miss StarGame's 40 ms budget."""
    for _ in range(BALANCE_TRIES):
        body = (await client.get("/stargame", params={"cmd": "getBalance", "uid": uid})).json()
        if body["status"] == "success":
            return body["cash"]
        await asyncio.sleep(0.05)
    raise AssertionError(f"getBalance {uid} kept failing: {body}")


async def test_walletd_restarts_its_embedded_redis_after_kill_9(tmp_path: Path) -> None:
    """Item 18: no operator action; bookings resume; nothing answered is lost (AOF always)."""
    server = Server(tmp_path).start()
    for i in range(PLAYERS):
        walletd(server.config, "player", "create", f"k{i}", "--currency", "EUR", "--balance", "10000.00")
    redis_url = (tmp_path / "var" / "redis.url").read_text().strip()
    redis_pid = redis.Redis.from_url(redis_url).info("server")["process_id"]
    successes: dict[str, list[int]] = defaultdict(list)
    stop = asyncio.Event()
    try:
        async with httpx.AsyncClient(base_url=server.base_url, limits=httpx.Limits(max_connections=8),
                                     timeout=5) as client:
            workers = [asyncio.create_task(spin(client, successes, stop)) for _ in range(8)]
            await asyncio.sleep(LOAD_S / 2)
            os.kill(redis_pid, signal.SIGKILL)
            killed_at = asyncio.get_running_loop().time()
            answered_before = sum(len(v) for v in successes.values())
            while sum(len(v) for v in successes.values()) < answered_before + 50:
                assert asyncio.get_running_loop().time() - killed_at < RESUME_WITHIN_S, "bookings did not resume"
                assert all(not w.done() for w in workers), "walletd stopped answering"
                await asyncio.sleep(0.05)
            stop.set()
            await asyncio.gather(*workers)
        new_pid = redis.Redis.from_url(redis_url).info("server")["process_id"]
        assert new_pid != redis_pid  # same address, same data, a new process
        check = walletd(server.config, "verify", check=False)
        async with httpx.AsyncClient(base_url=server.base_url) as client:
            balances = {f"k{i}": await cash_of(client, f"k{i}") for i in range(PLAYERS)}
    finally:
        server.stop()
    assert check.returncode == 0, check.stdout + check.stderr
    log = server.log.read_text()
    assert "killed by SIGKILL; restarting it on the same data" in log
    assert "Traceback" not in log
    stored = bet_balances(tmp_path / "ledger.db")
    for player, cash_values in successes.items():
        assert set(cash_values) <= set(stored[player]), f"{player}: an answered booking is missing"
        assert balances[player] == ledger_sums(tmp_path / "ledger.db")[player]
        assert balances[player] <= OPENING_MINOR - len(cash_values)
        # Reversals land during the load here: a bet after a reversal can leave the same
        # balance as the reversed one. Each answer needs its own bet entry not reversed.
        unreversed = Counter(stored[player]) - reversed_bet_balances(tmp_path / "ledger.db")[player]
        assert not Counter(cash_values) - unreversed, "answered, then reversed"
