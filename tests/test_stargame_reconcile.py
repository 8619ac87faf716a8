"""StarGame writeBets answered 'fail' with their outcome unknown: noted durably,
then settled by the reconciler, against a real Redis and the real SQLite file.

A busy Lua script (BUSY_LUA) holds Redis while walletd's short socket time-out
expires: walletd answers fail, then Redis runs the booking anyway."""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import redis

from app import spawn
from app.ledger.verify import verify
from app.protocols.stargame.journal import Journal, Note, directory_of, journal_files
from app.protocols.stargame.reconciler import done_path
from app.protocols.stargame.wallet import book as stargame_book
from app.redis_server import free_port
from app.runtime import Runtime
from app.settings import ConfigError, Settings, check
from app.wallet import Wallet
from tests.oia_calls import redis_state
from tests.process import environment, write_config
from tests.redis_servers import Proxy
from tests.support import (
    BUSY_LUA,
    OPERATOR,
    balance_of,
    drain,
    ledger_rows,
    open_client,
    port_of,
    reconciler_for,
    sg,
)

pytestmark = pytest.mark.anyio

BUSY_US = 400_000  # Redis is held this long; walletd gives up after 100 ms


@pytest.fixture
def slow(settings: Settings) -> Settings:
    """Redis replies later than walletd waits, but inside the StarGame budget, so the
    booking still runs when Redis is free again."""
    settings.redis.socket_timeout_ms = 100
    settings.stargame.budget_ms = 10_000
    return settings


@pytest.fixture
async def eur(slow: Settings, wallet: Wallet) -> str:
    await wallet.create_player("sg1", "EUR", 5000, "DE", "de", "", ["stargame:501"], operator_id=OPERATOR)
    return "sg1"


@pytest.fixture
async def client(slow: Settings) -> AsyncIterator[httpx.AsyncClient]:
    c, app = await open_client(slow)
    async with app.router.lifespan_context(app), c:  # type: ignore[attr-defined]
        yield c


async def write_bet_while_redis_is_busy(
    client: httpx.AsyncClient, sync_redis: redis.Redis, uid: str, bet: str, win: str
) -> dict:
    assert (await sg(client, cmd="getBalance", uid=uid))["status"] == "success"  # currency known
    blocker = asyncio.create_task(asyncio.to_thread(sync_redis.eval, BUSY_LUA, 0, BUSY_US))
    await asyncio.sleep(0.05)
    body = await sg(client, cmd="writeBet", uid=uid, bet=bet, win=win)
    await blocker
    return body


