"""A Redis that lost its data next to a ledger store that kept it: its new entry ids
collide with stored ones. Nothing of it may be acknowledged as stored, walletd serves
nothing on it (README "Cold start") and verify reports it."""

from __future__ import annotations

import pytest
import redis

from app import cli, serve
from app.ledger import LedgerConflict
from app.settings import Settings
from app.wallet import Wallet
from tests.process import walletd
from tests.support import OPERATOR, drain, ledger_rows, write_config

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


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


async def test_serve_starts_on_a_redis_behind_the_ledger_store_without_writing_and_verify_reports_it(
    settings: Settings, wallet: Wallet, sync_redis: redis.Redis
) -> None:
    await wallet.create_player("611", "EUR", 10000, "DE", "en", "", [], operator_id=OPERATOR)
    await drain(settings)
    sync_redis.flushall()  # the AOF is lost; the ledger store kept entry 1 of 611's partition
    # It starts, to refuse every callback until Redis is rebuilt (tests/test_cold_start.py).
    await serve.preflight(settings, settings.redis.url)
    assert sync_redis.dbsize() == 0  # not even the meta hash: rebuild writes it
    checked = walletd(write_config(settings), "verify", check=False)
    assert checked.returncode == cli.EXIT_REFUSED and "Redis is behind the ledger store" in checked.stdout
    assert sync_redis.dbsize() == 0
