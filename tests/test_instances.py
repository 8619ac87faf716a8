"""Several `walletd serve` instances on one Redis and one PostgreSQL ledger store (README
"Scaling out"): the flusher work shared through the consumer group, each instance under
its own consumer name, a killed instance's pending entries claimed by another, every
entry stored exactly once; and server.workers = 2 under concurrent load."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from app.protocols.stargame.journal import Journal, Note, directory_of, journal_files
from app.settings import WalletSettings
from tests.instances import (
    WAIT_S,
    all_stored,
    assert_exactly_once,
    assert_promises_kept,
    balances_now,
    consumer_of,
    consumers as consumers_of,
    create_players,
    flush_child_cmdline,
    flush_children,
    load,
    sessions,
    stored_rows,
    wait_for,
)
from tests.oia_calls import call, change, error_code, new_session
from tests.process import Server, walletd
from tests.redis_servers import PrivateRedis, private_redis
from tests.scrape import named, samples

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

PARTITIONS = WalletSettings().partitions
# The durability serve requires of an external Redis.
DURABLE = ("--appendonly", "yes", "--appendfsync", "always", "--maxmemory-policy", "noeviction")
LOAD_S = 3.0
# Short enough for a test, the same mechanism as the default 60 s / 10 s.
CLAIMS = "claim_idle_ms = 1000\nclaim_interval_ms = 300\n"


@pytest.fixture
def shared_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    with private_redis(tmp_path / "redis", extra=DURABLE) as server:
        yield server


def instance(tmp_path: Path, name: str, redis_url: str, storage_url: str, flusher_extra: str = "") -> Server:
    return Server(tmp_path / name, redis_url, storage_url=storage_url, flusher_extra=flusher_extra)


def stored_by(server: Server) -> float:
    """Entries the instance's flusher stored (its /metrics, the flush process's count)."""
    scraped = samples(httpx.get(server.base_url + "/metrics", timeout=10).text)
    return sum(named(scraped, "walletd_flusher_entries_stored_total").values())


def consumers(redis_url: str, cluster: bool = False) -> dict[str, int]:
    return consumers_of(redis_url, PARTITIONS, cluster)


async def test_two_instances_share_the_flusher_work_and_store_every_entry_once(
    tmp_path: Path, shared_redis: PrivateRedis, postgresql_url: str
) -> None:
    await two_instances_share_the_flusher_work(tmp_path, shared_redis.admin_url, postgresql_url, cluster=False)


async def test_two_instances_on_a_cluster_share_the_flusher_work_and_store_every_entry_once(
    tmp_path: Path, cluster_url: str, postgresql_url: str
) -> None:
    """The same on the three-primary cluster: every partition's stream on its own node."""
    await two_instances_share_the_flusher_work(tmp_path, cluster_url, postgresql_url, cluster=True)


