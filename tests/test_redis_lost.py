"""A Redis that lost its data next to a ledger store that kept it: its new entry ids
collide with stored ones. Nothing of it may be acknowledged as stored, and serve
and flush refuse to start on it (README "Durability")."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from app import cli, serve
from app.ledger import LedgerConflict
from app.settings import Settings
from app.wallet import Wallet
from tests.process import walletd
from tests.support import OPERATOR, drain, ledger_rows

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


def write_config(settings: Settings) -> Path:
    path = settings.data_path.parent / "walletd.toml"
    path.write_text(f'data_dir = "{settings.data_path}"\n[redis]\nurl = "{settings.redis.url}"\n'
                    f'[storage]\nurl = "{settings.storage_url}"\n')
    return path


async def lose_redis_after_a_flush(settings: Settings, wallet: Wallet, sync_redis: redis.Redis) -> None:
    """Player 611 booked and stored, then Redis loses everything; 611 is re-created and
    deposits again, so the new entries reuse the stored entry ids."""
    await wallet.create_player("611", "EUR", 10000, "DE", "en", "", [], operator_id=OPERATOR)
    await wallet.adjust("611", "deposit", 100, "before")
    await drain(settings)
    sync_redis.flushall()
    await wallet.start()
    await wallet.create_player("611", "EUR", 10100, "DE", "en", "", [], operator_id=OPERATOR)
    await wallet.adjust("611", "deposit", 7, "after")


async def test_entries_of_a_new_redis_that_collide_with_stored_ids_are_never_acknowledged(
    settings: Settings, wallet: Wallet, sync_redis: redis.Redis
) -> None:
    await lose_redis_after_a_flush(settings, wallet, sync_redis)
    before = [dict(row) for row in ledger_rows(settings)]
    with pytest.raises(LedgerConflict, match="other content"):
        await drain(settings)
    assert [dict(row) for row in ledger_rows(settings)] == before  # nothing of the batch stored
    stream = wallet.keys.ledger(wallet.keys.partition("611"))
    assert sync_redis.xpending(stream, "flusher")["pending"] == 2  # still there, not acknowledged
    checked = walletd(write_config(settings), "verify", check=False)
    assert checked.returncode == cli.EXIT_REFUSED and "other content" in checked.stdout, checked.stderr


async def test_serve_and_flush_refuse_a_redis_behind_the_ledger_store(
    settings: Settings, wallet: Wallet, sync_redis: redis.Redis
) -> None:
    await wallet.create_player("611", "EUR", 10000, "DE", "en", "", [], operator_id=OPERATOR)
    await drain(settings)
    await serve.preflight(settings, settings.redis.url)  # in step: starts
    sync_redis.flushall()  # the AOF is lost; the ledger store kept entry 1 of 611's partition
    with pytest.raises(serve.StartupError, match="Redis is behind the ledger store"):
        await serve.preflight(settings, settings.redis.url)
    flush = walletd(write_config(settings), "flush", check=False)
    assert flush.returncode == cli.EXIT_USAGE and "Redis is behind the ledger store" in flush.stderr
    assert "Traceback" not in flush.stderr
    checked = walletd(write_config(settings), "verify", check=False)
    assert checked.returncode == cli.EXIT_REFUSED and "Redis is behind the ledger store" in checked.stdout
