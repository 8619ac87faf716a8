"""app/runtime.py: each process gets the parts it asks for, and close() undoes them all."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError

from app.ledger import StoreUnavailable
from app.ledger.sqlite import SqliteStore
from app.runtime import Runtime
from app.settings import Settings

pytestmark = pytest.mark.anyio


async def test_a_command_gets_the_wallet_on_redis_py_and_no_ledger(settings: Settings) -> None:
    async with Runtime(settings, settings.redis.url) as runtime:
        assert runtime.script_client is runtime.redis
        assert runtime.journal is None and runtime.store is None and runtime.flusher is None
        assert runtime.oia_wallet.wallet is runtime.wallet  # held, not copied
        assert await runtime.wallet.profile("nobody") is None  # started: the scripts are loaded


async def test_serving_gets_its_own_script_client_and_the_journal(settings: Settings) -> None:
    runtime = Runtime(settings, settings.redis.url, serving=True)
    try:
        assert runtime.script_client is not runtime.redis  # redis.script_client = "pipelined"
        assert runtime.journal is not None
    finally:
        await runtime.close()


async def test_close_without_start_closes_the_ledger_store_and_leaves_redis_as_it_was(
    settings: Settings, sync_redis: redis.Redis
) -> None:
    runtime = Runtime(settings, settings.redis.url, ledger=True)
    store = runtime.store
    assert store is not None and runtime.flusher is not None and runtime.reconciler is not None
    await runtime.close()
    assert sync_redis.dbsize() == 0  # not started: nothing written
    with pytest.raises(sqlite3.ProgrammingError):
        store.seq_max(0)  # closed


async def test_close_stops_the_background_tasks(settings: Settings) -> None:
    settings.flusher.tick_ms = 10
    runtime = Runtime(settings, settings.redis.url, ledger=True)
    async with runtime:
        runtime.start_background()
        task = runtime.flusher_task
        assert task is not None and not task.done()
    assert task.done() and not task.cancelled()  # asked to exit, finished its round


async def test_a_failed_start_still_closes_what_was_built(settings: Settings) -> None:
    settings.redis.connect_timeout_ms = 500
    runtime = Runtime(settings, "redis://127.0.0.1:1/0", ledger=True)
    store = runtime.store
    assert store is not None
    with pytest.raises(RedisConnectionError):
        async with runtime:
            pytest.fail("started without Redis")
    with pytest.raises(sqlite3.ProgrammingError):
        store.seq_max(0)  # closed


def open_files_under(directory: Path) -> list[str]:
    """This process's open files (fds, and so sqlite's -wal/-shm too) under directory."""
    names = []
    for fd in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):  # an fd closed while listing
            target = os.readlink(fd)
            if target.startswith(str(directory)):
                names.append(target)
    return names


class PartFailingAfterTheStore(Runtime):
    """A real Runtime with one more part after the ledger store, whose building fails
    (as a metrics exporter whose port is taken would)."""

    def build_ledger(self) -> None:
        super().build_ledger()
        raise OSError("the part after the store could not be built")


async def test_a_construction_that_fails_half_way_closes_what_it_built(settings: Settings) -> None:
    with pytest.raises(OSError, match="could not be built") as failed:
        PartFailingAfterTheStore(settings, settings.redis.url, serving=True, ledger=True)
    # The half-built runtime is still reachable (from the traceback), its store with it:
    # only closing, not garbage collection, can have let go of the file.
    assert failed.traceback is not None
    store_file = Path(settings.storage_url.removeprefix("sqlite:///"))
    assert store_file.exists()  # it was opened
    assert open_files_under(store_file.parent) == []


async def test_a_store_that_fails_to_open_holds_no_file(settings: Settings) -> None:
    path = settings.data_path / "ledger.db"
    SqliteStore(str(path)).close()
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("PRAGMA locking_mode=EXCLUSIVE")
        holder.execute("BEGIN EXCLUSIVE")
        with pytest.raises(StoreUnavailable, match="locked") as failed:
            SqliteStore(str(path), busy_timeout_ms=0)
    finally:
        holder.close()
    assert failed.traceback is not None  # the half-opened store stays reachable, as above
    assert open_files_under(settings.data_path) == []
