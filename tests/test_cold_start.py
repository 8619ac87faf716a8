"""The cold-start guard (app/ledger/guard.py, README "Cold start"): while Redis is behind
the ledger store (its AOF lost or truncated) or `walletd rebuild` is writing it, every
callback is refused (OIA OP_50, StarGame fail), admin writes too, /healthz is 503 with
the reason, the command to run is logged once, and nothing is written to Redis or to
the store; once Redis has caught up, the running walletd serves again by itself."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
import uuid
from pathlib import Path

import httpx
import pytest
import redis

from app.keys import META_REBUILD_RUNNING, Keys
from app.ledger.guard import FLUSHER_ROLE, REBUILDING, REBUILT_UNCONFIRMED, RECHECK_S, RedisLook, verdict
from app.protocols.stargame.journal import Journal, Note, directory_of, journal_files
from app.runtime import Runtime
from app.settings import Settings
from app.wallet import Wallet
from tests.oia_calls import call, change, error_code, new_session
from tests.process import Server, walletd
from tests.redis_servers import private_redis
from tests.support import ADMIN_TOKEN, OPERATOR, drain, ledger_rows, serving, sg

pytestmark = pytest.mark.anyio

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
# A well-formed token no session has: the guard answers before any lookup.
NO_SESSION = "A" * 30
# A running walletd notices a change of Redis within one re-check (plus the check itself).
NOTICED_S = RECHECK_S + 1.0
# Every worker of a loaded two-core machine serves again within this of the first.
SERVED_ALL_S = 10.0
REBUILD_HINT = "to restore Redis from the ledger store run: walletd rebuild"

Snapshot = dict[bytes, bytes]


def snapshot(url: str) -> Snapshot:
    """Every key of Redis, DUMPed: what an AOF copy taken now would restore."""
    client = redis.Redis.from_url(url)
    try:
        return {key: client.dump(key) for key in client.scan_iter(count=1000)}
    finally:
        client.close()


def restore(url: str, keys: Snapshot) -> None:
    """Redis holds exactly `keys` (a restored copy; or what a rebuild writes)."""
    client = redis.Redis.from_url(url)
    try:
        client.flushall()
        for key, value in keys.items():
            client.restore(key, 0, value)
    finally:
        client.close()


def store_state(path: str) -> tuple[list[tuple], list[tuple]]:
    """Every ledger entry and player row of a SQLite store, as stored."""
    db = sqlite3.connect(path)
    try:
        return (db.execute("SELECT * FROM ledger ORDER BY partition, seq").fetchall(),
                db.execute("SELECT * FROM players ORDER BY player_id").fetchall())
    finally:
        db.close()


def copy_store(source: str, target: Path) -> None:
    """A consistent copy of a SQLite store (its WAL included), put in place at once."""
    staged = target.with_suffix(".staged")
    with contextlib.closing(sqlite3.connect(source)) as db, contextlib.closing(sqlite3.connect(staged)) as copy:
        db.backup(copy)
    staged.replace(target)


def store_path(settings: Settings) -> str:
    return settings.storage_url.removeprefix("sqlite:///")


async def stored_player(settings: Settings, wallet: Wallet, deposits: int = 1) -> str:
    """Player 611 opened and given `deposits` deposits, all of it in the ledger store."""
    await wallet.create_player("611", "EUR", 10000, "DE", "en", "", [], operator_id=OPERATOR)
    for n in range(deposits):
        await wallet.adjust("611", "deposit", 100, f"d{n}")
    await drain(settings)
    return "611"


async def refusals(client: httpx.AsyncClient, reason: str) -> None:
    """Every kind of call is refused naming `reason`, nothing done."""
    balance = await call(client, "balance", {"token": NO_SESSION, "user_id": "611", "currency_code": "EUR"})
    assert error_code(balance) == "OP_50" and reason in balance["data"]["error_message"], balance
    booking = await call(client, "changebalance", change("611", 77, "WIN", 5, token=NO_SESSION))
    assert error_code(booking) == "OP_50" and reason in booking["data"]["error_message"], booking
    for params in ({"cmd": "getBalance", "uid": "611"}, {"cmd": "writeBet", "uid": "611", "bet": "100", "win": "0"}):
        answer = await sg(client, **params)
        assert answer["status"] == "fail" and reason in answer["error"], answer
    health = await client.get("/healthz")
    assert health.status_code == 503 and reason in health.text, health.text
    created = await client.post("/admin/players", json={"player_id": "p2", "currency": "EUR"}, headers=AUTH)
    assert created.status_code == 503 and reason in created.json()["error"], created.text
    session = await client.post("/admin/sessions", json={"player_id": "611", "game_id": 200}, headers=AUTH)
    assert session.status_code == 503 and reason in session.json()["error"], session.text


async def served_within(client: httpx.AsyncClient, seconds: float) -> float:
    """How long /healthz took to turn 200; fails past `seconds`."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if (await client.get("/healthz")).status_code == 200:
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    raise AssertionError(f"still refusing after {seconds} s: {(await client.get('/healthz')).text}")