async def wait_for_balance(wallet: Wallet, player: str, expected: int, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while await balance_of(wallet, player) != expected and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert await balance_of(wallet, player) == expected


async def verify_ok(settings: Settings, wallet: Wallet) -> None:
    runtime = Runtime(settings, settings.redis.url, ledger=True)
    try:
        assert runtime.flusher is not None
        assert await verify(runtime.flusher) == []
    finally:
        await runtime.close()


def stargame_rows(settings: Settings, player: str) -> list[tuple[str, int, str, str]]:
    rows = ledger_rows(settings, "player_id = ? AND kind != 'open'", (player,))
    return [(r["kind"], r["amount_minor"], r["ref"], r["entry_id"]) for r in rows]


async def test_a_landed_bet_answered_fail_is_reversed_exactly_once(
    client: httpx.AsyncClient, eur: str, wallet: Wallet, settings: Settings, sync_redis: redis.Redis
) -> None:
    body = await write_bet_while_redis_is_busy(client, sync_redis, "501", bet="100", win="0")
    assert body["status"] == "fail" and "outcome unknown" in body["error"]
    await wait_for_balance(wallet, eur, 4900)  # Redis ran it after walletd stopped waiting
    reconciler = reconciler_for(settings, wallet)
    assert await reconciler.reconcile_all() == 1
    assert reconciler.counts["reversed"] == 1
    assert await balance_of(wallet, eur) == 5000

    settled = redis_state(sync_redis)
    assert await reconciler.reconcile_all() == 0  # nothing new in the journal
    for path in journal_files(directory_of(settings.data_path), 10):
        done_path(path).unlink()  # forget how far it got: every note is read again
    again = reconciler_for(settings, wallet)
    assert await again.reconcile_all() == 1
    assert again.counts == {"done": 1}
    assert redis_state(sync_redis) == settled

    await drain(settings)
    (bet, bet_amount, request_id, bet_entry), (reverse, amount, ref, _) = stargame_rows(settings, eur)
    assert (bet, bet_amount, len(request_id)) == ("bet", -100, 32)
    assert (reverse, amount, ref) == ("reverse", 100, bet_entry)
    # Both carry the account's currency (RECORD.md), the bet its request id as ref.
    assert [r["currency"] for r in ledger_rows(settings, "player_id = ? AND kind != 'open'", (eur,))] == ["EUR"] * 2
    await verify_ok(settings, wallet)


async def test_a_bet_with_a_win_is_reversed_as_a_whole(
    client: httpx.AsyncClient, eur: str, wallet: Wallet, settings: Settings, sync_redis: redis.Redis
) -> None:
    body = await write_bet_while_redis_is_busy(client, sync_redis, "sg1", bet="300", win="1000")
    assert body["status"] == "fail"
    await wait_for_balance(wallet, eur, 5700)
    assert await reconciler_for(settings, wallet).reconcile_all() == 1
    assert await balance_of(wallet, eur) == 5000
    await drain(settings)
    rows = stargame_rows(settings, eur)
    assert [(kind, amount) for kind, amount, _, _ in rows] == [("bet", -300), ("win", 1000), ("reverse", -700)]
    assert rows[2][2] == f"{rows[0][3]},{rows[1][3]}"  # names both original entries
    await verify_ok(settings, wallet)


async def test_a_landed_win_notification_is_kept(
    client: httpx.AsyncClient, eur: str, wallet: Wallet, settings: Settings, sync_redis: redis.Redis
) -> None:
    body = await write_bet_while_redis_is_busy(client, sync_redis, "sg1", bet="0", win="250")
    assert body["status"] == "fail"
    await wait_for_balance(wallet, eur, 5250)
    reconciler = reconciler_for(settings, wallet)
    assert await reconciler.reconcile_all() == 1
    assert reconciler.counts == {"kept": 1}
    assert await balance_of(wallet, eur) == 5250  # StarGame ignores the answer to a win: it stands


async def test_a_request_that_never_reached_redis_is_tombstoned_and_can_never_land(
    eur: str, wallet: Wallet, settings: Settings, sync_redis: redis.Redis
) -> None:
    request_id = uuid.uuid4().hex
    journal = Journal(directory_of(settings.data_path), 10, 10)
    journal.note(Note(request_id, eur, "501", 100, 0, int(time.time() * 1000)))
    journal.close()
    reconciler = reconciler_for(settings, wallet)
    assert await reconciler.reconcile_all() == 1
    assert reconciler.counts == {"tombstoned": 1}
    assert journal_files(directory_of(settings.data_path), 10) == []  # settled, writer gone: deleted
    # The booking, still in flight somewhere, arrives now: refused, nothing moves.
    booking = await stargame_book(wallet, eur, 100, 0, 0, "EUR", request_id=request_id)
    assert booking.code == "SETTLED"
    assert await balance_of(wallet, eur) == 5000
    state = redis_state(sync_redis)
    assert await reconciler_for(settings, wallet).reconcile_all() == 0
    assert redis_state(sync_redis) == state
    # The tombstone reached the store (a rebuild restores it): a journal entry, nothing moved.
    await drain(settings)
    rows = ledger_rows(settings, "player_id = ? AND kind != 'open'", (eur,))
    assert [(r["kind"], r["amount_minor"], r["balance_after_minor"], r["source"], r["ref"]) for r in rows] == [
        ("tombstone", 0, 5000, "stargame", request_id)]
    await verify_ok(settings, wallet)


async def test_a_walletd_restart_between_the_note_and_the_reconcile_still_reconciles(
    slow: Settings, eur: str, wallet: Wallet, sync_redis: redis.Redis
) -> None:
    c, app = await open_client(slow)
    async with app.router.lifespan_context(app), c:  # type: ignore[attr-defined]
        body = await write_bet_while_redis_is_busy(c, sync_redis, "sg1", bet="100", win="0")
    assert body["status"] == "fail"  # walletd has stopped (its journal file closed) ...
    await wait_for_balance(wallet, eur, 4900)
    files = journal_files(directory_of(slow.data_path), 10)
    assert len(files) == 1 and b'"request_id"' in files[0].read_bytes()
    # ... and a new process (a new Reconciler, nothing in memory) settles the note.
    assert await reconciler_for(slow, wallet).reconcile_all() == 1
    assert await balance_of(wallet, eur) == 5000
    assert journal_files(directory_of(slow.data_path), 10) == []


async def test_the_service_runs_the_reconciler_with_the_flusher(
    slow: Settings, eur: str, wallet: Wallet, sync_redis: redis.Redis
) -> None:
    slow.flusher.enabled = True
    c, app = await open_client(slow)
    async with app.router.lifespan_context(app), c:  # type: ignore[attr-defined]
        body = await write_bet_while_redis_is_busy(c, sync_redis, "sg1", bet="100", win="0")
        assert body["status"] == "fail"
        counts = app.state.service.runtime.reconciler.counts  # type: ignore[attr-defined]
        deadline = time.monotonic() + 10
        while not counts and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        # Reversed if the booking reached Redis first, else tombstoned; 'done' when the
        # reconciler's own first call timed out behind the busy script and ran anyway.
        assert sum(counts[k] for k in ("reversed", "tombstoned", "done")) == 1, counts
        assert await balance_of(wallet, eur) == 5000
    await drain(slow)
    await verify_ok(slow, wallet)


async def test_a_full_journal_refuses_write_bets_before_booking(
    slow: Settings, eur: str, wallet: Wallet, sync_redis: redis.Redis
) -> None:
    slow.stargame.journal_files_max = 2
    directory = directory_of(slow.data_path)
    directory.mkdir(parents=True)
    for name in ("a", "b"):  # unsettled notes of other processes
        (directory / f"{name}.journal").write_bytes(b"")
    c, app = await open_client(slow)
    async with app.router.lifespan_context(app), c:  # type: ignore[attr-defined]
        before = redis_state(sync_redis)
        body = await sg(c, cmd="writeBet", uid="sg1", bet="100", win="0")
        assert body["status"] == "fail" and "journal full" in body["error"]
        assert redis_state(sync_redis) == before
        for name in ("a", "b"):
            (directory / f"{name}.journal").unlink()
        await asyncio.sleep(1.1)  # the directory is listed again at most once a second
        assert (await sg(c, cmd="writeBet", uid="sg1", bet="100", win="0"))["status"] == "success"


async def test_a_journal_file_rolls_and_stays_bounded(tmp_path: Path) -> None:
    journal = Journal(tmp_path, notes_per_file=2, files_max=2)
    for i in range(4):
        assert journal.has_room()
        journal.note(Note(f"{i:032x}", "p", "p", 1, 0, 0))
    assert len(journal_files(tmp_path, 10)) == 2
    assert not journal.has_room()
    journal.close()


async def test_booking_records_the_request_for_the_retention(
    eur: str, wallet: Wallet, settings: Settings, sync_redis: redis.Redis
) -> None:
    request_id = uuid.uuid4().hex
    booking = await stargame_book(wallet, eur, 100, 0, 0, "EUR", request_id=request_id, retention_s=120)
    assert booking.code == "OK"
    key = wallet.keys.stargame_request(wallet.keys.partition(eur), request_id)
    assert sync_redis.get(key).startswith("booked|100|0|")
    assert 0 < sync_redis.pttl(key) <= 120_000


class HoldingProxy(Proxy):
    """Also holds the client's requests (a network that delivers them late) until release()."""

    def __init__(self, target_port: int) -> None:
        super().__init__(target_port)
        self.hold_requests = False
        self.held: list[tuple[asyncio.StreamWriter, bytes]] = []

    async def pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, replies: bool) -> None:
        try:
            while data := await reader.read(65536):
                if replies and self.hold:
                    continue
                if not replies and self.hold_requests:
                    self.held.append((writer, data))
                    continue
                writer.write(data)
        finally:
            if not self.held:
                writer.close()

    def release(self) -> None:
        self.hold_requests = False
        for writer, data in self.held:
            writer.write(data)
        self.held.clear()