async def two_instances_share_the_flusher_work(tmp_path: Path, url: str, postgresql_url: str, cluster: bool) -> None:
    a, b = (instance(tmp_path, name, url, postgresql_url) for name in ("a", "b"))
    a.start()
    b.start()
    try:
        create_players(a)
        async with httpx.AsyncClient(base_url=b.base_url) as client:
            tokens = await sessions(client)
        promised = await load([a, b], tokens, LOAD_S)
        assert wait_for(lambda: all_stored(url, postgresql_url, PARTITIONS, cluster), WAIT_S)
        by_a, by_b = stored_by(a), stored_by(b)
        async with httpx.AsyncClient(base_url=a.base_url) as client:
            balances = await balances_now(client)
        names = set(consumers(url, cluster))
    finally:
        a.stop()
        b.stop()
    assert set(promised.per_instance) == {a.base_url, b.base_url} and promised.total() > 100
    assert by_a > 0 and by_b > 0, "one flusher did all the work"
    assert names == {consumer_of(a), consumer_of(b)}  # one stable name each, no other
    assert_exactly_once(url, postgresql_url, PARTITIONS, cluster)
    assert_promises_kept(promised, postgresql_url, balances)
    check = walletd(a.config, "verify", check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    print(f"\ntwo instances{' on a cluster' if cluster else ''}: {promised.total()} bookings answered, "
          f"stored by a {by_a:.0f}, by b {by_b:.0f}")


async def test_a_killed_instances_pending_entries_are_claimed_by_the_other(
    tmp_path: Path, shared_redis: PrivateRedis, postgresql_url: str
) -> None:
    await killed_instances_entries_claimed(tmp_path, shared_redis.admin_url, postgresql_url, cluster=False)


async def test_on_a_cluster_a_killed_instances_pending_entries_are_claimed_by_the_other(
    tmp_path: Path, cluster_url: str, postgresql_url: str
) -> None:
    await killed_instances_entries_claimed(tmp_path, cluster_url, postgresql_url, cluster=True)


async def killed_instances_entries_claimed(tmp_path: Path, url: str, postgresql_url: str, cluster: bool) -> None:
    a, b = (instance(tmp_path, name, url, postgresql_url, CLAIMS) for name in ("a", "b"))
    a.start()
    b.start()
    assert a.process is not None
    locker = psycopg.connect(postgresql_url)
    try:
        create_players(a)
        assert wait_for(lambda: all_stored(url, postgresql_url, PARTITIONS, cluster), WAIT_S)
        async with httpx.AsyncClient(base_url=b.base_url) as client:
            tokens = await sessions(client)

        def kill_a_holding_entries() -> None:
            # Inserts wait (reads go on): both flushers stop mid-batch, entries pending to them.
            locker.execute("LOCK TABLE ledger IN EXCLUSIVE MODE")
            assert wait_for(lambda: consumers(url, cluster).get(consumer_of(a), 0) > 0, WAIT_S)
            for pid in [*flush_children(a.process.pid), a.process.pid]:  # type: ignore[union-attr]
                os.kill(pid, signal.SIGKILL)
            a.process.wait(10)  # type: ignore[union-attr]
            time.sleep(0.5)  # b books on, its flusher blocked too
            locker.commit()

        promised = await load([a, b], tokens, LOAD_S, during=kill_a_holding_entries)
        # b stores its own, then a's once idle for claim_idle_ms.
        assert wait_for(lambda: all_stored(url, postgresql_url, PARTITIONS, cluster), WAIT_S)
        assert consumers(url, cluster).get(consumer_of(a)) == 0
        async with httpx.AsyncClient(base_url=b.base_url) as client:
            balances = await balances_now(client)
    finally:
        locker.close()
        a.stop()
        b.stop()
    assert promised.per_instance[a.base_url] > 0 and promised.per_instance[b.base_url] > 0
    assert_exactly_once(url, postgresql_url, PARTITIONS, cluster)
    assert_promises_kept(promised, postgresql_url, balances)
    check = walletd(b.config, "verify", check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "Traceback" not in b.log.read_text()


def test_two_instances_configured_with_one_consumer_name_the_second_is_refused(
    tmp_path: Path, shared_redis: PrivateRedis, postgresql_url: str
) -> None:
    url = shared_redis.admin_url
    same = 'consumer = "eu-1"\n'
    a, b = (instance(tmp_path, name, url, postgresql_url, same) for name in ("a", "b"))
    a.start()
    try:
        refused = b.refused()
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "flusher consumer 'eu-1' is held by another walletd instance" in refused.stderr
        assert f"data_dir={tmp_path / 'a' / 'var'}" in refused.stderr  # names the holder
        assert a.process is not None
        for pid in [*flush_children(a.process.pid), a.process.pid]:
            os.kill(pid, signal.SIGKILL)
        a.process.wait(10)
        a.start()  # the same instance restarted at once: its own lease
        assert b.refused().returncode == 2
    finally:
        a.stop()  # a clean stop frees the name
    b.start()
    b.stop()


async def test_one_instance_is_the_flusher_by_configuration_the_other_still_reconciles(
    tmp_path: Path, shared_redis: PrivateRedis, postgresql_url: str
) -> None:
    """flusher.enabled = false: another instance stores this one's bookings, but its
    StarGame journal (under its own data_dir) is settled by its own reconciler."""
    url = shared_redis.admin_url
    a = instance(tmp_path, "a", url, postgresql_url)
    b = instance(tmp_path, "b", url, postgresql_url, "enabled = false\n")
    a.start()
    try:
        walletd(a.config, "player", "create", "611", "--currency", "EUR", "--balance", "10.00")
        request_id = uuid.uuid4().hex  # a writeBet b answered 'fail', outcome unknown
        journal = Journal(directory_of(tmp_path / "b" / "var"), 10, 10)
        journal.note(Note(request_id, "611", "611", 100, 0, int(time.time() * 1000)))
        journal.close()
        b.start()
        assert "--reconcile-only" in flush_child_cmdline(b)
        async with httpx.AsyncClient(base_url=b.base_url) as client:
            body = (await client.get("/stargame", params={"cmd": "writeBet", "uid": "611", "bet": "250",
                                                          "win": "0"})).json()
        assert body["status"] == "success"
        assert wait_for(lambda: len(stored_rows(postgresql_url)) == 3, WAIT_S)
        assert all_stored(url, postgresql_url, PARTITIONS)
        kinds = Counter(kind for _, _, player, kind, _, _ in stored_rows(postgresql_url) if player == "611")
        names = set(consumers(url))
    finally:
        b.stop()
        a.stop()
    # b's reconciler settled its note (a tombstone), a's flusher stored it and b's bet.
    assert kinds == {"open": 1, "tombstone": 1, "bet": 1}
    assert names == {consumer_of(a)}
    assert not [path for path in journal_files(directory_of(tmp_path / "b" / "var"), 10)
                if request_id.encode() in path.read_bytes()]


async def test_two_workers_under_concurrent_load_book_exactly_what_the_balance_allows(tmp_path: Path) -> None:
    server = Server(tmp_path, workers=2, budget_ms=1000).start()  # no bet refused for time under the load
    try:
        walletd(server.config, "player", "create", "sg", "--currency", "EUR", "--balance", "0.37")
        walletd(server.config, "player", "create", "oia", "--currency", "EUR", "--balance", "40.00")
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(base_url=server.base_url, limits=limits, timeout=30) as client:
            token = await new_session(client, "oia")
            sg, oia = await asyncio.gather(
                asyncio.gather(*[client.get("/stargame", params={"cmd": "writeBet", "uid": "sg", "bet": "1",
                                                                 "win": "0"}) for _ in range(100)]),
                asyncio.gather(*[call(client, "changebalance", change("oia", tx, "BET", 1, token=token,
                                                                      round_id=tx)) for tx in range(100)]))
            sg_balance = (await client.get("/stargame", params={"cmd": "getBalance", "uid": "sg"})).json()["cash"]
        check = walletd(server.config, "verify", check=False)  # drains, then compares
    finally:
        server.stop()
    sg_answers = [r.json() for r in sg]
    assert Counter(a["status"] for a in sg_answers) == {"success": 37, "fail": 63}
    assert sorted(a["cash"] for a in sg_answers if a["status"] == "success") == list(range(37))
    assert sg_balance == 0
    assert Counter(error_code(a) or "OK" for a in oia) == {"OK": 40, "OP_31": 60}
    assert sorted(a["data"]["balance"] for a in oia if a["status"] == "OK") == [float(n) for n in range(40)]
    assert check.returncode == 0, check.stdout + check.stderr
