"""The StarGame journal when the disk misbehaves, and StarGame's log when Redis is
down: a note is either durable and whole or the booking is never sent / the
failure is reported; a torn note never blocks a file; an outage is not a log flood.
Real Redis, real files, a real process for the full disk (RLIMIT_FSIZE)."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import redis

from app.errors import WalletRefused
from app.logsafe import RateLimitedLog
from app.protocols.stargame import handler as stargame
from app.protocols.stargame.journal import ENCODER, Journal, Note, directory_of, journal_files
from app.settings import ConfigError, Settings, check
from app.wallet import Wallet
from tests.oia_calls import redis_state
from tests.redis_servers import private_redis
from tests.support import OPERATOR, open_client, reconciler_for, sg

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent


async def test_a_journal_that_cannot_be_written_refuses_write_bets_before_booking(
    settings: Settings, wallet: Wallet, sync_redis: redis.Redis
) -> None:
    # Tests run as root, so a read-only mode would not stop them: a file stands where
    # the journal directory must be created (a wrong owner, a read-only mount alike).
    await wallet.create_player("sg1", "EUR", 5000, "DE", "de", "", [], operator_id=OPERATOR)
    settings.data_path.mkdir(parents=True, exist_ok=True)
    directory_of(settings.data_path).write_text("not a directory")
    client, app = await open_client(settings)
    async with app.router.lifespan_context(app), client:  # type: ignore[attr-defined]
        assert (await sg(client, cmd="getBalance", uid="sg1"))["status"] == "success"
        before = redis_state(sync_redis)
        body = await sg(client, cmd="writeBet", uid="sg1", bet="100", win="0")
        # Sent, its reply lost, it could not be noted: a charge nobody would reverse.
        assert body["status"] == "fail" and "not writable" in body["error"], body
        assert redis_state(sync_redis) == before


NOTE_ON_A_FULL_DISK = """
import resource, signal, sys
from pathlib import Path
from app.protocols.stargame.journal import Journal, Note
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit is cut short, like ENOSPC
journal = Journal(Path(sys.argv[1]), 10, 10)
journal.has_room()
resource.setrlimit(resource.RLIMIT_FSIZE, (40, 40))  # the disk fills: 40 bytes fit
try:
    journal.note(Note("ab" * 16, "sg1", "117", 100, 0, 1))
except OSError as exc:
    print("refused", exc)
else:
    print("noted")
"""


@pytest.mark.slow
def test_a_note_cut_short_by_a_full_disk_is_reported_and_leaves_no_torn_line(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", NOTE_ON_A_FULL_DISK, str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=30, check=True)
    # A short write taken as durable would be logged "noted for the reconciler" while
    # the reconciler can never read it (and the next note would be glued to it).
    assert done.stdout.startswith("refused"), done.stdout + done.stderr
    for path in journal_files(tmp_path, 10):
        content = path.read_bytes()
        assert content == b"" or content.endswith(b"\n"), content


async def player_and_journal_directory(settings: Settings, wallet: Wallet) -> Path:
    """Player sg1, and the journal directory, created empty for the test to write notes into."""
    await wallet.create_player("sg1", "EUR", 5000, "DE", "de", "", [], operator_id=OPERATOR)
    directory = directory_of(settings.data_path)
    directory.mkdir(parents=True)
    return directory


async def test_a_dead_writers_torn_last_note_does_not_keep_its_file_forever(
    settings: Settings, wallet: Wallet, sync_redis: redis.Redis
) -> None:
    directory = await player_and_journal_directory(settings, wallet)
    whole = Note(uuid.uuid4().hex, "sg1", "sg1", 100, 0, int(time.time() * 1000))
    torn = ENCODER.encode(Note(uuid.uuid4().hex, "sg1", "sg1", 100, 0, int(time.time() * 1000)))[:30]
    (directory / "123-abc.journal").write_bytes(ENCODER.encode(whole) + b"\n" + torn)  # writer died mid-note
    reconciler = reconciler_for(settings, wallet)
    assert await reconciler.reconcile_all() == 1
    assert reconciler.counts["tombstoned"] == 1
    # Left there it would count against journal_files_max on every pass, for ever.
    assert journal_files(directory, 10) == []
    assert list(directory.iterdir()) == []


@pytest.mark.slow
async def test_a_redis_outage_is_logged_once_not_per_stargame_call(
    tmp_path: Path, settings: Settings, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stargame, "limited_log", RateLimitedLog(stargame.log))  # no earlier test's state
    with private_redis(tmp_path / "redis") as server:
        settings.redis.url = server.admin_url
        client, app = await open_client(settings, server.admin_url)
        async with app.router.lifespan_context(app), client:  # type: ignore[attr-defined]
            server.stop()
            caplog.set_level(logging.INFO, logger="walletd")
            for i in range(20):
                body = await sg(client, cmd="getBalance", uid=f"p{i}")
                assert body == {"status": "fail", "error": "wallet unavailable"}
    # Said once by whichever part met it first: the booking client (walletd.redis) or StarGame.
    lines = [r for r in caplog.records if r.name in ("walletd.stargame", "walletd.redis")]
    assert 1 <= len(lines) <= 2, [r.getMessage() for r in lines]


def test_every_worker_gets_a_journal_file(tmp_path: Path) -> None:
    # Each process serving StarGame holds one file open for its next note: with fewer
    # files allowed than workers, some worker would refuse every writeBet.
    first, second = Journal(tmp_path, 10, 1), Journal(tmp_path, 10, 1)
    assert first.has_room() and not second.has_room()
    first.close()
    settings = Settings()
    settings.server.workers, settings.stargame.journal_files_max = 4, 2
    with pytest.raises(ConfigError, match=r"journal_files_max must be at least server\.workers"):
        check(settings)


def test_has_room_does_not_wait_for_a_note_being_fsynced(tmp_path: Path) -> None:
    # has_room runs on the event loop for every writeBet; note() holds the lock through
    # its fsync in a thread. Waiting for it would stall every callback of the process.
    journal = Journal(tmp_path, 10, 10)
    assert journal.has_room()
    journal.lock.acquire()  # a note is being written and fsynced (a slow disk)
    release = threading.Timer(2.0, journal.lock.release)
    release.start()
    started = time.monotonic()
    try:
        assert journal.has_room()
        assert time.monotonic() - started < 1.0
    finally:
        release.join()
        journal.close()


RECONCILE_ONCE = """
import asyncio, sys
from pathlib import Path
from app.redis_client import connect
from app.protocols.stargame.reconciler import Reconciler
from app.settings import Settings
from app.wallet import Wallet