@pytest.fixture
async def proxy(redis_url: str) -> AsyncIterator[HoldingProxy]:
    running = await HoldingProxy(port_of(redis_url)).start()
    yield running
    await running.aclose()


async def test_a_connection_lost_after_the_booking_ran_is_reversed(
    slow: Settings, eur: str, wallet: Wallet, proxy: HoldingProxy
) -> None:
    slow.redis.socket_timeout_ms = 5000  # the loss, not a time-out, ends the wait
    c, app = await open_client(slow, f"redis://127.0.0.1:{proxy.port}/0")
    async with app.router.lifespan_context(app), c:  # type: ignore[attr-defined]
        assert (await sg(c, cmd="getBalance", uid="sg1"))["status"] == "success"
        proxy.hold = True  # Redis runs the booking; its reply never comes back ...
        pending = asyncio.create_task(sg(c, cmd="writeBet", uid="sg1", bet="100", win="0"))
        await wait_for_balance(wallet, eur, 4900)
        proxy.cut()  # ... and the connection dies (like kill -9 of Redis mid-reply)
        body = await pending
    assert body["status"] == "fail" and "outcome unknown" in body["error"]
    reconciler = reconciler_for(slow, wallet)
    assert await reconciler.reconcile_all() == 1
    assert reconciler.counts == {"reversed": 1}
    assert await balance_of(wallet, eur) == 5000


