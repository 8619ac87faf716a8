"""GET /metrics of a real `walletd serve`: two HTTP workers and the flush process write
one set of metrics (prometheus-client's multiprocess mode), which any worker's scrape
sums exactly, a restarted flush process's counts included; off when disabled."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from app.ledger import open_store
from app.settings import WalletSettings
from tests.oia_calls import call, change, new_session
from tests.process import Server
from tests.scrape import Samples, answers, answers_by_command, counts, named, samples
from tests.support import ADMIN_TOKEN, OPERATOR

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

SETTLE_S = 20.0  # a busy 2-core machine: the workers fold each second, the flusher ticks every 20 ms
OIA_BETS = 12
SG_BETS = 8


def scrape(server: Server) -> Samples:
    # A new connection each time: either worker may answer.
    response = httpx.get(server.base_url + "/metrics", headers={"Connection": "close"}, timeout=10)
    assert response.status_code == 200
    return samples(response.text)


def settled(server: Server, done: Callable[[Samples], bool]) -> Samples:
    """The first scrape that done() accepts; the last one if none within SETTLE_S."""
    deadline = time.monotonic() + SETTLE_S
    scraped = scrape(server)
    while not done(scraped) and time.monotonic() < deadline:
        time.sleep(0.2)
        scraped = scrape(server)
    return scraped


def value(scraped: Samples, name: str) -> float:
    return sum(named(scraped, name).values())


def pids(directory: Path) -> set[int]:
    return {int(path.stem.rsplit("_", 1)[1]) for path in directory.glob("*.db")}


def flush_pid(serve_pid: int) -> int | None:
    """The pid of serve's `walletd flush` child, if one runs (a restarted one is the
    child of serve's supervising thread)."""
    children = [pid for task in Path(f"/proc/{serve_pid}/task").iterdir()
                for pid in (task / "children").read_text().split()]
    for pid in children:
        try:
            if b"flush" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"):
                return int(pid)
        except FileNotFoundError:
            continue  # gone meanwhile
    return None


def restarted_flush_pid(serve_pid: int, old: int) -> int:
    deadline = time.monotonic() + SETTLE_S
    while time.monotonic() < deadline:
        pid = flush_pid(serve_pid)
        if pid not in (None, old):
            assert pid is not None
            return pid
        time.sleep(0.1)
    raise AssertionError("serve did not restart the flush process")


def ledger_entries(server: Server) -> int:
    store = open_store(f"sqlite:///{server.config.parent / 'ledger.db'}")
    try:
        return sum(stats.count for stats in store.partition_stats().values())
    finally:
        store.close()


async def callbacks(server: Server) -> None:
    """OIA_BETS changebalance BETs and SG_BETS writeBets, each on a new connection."""
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as admin:
        for player in ("oia1", "sg1"):
            body = {"player_id": player, "currency": "EUR", "balance": "100.00", "operator_id": OPERATOR}
            assert (await admin.post("/admin/players", json=body, headers=auth)).status_code == 201
        token = await new_session(admin, "oia1")
    for tx in range(OIA_BETS):
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
            assert (await call(client, "changebalance", change("oia1", tx + 1, token=token)))["status"] == "OK"
    for _ in range(SG_BETS):
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
            r = await client.get("/stargame", params={"cmd": "writeBet", "uid": "sg1", "bet": "1", "win": "0"})
            assert r.json()["status"] == "success"


def test_two_workers_and_the_flush_process_are_summed_exactly(tmp_path: Path) -> None:
    server = Server(tmp_path, workers=2)
    directory = tmp_path / "var" / "metrics"
    directory.mkdir(parents=True)
    stale = directory / "counter_999999999.db"
    stale.write_bytes(b"a previous run's counts")  # serve empties the directory before its children start
    server.start()
    try:
        assert not stale.exists()
        asyncio.run(callbacks(server))
        expected = {("oia", "changebalance", "OK"): OIA_BETS, ("stargame", "writeBet", "success"): SG_BETS}
        scraped = settled(server, lambda s: answers(s) == expected)
        assert answers(scraped) == expected
        assert answers_by_command(answers(scraped)) == counts(scraped)
        process = server.process
        assert process is not None
        # Every booking, and each player's opening entry, stored by the flush process and counted there.
        entries = OIA_BETS + SG_BETS + 2
        scraped = settled(server, lambda s: value(s, "walletd_flusher_entries_stored_total") == entries)
        assert value(scraped, "walletd_flusher_entries_stored_total") == entries == ledger_entries(server)
        assert value(scraped, "walletd_ledger_backlog_entries") == 0
        assert len(named(scraped, "walletd_ledger_backlog_entries")) == WalletSettings().partitions  # one each
        first_flusher = flush_pid(process.pid)
        assert first_flusher is not None and first_flusher in pids(directory)
        assert len(pids(directory) - {first_flusher}) >= 2  # both workers wrote theirs
        os.kill(first_flusher, signal.SIGKILL)  # serve restarts it; its counts stay in the sum
        restarted_flush_pid(process.pid, first_flusher)
        asyncio.run(callbacks_again(server))
        scraped = settled(server, lambda s: value(s, "walletd_flusher_entries_stored_total") == entries + 1)
        assert value(scraped, "walletd_flusher_entries_stored_total") == entries + 1 == ledger_entries(server)
        expected["stargame", "writeBet", "success"] += 1
        assert answers(settled(server, lambda s: answers(s) == expected)) == expected
        for _ in range(4):  # whichever worker answers, the same sums
            assert answers(scrape(server)) == expected
    finally:
        server.stop()


async def callbacks_again(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
        r = await client.get("/stargame", params={"cmd": "writeBet", "uid": "sg1", "bet": "1", "win": "0"})
        assert r.json()["status"] == "success"


def test_metrics_off_serve_no_endpoint_and_write_no_files(tmp_path: Path) -> None:
    server = Server(tmp_path, extra="[metrics]\nenabled = false\n").start()
    try:
        assert httpx.get(server.base_url + "/metrics").status_code == 404
        r = httpx.get(server.base_url + "/stargame", params={"cmd": "getBalance", "uid": "nobody"})
        assert r.json()["status"] == "fail"
    finally:
        server.stop()
    assert not list((tmp_path / "var").glob("metrics/*"))