async def main(url, directory):
    settings = Settings()
    client = connect(url, settings.redis)
    wallet = Wallet(client, settings.wallet)
    try:
        await wallet.start()
        for _ in range(3):
            await Reconciler(wallet.scripts, wallet.keys, settings.stargame, Path(directory)).reconcile_all()
    finally:
        await client.aclose()

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


@pytest.mark.slow
def test_two_reconcilers_on_one_journal_do_not_trip_over_each_other(
    tmp_path: Path, redis_url: str, sync_redis: redis.Redis
) -> None:
    # `walletd flush` started by hand beside `walletd serve`: two reconcilers read the
    # same files. Settling is idempotent; their offset files must be too.
    directory = tmp_path / "journal"
    journal = Journal(directory, 2000, 10)
    now_ms = int(time.time() * 1000)
    for i in range(2000):
        journal.note(Note(uuid.uuid4().hex, f"p{i % 20}", "u", 100, 0, now_ms))
    journal.close()
    runs = [subprocess.Popen([sys.executable, "-c", RECONCILE_ONCE, redis_url, str(directory)], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for run in runs:
        _, err = run.communicate(timeout=120)
        assert run.returncode == 0, err[-2000:]
    assert list(directory.iterdir()) == []  # every note settled, the file and its offsets gone
    assert len(sync_redis.keys("*sgreq*")) == 2000  # each note settled (tombstoned) exactly once


async def test_a_note_that_cannot_be_settled_does_not_starve_other_files(
    settings: Settings, wallet: Wallet, sync_redis: redis.Redis
) -> None:
    directory = await player_and_journal_directory(settings, wallet)
    now_ms = int(time.time() * 1000)
    # A record whose account is gone (deleted by hand, an older backup restored):
    # the reconcile script refuses it, on every pass.
    stuck = Note(uuid.uuid4().hex, "gone", "gone", 100, 0, now_ms)
    partition = wallet.keys.partition("gone")
    sync_redis.set(wallet.keys.stargame_request(partition, stuck.request_id), "booked|100|0|1-1")
    (directory / "1-a.journal").write_bytes(ENCODER.encode(stuck) + b"\n")
    fine = Note(uuid.uuid4().hex, "sg1", "sg1", 100, 0, now_ms)
    (directory / "2-b.journal").write_bytes(ENCODER.encode(fine) + b"\n")
    reconciler = reconciler_for(settings, wallet)
    with pytest.raises(WalletRefused):
        await reconciler.reconcile_all()  # the pass fails (logged, retried) ...
    assert reconciler.counts["tombstoned"] == 1  # ... but the other file's note is settled
    assert journal_files(directory, 10) == [directory / "1-a.journal"]