def guard_lines(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "walletd.guard" and text in r.getMessage()]


async def test_an_empty_redis_next_to_a_stored_ledger_refuses_everything_and_writes_nothing(
    settings: Settings, wallet: Wallet, sync_redis: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    await stored_player(settings, wallet)
    sync_redis.flushall()  # the AOF is lost; the store kept 611's two entries
    stored = store_state(store_path(settings))
    settings.flusher.enabled = True  # the flusher and the reconciler run beside: both must stay idle
    request_id = uuid.uuid4().hex  # a writeBet whose outcome was unknown: the reconciler would settle it
    journal = Journal(directory_of(settings.data_path), 10, 10)
    journal.note(Note(request_id, "611", "611", 100, 0, int(time.time() * 1000)))
    journal.close()
    caplog.set_level(logging.INFO, "walletd.guard")
    async with serving(settings) as client:
        await refusals(client, "Redis holds no ledger entry counters")
        await asyncio.sleep(2.5 * RECHECK_S)  # re-checks, flusher ticks and reconciler passes
        await refusals(client, "Redis holds no ledger entry counters")
        assert sync_redis.dbsize() == 0
    assert sync_redis.dbsize() == 0  # no meta, no stream, no consumer group, no session
    assert store_state(store_path(settings)) == stored
    notes = journal_files(directory_of(settings.data_path), 10)
    assert any(request_id.encode() in path.read_bytes() for path in notes)  # not settled (nor deleted)
    logged = guard_lines(caplog, REBUILD_HINT)
    assert len(logged) == 1 and "refuses every callback" in logged[0], logged


@pytest.mark.parametrize("truncation", ["an older copy of the data", "the counter set lower"])
async def test_a_redis_behind_the_store_is_refused(
    settings: Settings, wallet: Wallet, sync_redis: redis.Redis, truncation: str
) -> None:
    await wallet.create_player("611", "EUR", 10000, "DE", "en", "", [], operator_id=OPERATOR)
    await drain(settings)
    older = snapshot(settings.redis.url)
    await wallet.adjust("611", "deposit", 100, "d1")
    await wallet.adjust("611", "deposit", 100, "d2")
    await drain(settings)
    seq = wallet.keys.seq(wallet.keys.partition("611"))
    if truncation == "an older copy of the data":
        restore(settings.redis.url, older)
    else:
        sync_redis.set(seq, 2)  # an AOF cut after its second entry
    written = int(sync_redis.get(seq))
    before = snapshot(settings.redis.url)
    async with serving(settings) as client:
        await refusals(client, f"Redis has written {written} ledger entries, the ledger store holds 3")
    assert snapshot(settings.redis.url) == before


async def test_a_redis_ahead_of_the_store_serves(settings: Settings, wallet: Wallet) -> None:
    await stored_player(settings, wallet)
    await wallet.adjust("611", "deposit", 100, "not-flushed-yet")  # Redis wrote 3, the store holds 2
    async with serving(settings) as client:
        assert (await client.get("/healthz")).status_code == 200
        token = await new_session(client, "611")
        answer = await call(client, "changebalance", change("611", 1, "BET", 1, token=token))
        assert answer["status"] == "OK", answer
        assert (await sg(client, cmd="getBalance", uid="611"))["status"] == "success"


async def test_after_a_rebuild_the_running_walletd_serves_again_within_the_recheck(
    settings: Settings, wallet: Wallet, sync_redis: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    await stored_player(settings, wallet)
    rebuilt = snapshot(settings.redis.url)  # what a rebuild writes back: the same data
    sync_redis.flushall()
    caplog.set_level(logging.INFO, "walletd.guard")
    async with serving(settings) as client:
        await refusals(client, "Redis holds no ledger entry counters")
        # Rebuild marks Redis first, then writes; until it unmarks it, nothing is served,
        # even once the counters are back.
        sync_redis.hset(Keys.meta(), META_REBUILD_RUNNING, "1")
        for key, value in rebuilt.items():
            sync_redis.restore(key, 0, value, replace=key == Keys.meta().encode())
        sync_redis.hset(Keys.meta(), META_REBUILD_RUNNING, "1")  # the meta restored above dropped it
        await asyncio.sleep(NOTICED_S)
        await refusals(client, "Redis is marked as being rebuilt")
        sync_redis.hdel(Keys.meta(), META_REBUILD_RUNNING)
        assert await served_within(client, NOTICED_S) <= NOTICED_S
        token = await new_session(client, "611")
        answer = await call(client, "changebalance", change("611", 1, "BET", 1, token=token))
        assert answer["status"] == "OK" and answer["data"]["balance"] == 100.0, answer
    assert len(guard_lines(caplog, REBUILD_HINT)) == 1
    assert len(guard_lines(caplog, "Redis is marked as being rebuilt")) == 1
    assert len(guard_lines(caplog, "serving again")) == 1
    await drain(settings)  # the booking after the rebuild takes the next id: stored, no conflict
    assert [row["seq"] for row in ledger_rows(settings, "player_id = ?", ("611",))] == [1, 2, 3]


async def test_a_redis_that_loses_its_data_under_a_running_walletd_is_refused_within_the_recheck(
    settings: Settings, wallet: Wallet, sync_redis: redis.Redis
) -> None:
    await stored_player(settings, wallet)
    async with serving(settings) as client:
        assert (await client.get("/healthz")).status_code == 200
        sync_redis.flushall()  # restarted without its AOF
        started = time.monotonic()
        while (await client.get("/healthz")).status_code == 200:
            assert time.monotonic() - started < NOTICED_S, "still serving a Redis that lost its data"
            await asyncio.sleep(0.05)
        await refusals(client, "Redis holds no ledger entry counters")
        await asyncio.sleep(NOTICED_S)
        assert sync_redis.dbsize() == 0


async def test_an_unreadable_store_leaves_redis_trusted_until_it_can_be_read(
    settings: Settings, wallet: Wallet, sync_redis: redis.Redis, tmp_path: Path,
    caplog: pytest.LogCaptureFixture
) -> None:
    await wallet.create_player("611", "EUR", 10000, "DE", "en", "", [], operator_id=OPERATOR)
    await drain(settings)
    older = snapshot(settings.redis.url)
    await wallet.adjust("611", "deposit", 100, "d1")
    await drain(settings)
    restore(settings.redis.url, older)  # Redis is behind the store, which cannot be read yet
    readable = store_path(settings)
    unreadable = tmp_path / "elsewhere" / "ledger.db"
    unreadable.parent.mkdir()
    unreadable.write_bytes(b"not a database" * 100)
    settings.storage.url = f"sqlite:///{unreadable}"
    caplog.set_level(logging.INFO, "walletd.guard")
    async with serving(settings) as client:
        # Redis is the durability point and holds walletd's data: its word is taken.
        assert (await client.get("/healthz")).status_code == 200
        assert (await sg(client, cmd="getBalance", uid="611"))["status"] == "success"
        await asyncio.sleep(NOTICED_S)
        copy_store(readable, unreadable)  # the store is back: Redis is behind it
        started = time.monotonic()
        while (await client.get("/healthz")).status_code == 200:
            assert time.monotonic() - started < NOTICED_S
            await asyncio.sleep(0.05)
        await refusals(client, "Redis has written 1 ledger entries, the ledger store holds 2")
    assert len(guard_lines(caplog, "cannot read the ledger store")) == 1
    assert len(guard_lines(caplog, "can be read again")) == 1


async def test_an_empty_redis_next_to_an_unreadable_store_is_refused(
    settings: Settings, sync_redis: redis.Redis, tmp_path: Path
) -> None:
    sync_redis.flushall()  # not even the meta hash: a new deployment, or a Redis that lost everything
    unreadable = tmp_path / "ledger.db"
    unreadable.write_bytes(b"not a database" * 100)
    settings.storage.url = f"sqlite:///{unreadable}"
    async with serving(settings) as client:
        await refusals(client, "the ledger store cannot be read")
    assert sync_redis.dbsize() == 0


@pytest.mark.slow
async def test_walletd_serve_on_a_lost_redis_refuses_idles_its_flusher_and_serves_once_restored(
    tmp_path: Path, redis_url: str
) -> None:
    server = Server(tmp_path, redis_url)
    walletd(server.config, "player", "create", "c1", "--currency", "EUR", "--balance", "10.00")
    walletd(server.config, "player", "deposit", "c1", "1.00", "--ref", "r1")
    walletd(server.config, "verify")  # drains both entries into the store
    restore(redis_url, {})  # the AOF is lost
    ledger = str(tmp_path / "ledger.db")
    stored = store_state(ledger)
    server.start(ready_status=503)
    try:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=5) as client:
            health = await client.get("/healthz")
            assert "Redis holds no ledger entry counters" in health.text, health.text
            answer = await sg(client, cmd="getBalance", uid="c1")
            assert answer["status"] == "fail" and "Redis holds no ledger entry counters" in answer["error"]
            refused = walletd(server.config, "player", "create", "c2", "--currency", "EUR", check=False)
            assert refused.returncode == 1, refused.stderr
            assert f"walletd rebuild --config {server.config.resolve()}" in refused.stderr, refused.stderr
            await asyncio.sleep(2.5 * RECHECK_S)
            assert snapshot(redis_url) == {}  # the flush process set nothing up either
            assert store_state(ledger) == stored
            rebuilt = walletd(server.config, "rebuild")  # what the log said to run, while walletd runs
            assert "rebuild: done" in rebuilt.stdout, rebuilt.stdout + rebuilt.stderr
            assert await served_within(client, NOTICED_S + 1.0) <= NOTICED_S + 1.0
            assert (await sg(client, cmd="getBalance", uid="c1"))["cash"] == 1100
        walletd(server.config, "player", "deposit", "c1", "2.00", "--ref", "r2")
        deadline = time.monotonic() + 10
        while len(store_state(ledger)[0]) < 3:  # the flush process works again
            assert time.monotonic() < deadline, "the flush process did not resume"
            await asyncio.sleep(0.1)
    finally:
        server.stop()
    log = server.log.read_text()
    assert log.count(REBUILD_HINT) == 1, log  # the server's line; the flush process says it waits
    # Once per reason, not once per re-check: the reason may change while the
    # rebuild runs ("data lost", then "being rebuilt"), depending on when the
    # flush process's re-check falls.
    waits = [line.split(FLUSHER_ROLE, 1)[1] for line in log.splitlines() if FLUSHER_ROLE in line]
    assert 1 <= len(waits) <= 2 and len(set(waits)) == len(waits), log
    assert "Traceback" not in log, log


@pytest.mark.slow
async def test_every_worker_refuses_a_lost_redis_and_serves_again_after_rebuild(tmp_path: Path, redis_url: str) -> None:
    server = Server(tmp_path, redis_url, workers=2)
    walletd(server.config, "player", "create", "w1", "--currency", "EUR", "--balance", "5.00")
    walletd(server.config, "verify")  # stored
    restore(redis_url, {})  # the AOF is lost
    server.start(ready_status=503)
    try:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=5) as client:
            # Connections are spread over the workers: many fresh ones reach both.
            for _ in range(20):
                async with httpx.AsyncClient(base_url=server.base_url, timeout=5) as fresh:
                    answer = await sg(fresh, cmd="getBalance", uid="w1")
                    assert answer["status"] == "fail" and "Redis holds no ledger entry counters" in answer["error"]
            assert snapshot(redis_url) == {}
            walletd(server.config, "rebuild")
            await served_within(client, NOTICED_S + 1.0)
            # Each worker sees it at its own re-check, one period apart at most; on a
            # loaded machine a worker's re-check can come late, so each fresh connection
            # may retry until SERVED_ALL_S, and every one must end in a success.
            deadline = time.monotonic() + SERVED_ALL_S
            for _ in range(20):
                async with httpx.AsyncClient(base_url=server.base_url, timeout=5) as fresh:
                    answer = await sg(fresh, cmd="getBalance", uid="w1")
                    while answer["status"] != "success" and time.monotonic() < deadline:
                        await asyncio.sleep(0.1)
                        answer = await sg(fresh, cmd="getBalance", uid="w1")
                    assert answer["status"] == "success" and answer["cash"] == 500, answer
    finally:
        server.stop()
    log = server.log.read_text()
    assert log.count(REBUILD_HINT) == 2, log  # once per worker
    assert log.count(f"walletd rebuild --config {server.config.resolve()}") == 2, log
    assert log.count("serving again") == 2, log  # INFO lines of the workers are logged too
    assert log.count("ERROR walletd.guard: walletd refuses every callback") == 2, log


