"""kill -9 of `walletd serve` and of its flush process under load, with an external
Redis on its AOF (README "Outages"): every booking answered OK is stored exactly once,
none answered as unsent (OP_50) is stored, the store has no gap and no duplicate, and
`walletd verify` passes. kill -9 of PostgreSQL during a flush is in
tests/test_outage_store.py (the same harness, tests/outage.py)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.outage import (
    AOF,
    SG_BUDGET_MS,
    Load,
    flush_child,
    late_answers,
    money_problems,
    sequence_problems,
    summary,
    unanswered,
    wait_for,
    wrong_answers,
)
from tests.process import Server, walletd
from tests.redis_servers import PrivateRedis

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

LOAD_S = 1.0
FLUSHER_KILLS = 3
RESTARTED_WITHIN_S = 10.0  # serve restarts its flush process 0.1 s after it died


@pytest.fixture
def backing(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path / "redis", extra=AOF).start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'w' / 'ledger.db'}"
    url: str = request.getfixturevalue("postgresql_url")  # a fresh database on the session's server
    return url


async def test_kill_9_of_serve_under_load_stores_every_answered_booking_once(
    tmp_path: Path, backing: PrivateRedis, storage_url: str
) -> None:
    server = Server(tmp_path / "w", redis_url=backing.admin_url, budget_ms=SG_BUDGET_MS, storage_url=storage_url)
    try:
        server.start()
        load = Load(server.base_url, ["ko1", "ko2"], ["ks1", "ks2"], workers=8)
        await load.create_players()
        load.start()
        await asyncio.sleep(LOAD_S)
        assert server.process is not None
        os.kill(server.process.pid, signal.SIGKILL)  # its flush process follows (SIGTERM)
        server.process.wait(10)
        killed = time.monotonic()
        await asyncio.sleep(0.3)  # the load keeps knocking on a closed port
        await asyncio.to_thread(server.start)  # same config, port, data_dir and Redis
        restarted = time.monotonic()
        await asyncio.sleep(LOAD_S)
        answers = await load.finish()
        print(f"\n{summary(answers)}")
    finally:
        server.stop()
    check = walletd(server.config, "verify", check=False)  # with serve stopped (see the next test)
    cut = [a for a in answers if unanswered(a)]
    assert cut, "the kill cut no call off: the test did not test"
    assert all(killed - 1 < a.sent < restarted for a in cut)  # only around the kill, and while serve was down
    assert wrong_answers([a for a in answers if not unanswered(a)]) == []
    assert late_answers([a for a in answers if not unanswered(a)]) == []
    assert any(a.outcome == "OK" and a.sent > restarted for a in answers), "no booking after the restart"
    assert check.returncode == 0, check.stdout + check.stderr
    assert money_problems(answers, storage_url) == []
    assert sequence_problems(storage_url) == []


async def test_kill_9_of_the_flush_process_during_flushes_stores_every_booking_once(
    tmp_path: Path, backing: PrivateRedis, storage_url: str
) -> None:
    server = Server(tmp_path / "w", redis_url=backing.admin_url, budget_ms=SG_BUDGET_MS, storage_url=storage_url)
    try:
        server.start()
        assert server.process is not None
        load = Load(server.base_url, ["fo1", "fo2"], ["fs1", "fs2"], workers=8)
        await load.create_players()
        load.start()
        killed = []
        for _ in range(FLUSHER_KILLS):  # the flusher ticks every 20 ms under load: mid-batch, often
            await asyncio.sleep(LOAD_S / 2)
            pid = await wait_for_flusher(server.process.pid, killed)
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        await asyncio.sleep(LOAD_S / 2)
        answers = await load.finish()
        print(f"\n{summary(answers)}")
        await wait_for_flusher(server.process.pid, killed)
        log = server.log.read_text()
    finally:
        server.stop()
    # With serve stopped: verify drains the rest alone, not racing serve's flusher for
    # entries it holds delivered but not yet committed (a 4,000-entry batch takes a while).
    check = walletd(server.config, "verify", check=False)
    assert log.count("the flusher process (pid") == FLUSHER_KILLS, log
    assert wrong_answers(answers) == []  # callbacks never noticed
    assert late_answers(answers) == []
    assert check.returncode == 0, check.stdout + check.stderr
    assert money_problems(answers, storage_url) == []
    assert sequence_problems(storage_url) == []


async def wait_for_flusher(serve_pid: int, killed: list[int]) -> int:
    """The pid of serve's flush process, once it is one not killed yet."""
    found: list[int] = []

    def restarted() -> bool:
        try:
            found[:] = [flush_child(serve_pid)]
        except (AssertionError, OSError):  # between death and restart, or reading a dying pid
            return False
        return found[0] not in killed

    assert await wait_for(restarted, RESTARTED_WITHIN_S), "serve did not restart its flush process"
    return found[0]