async def test_a_booking_delivered_after_its_tombstone_never_lands(
    slow: Settings, eur: str, wallet: Wallet, sync_redis: redis.Redis, proxy: HoldingProxy
) -> None:
    c, app = await open_client(slow, f"redis://127.0.0.1:{proxy.port}/0")
    async with app.router.lifespan_context(app), c:  # type: ignore[attr-defined]
        assert (await sg(c, cmd="getBalance", uid="sg1"))["status"] == "success"
        proxy.hold_requests = True  # the booking is on its way but has not reached Redis
        body = await sg(c, cmd="writeBet", uid="sg1", bet="100", win="0")
        assert body["status"] == "fail" and "outcome unknown" in body["error"]
        reconciler = reconciler_for(slow, wallet)
        assert await reconciler.reconcile_all() == 1
        assert reconciler.counts == {"tombstoned": 1}
        seq_key = wallet.keys.seq(wallet.keys.partition(eur))
        before = sync_redis.get(seq_key)
        proxy.release()  # now it arrives, inside its budget: refused by the tombstone
        await asyncio.sleep(0.3)
        assert await balance_of(wallet, eur) == 5000
        assert sync_redis.get(seq_key) == before


@pytest.mark.slow
async def test_walletd_flush_runs_the_reconciler(
    tmp_path: Path, redis_url: str, eur: str, wallet: Wallet
) -> None:
    config = write_config(tmp_path, free_port(), redis_url, budget_ms=40)
    request_id = uuid.uuid4().hex
    booking = await stargame_book(wallet, eur, 100, 0, 0, "EUR", request_id=request_id)
    assert booking.code == "OK"  # it landed, but say its answer was lost and the note taken:
    directory = directory_of(tmp_path / "var")
    journal = Journal(directory, 10, 10)
    journal.note(Note(request_id, eur, "501", 100, 0, int(time.time() * 1000)))
    journal.close()
    process = subprocess.Popen(spawn.command("app.cli", "--config", str(config), "flush"),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=environment())
    try:
        await wait_for_balance(wallet, eur, 5000, timeout_s=30)
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert journal_files(directory, 10) == []


@pytest.mark.parametrize(("field", "value"), [("request_retention_s", 299), ("journal_files_max", 0),
                                              ("journal_notes_per_file", 0), ("reconcile_interval_ms", 0)])
def test_reconciliation_settings_are_checked(field: str, value: int) -> None:
    settings = Settings()
    setattr(settings.stargame, field, value)
    with pytest.raises(ConfigError, match=field):
        check(settings)


async def test_a_journal_file_deleted_under_the_reconciler_is_skipped(
    settings: Settings, wallet: Wallet, tmp_path: Path
) -> None:
    # A second reconciler (walletd flush beside serve) settled and deleted it meanwhile.
    assert await reconciler_for(settings, wallet).reconcile_file(tmp_path / "gone.journal") == 0