@pytest.mark.slow
async def test_a_redis_restarted_empty_under_a_running_walletd_gets_no_callback(
    settings: Settings, tmp_path: Path
) -> None:
    with private_redis(tmp_path / "redis") as server:  # no persistence: a restart loses everything
        settings.redis.url = server.admin_url
        async with Runtime(settings, server.admin_url) as runtime:
            await stored_player(settings, runtime.wallet)
        async with serving(settings) as client:
            token = await new_session(client, "611")
            booked = await call(client, "changebalance", change("611", 1, "WIN", 1, token=token))
            assert booked["status"] == "OK", booked  # the hot path's connection is up
            server.stop()
            server.start()  # same port, empty
            # At once, before the guard's next periodic check: the reconnect itself stops them.
            answers = [await call(client, "changebalance", change("611", n, "WIN", 1, token=token))
                       for n in range(2, 12)]
            # (a call written on the dead connection before its loss was seen: OP_47, unknown)
            assert {error_code(answer) for answer in answers} <= {"OP_47", "OP_50"}, answers
            admin = redis.Redis.from_url(server.admin_url)
            assert admin.dbsize() == 0  # not even a recorded refusal (OP_21/OP_34) took an entry id
            await asyncio.sleep(NOTICED_S)
            await refusals(client, "Redis holds no ledger entry counters")
            assert admin.dbsize() == 0
            admin.close()


