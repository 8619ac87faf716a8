"""Retries after the transaction record's retention (issue 9, items 1 and 9): a booked id is
never booked again while the ledger store holds it."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import httpx
import pytest
import redis

from app.ledger import StoredEntry
from app.settings import Settings
from app.sqlite_store import SqliteStore
from app.wallet import Wallet
from tests.conftest import balance_of, drain, ledger_rows
from tests.oia_calls import call, change, error_code

pytestmark = pytest.mark.anyio


@pytest.fixture
def short_retention(settings: Settings) -> Settings:
    settings.oia.retention_s = 1
    return settings


def cancel(player: str, tx: int) -> dict:
    return {"user_id": player, "transaction_id": tx, "round_id": 1, "round_finished": None, "game_id": 200}


async def records_expire(sync_redis: redis.Redis) -> None:
    deadline = time.monotonic() + 5
    while sync_redis.keys("*:tx:*") and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert sync_redis.keys("*:tx:*") == []


async def test_a_retry_of_an_id_cancelled_after_retention_is_op_49(
    short_retention: Settings, client: httpx.AsyncClient, wallet: Wallet, player: str, sync_redis: redis.Redis
) -> None:
    settings = short_retention
    await call(client, "changebalance", change(player, 1, "WIN", 5))
    await drain(settings)
    await records_expire(sync_redis)
    assert (await call(client, "cancel", cancel(player, 1)))["data"]["transaction_status"] == "CANCELED"
    assert error_code(await call(client, "changebalance", change(player, 1, "WIN", 5))) == "OP_49"
    # Other data for the cancelled id is still a duplicate id.
    assert error_code(await call(client, "changebalance", change(player, 1, "WIN", 6))) == "OP_40"
    assert await balance_of(wallet, player) == 10000
    await drain(settings)
    kinds = [(r["kind"], r["amount_minor"]) for r in ledger_rows(settings, "source = 'oia'")]
    assert kinds == [("win", 500), ("cancel", -500)]


OLD_SCHEMA = """
CREATE TABLE ledger (
    entry_id TEXT PRIMARY KEY, partition INTEGER NOT NULL, seq INTEGER NOT NULL, player_id TEXT NOT NULL,
    kind TEXT NOT NULL, amount_minor INTEGER NOT NULL, balance_after_minor INTEGER NOT NULL,
    source TEXT NOT NULL, ref TEXT NOT NULL, ts_ms INTEGER NOT NULL, UNIQUE (partition, seq));
INSERT INTO ledger VALUES ('3:1', 3, 1, '611', 'win', 500, 10500, 'oia', 'testcasino|1', 1);
"""


def test_a_ledger_file_without_fingerprints_gets_the_column_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(OLD_SCHEMA)
    db.close()
    store = SqliteStore(str(path))
    try:
        assert store.find("611", "oia", "testcasino|1") == [StoredEntry("win", 500, 10500, "")]
    finally:
        store.close()
    store = SqliteStore(str(path))  # a second open finds the column there
    store.close()


async def test_a_record_restored_from_a_row_without_fingerprint_compares_type_and_amount(
    short_retention: Settings, client: httpx.AsyncClient, wallet: Wallet, player: str, sync_redis: redis.Redis
) -> None:
    settings = short_retention
    await call(client, "changebalance", change(player, 1, "WIN", 5))
    await drain(settings)
    db = sqlite3.connect(settings.storage_url.removeprefix("sqlite:///"))
    with db:
        db.execute("UPDATE ledger SET fp = ''")  # as if stored before fingerprints were kept
    db.close()
    await records_expire(sync_redis)
    assert (await call(client, "cancel", cancel(player, 1)))["status"] == "OK"
    assert error_code(await call(client, "changebalance", change(player, 1, "WIN", 5))) == "OP_49"
    assert error_code(await call(client, "changebalance", change(player, 1, "WIN", 7))) == "OP_40"
    assert error_code(await call(client, "changebalance", change(player, 1, "BET", 5))) == "OP_40"
    assert await balance_of(wallet, player) == 10000
