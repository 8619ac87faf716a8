"""The ledger store unusable under a running `walletd serve` with load (README "Outages"):
bookings go on (Redis is the durability point) until a partition's stream holds
wallet.backlog_max un-flushed entries, which refuses bookings cleanly (OIA OP_50,
StarGame fail, nothing moved); the flusher backs off, resumes by itself when the store
is back, and drains; bookings are served again; nothing lost, nothing stored twice."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import pytest
import redis

from tests.outage import (
    AOF,
    SG_BUDGET_MS,
    Answer,
    Load,
    late_answers,
    money_problems,
    sequence_problems,
    summary,
    wait_for,
    wrong_answers,
)
from tests.postgres_servers import PrivatePostgres, private_postgres
from tests.process import Server, walletd
from tests.redis_servers import PrivateRedis

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

BACKLOG_MAX = 40  # small, so the load fills a partition's backlog within the outage
LOAD_S = 1.0
# Longer than SQLite's busy timeout (5 s): the flusher's try fails, and it backs off.
DOWN_S = 6.0
RESUMED_WITHIN_S = 10.0  # the flusher's next try (backoff up to 5 s) drains, then bookings pass
# Answers that say the backlog is full: OIA's error_description, StarGame's error.
BACKLOG_WORDS = "backlog full"


class StoreOutage(Protocol):
    storage_url: str

    def begin(self) -> None: ...

    def end(self) -> None: ...


class SqliteLocked:
    """Another process's writer holding the SQLite store (BEGIN EXCLUSIVE): the
    flusher's inserts wait out the busy timeout and fail, as for a store that is down."""

    def __init__(self, storage_url: str) -> None:
        self.storage_url = storage_url
        self.path = storage_url.removeprefix("sqlite:///")
        self.db: sqlite3.Connection | None = None

    def begin(self) -> None:
        self.db = sqlite3.connect(self.path, isolation_level=None)
        self.db.execute("BEGIN EXCLUSIVE")

    def end(self) -> None:
        assert self.db is not None
        self.db.execute("ROLLBACK")
        self.db.close()
        self.db = None


@pytest.fixture(params=["sqlite-locked", "postgres-stopped", "postgres-killed"])
def outage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreOutage]:
    if request.param == "sqlite-locked":
        yield SqliteLocked(f"sqlite:///{tmp_path / 'w' / 'ledger.db'}")
        return
    with private_postgres(tmp_path / "postgres") as server:  # its own: the test stops it
        yield PostgresDown(server, immediate=request.param == "postgres-killed")


class PostgresDown:
    """The test's own PostgreSQL stopped under load and started again on the same data:
    a fast shutdown (its clients see their connections closed), or an immediate one (every
    server process quits at once, no checkpoint: kill -9 of the server in the middle of a
    flush; crash recovery at the next start)."""

    def __init__(self, server: PrivatePostgres, immediate: bool) -> None:
        self.server = server
        self.immediate = immediate
        self.storage_url = server.url

    def begin(self) -> None:
        self.server.stop(immediate=self.immediate)

    def end(self) -> None:
        self.server.start()


# A loaded machine can take this long to start the flush process and its first recovery.
FLUSHER_START_S = 30.0


def stream_lengths(redis_url: str) -> list[int]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        return [int(client.xlen(key)) for key in client.scan_iter("*:ledger")]
    finally:
        client.close()


async def test_a_store_outage_fills_the_backlog_then_refuses_cleanly_and_drains_after(
    tmp_path: Path, outage: StoreOutage
) -> None:
    backing = PrivateRedis(tmp_path / "redis", extra=AOF).start()
    storage_url = outage.storage_url
    server = Server(tmp_path / "w", redis_url=backing.admin_url, budget_ms=SG_BUDGET_MS, storage_url=storage_url,
                    extra=f"[wallet]\nbacklog_max = {BACKLOG_MAX}\n")
    try:
        server.start()
        # The outage must find the flusher running: a flush process still opening the store
        # when it stops exits and is restarted instead (no failed tick, no 'recovered' line).
        assert await wait_for(lambda: "flusher " in server.log.read_text() and " started on " in
                              server.log.read_text(), FLUSHER_START_S), server.log.read_text()
        load = Load(server.base_url, ["so1", "so2"], ["ss1", "ss2"], workers=8)
        await load.create_players()
        load.start()
        await asyncio.sleep(LOAD_S)
        await asyncio.to_thread(outage.begin)
        down = time.monotonic()
        await asyncio.sleep(DOWN_S)
        longest = max(stream_lengths(backing.admin_url))
        await asyncio.to_thread(outage.end)
        up = time.monotonic()
        assert await wait_for(lambda: oks_since(load.answers, up) >= 2, RESUMED_WITHIN_S), summary(load.answers)
        answers = await load.finish()
        print(f"\n{summary(answers)}; longest stream {longest} during the outage")
        server.stop()  # verify drains the rest alone, not racing serve's flusher
        # Read after the stop: the flusher says 'recovered' once its tick is done, which may
        # be after the bookings it let through (and the flush child's lines reach the file last).
        log = server.log.read_text()
        check = walletd(server.config, "verify", check=False)
    finally:
        server.stop()
        backing.stop()
    assert wrong_answers(answers) == []
    assert late_answers(answers) == []
    during = [a for a in answers if down < a.sent and a.received < up]
    assert any(a.outcome == "OK" for a in during), "bookings stopped at once: Redis is the durability point"
    refused = [a for a in during if BACKLOG_WORDS in a.detail]
    assert {a.protocol for a in refused} == {"oia", "stargame"}, summary(during)
    assert all(a.outcome in ("OP_50", "fail") for a in refused)
    assert longest <= BACKLOG_MAX
    assert check.returncode == 0, check.stdout + check.stderr
    assert money_problems(answers, storage_url) == []
    assert sequence_problems(storage_url) == []
    assert log.count("flusher recovered after") == 1, log  # one line each way, not per try
    # The operator is told why bookings stop: once per protocol (a minute's worth), not per refusal.
    assert log.count("ledger backlog is full") == 2, log
    assert "Traceback" not in log


def oks_since(answers: list[Answer], moment: float) -> int:
    return sum(1 for a in answers if a.outcome == "OK" and a.sent > moment)