@pytest.mark.slow
async def test_the_flusher_sets_nothing_up_in_a_redis_restarted_empty_before_the_guard_looks(
    settings: Settings, tmp_path: Path
) -> None:
    with private_redis(tmp_path / "redis") as server:
        settings.redis.url = server.admin_url
        async with Runtime(settings, server.admin_url) as runtime:
            await stored_player(settings, runtime.wallet)
        settings.flusher.enabled = True
        async with serving(settings) as client:
            assert (await client.get("/healthz")).status_code == 200
            server.stop()
            server.start()  # no callback comes: only the flusher's failing read sees the restart
            await asyncio.sleep(NOTICED_S)
            admin = redis.Redis.from_url(server.admin_url)
            assert admin.dbsize() == 0  # no stream, no consumer group
            admin.close()
            await refusals(client, "Redis holds no ledger entry counters")


def look(*written: int, meta: bool = True, rebuilding: bool = False) -> RedisLook:
    return RedisLook(list(written), holds_meta=meta, rebuilding=rebuilding)


def test_the_verdict_refuses_only_a_redis_behind_or_being_rebuilt() -> None:
    assert verdict(look(5, 0), [5, 0], "") == ""  # in step
    assert verdict(look(7, 3), [5, 0], "") == ""  # ahead: entries not flushed yet
    assert verdict(look(0, 0, meta=False), [0, 0], "") == ""  # a new deployment
    behind = verdict(look(4, 9, 1), [5, 9, 2], "")
    assert behind.startswith("Redis is behind the ledger store (partition 0: Redis has written 4 ledger entries, "
                             "the ledger store holds 5 and 1 more partition(s))"), behind
    assert verdict(look(0, 0), [0, 2], "").startswith("Redis holds no ledger entry counters")
    assert verdict(look(7, 3, rebuilding=True), [5, 0], "") == REBUILDING


def test_without_the_store_the_verdict_takes_redis_word_unless_redis_holds_nothing() -> None:
    assert verdict(look(1, 0), None, "") == ""
    was = "Redis is behind the ledger store (...)"
    assert verdict(look(1, 0), None, was) == was
    assert verdict(look(0, 0, meta=True), None, "") == ""  # walletd started on it: its data
    assert "cannot be read" in verdict(look(0, 0, meta=False), None, "")
    assert verdict(look(1, 0), None, REBUILDING) == REBUILT_UNCONFIRMED
