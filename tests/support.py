"""What tests share besides fixtures: the test operators' credentials, and helpers that
read the wallet, drain the stream into the ledger store, or serve the app in process.

Test files import from here (and from the helper modules oia_calls, process,
redis_servers), never from conftest.py or another test file: conftest.py holds
fixtures only, and test_tests_layout.py checks it."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from app.protocols.stargame.journal import directory_of
from app.protocols.stargame.reconciler import Reconciler
from app.runtime import Runtime
from app.settings import Settings
from app.wallet import Wallet
from app.web import create_app

# At least 16 characters and no example value: walletd refuses weak secrets at start
# (app/secret_sources.py), and the tests' configs must start without allow_weak_secrets.
OPERATOR, SECRET = "testcasino", "testcasino-oia-key-7Qm2"
OTHER_OPERATOR, OTHER_SECRET = "othercasino", "othercasino-oia-key-9Zr4"
ADMIN_TOKEN = "tests-admin-bearer-3Kx8"

# Keeps Redis busy (scripts run alone) for ARGV[1] microseconds.
BUSY_LUA = """
local t0 = redis.call('TIME')
local start = tonumber(t0[1]) * 1000000 + tonumber(t0[2])
repeat
  local t = redis.call('TIME')
until tonumber(t[1]) * 1000000 + tonumber(t[2]) - start > tonumber(ARGV[1])
return 1
"""


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/", maxsplit=1)[0])


async def balance_of(wallet: Wallet, player_id: str) -> int:
    account = await wallet.account(player_id)
    assert account is not None
    return account.balance_minor


async def drain(settings: Settings) -> int:
    runtime = Runtime(settings, settings.redis.url, ledger=True)  # not started: Redis is left as it is
    try:
        assert runtime.flusher is not None
        return await runtime.flusher.drain()
    finally:
        await runtime.close()


def ledger_rows(settings: Settings, where: str = "1=1", params: tuple = ()) -> list[sqlite3.Row]:
    db = sqlite3.connect(settings.storage_url.removeprefix("sqlite:///"))
    db.row_factory = sqlite3.Row
    try:
        # where is a test's own clause; the values come as params.
        return db.execute(f"SELECT * FROM ledger WHERE {where} ORDER BY partition, seq", params).fetchall()  # noqa: S608
    finally:
        db.close()


def write_config(settings: Settings) -> Path:
    """A config file naming the test's data_dir, Redis and ledger store, for `walletd` commands."""
    path = settings.data_path.parent / "walletd.toml"
    path.write_text(f'data_dir = "{settings.data_path}"\n[redis]\nurl = "{settings.redis.url}"\n'
                    f'[storage]\nurl = "{settings.storage_url}"\n')
    return path


async def open_client(settings: Settings, redis_url: str = "") -> tuple[httpx.AsyncClient, Any]:
    """A client for the app in process, called from 127.0.0.1, and the app (its lifespan
    not run yet: the caller runs it, and may look at app.state meanwhile)."""
    app = create_app(settings, redis_url or settings.redis.url)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://w"), app


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app in process (lifespan run): for tests that serve more than once, or after
    changing Redis underneath."""
    client, app = await open_client(settings)
    async with app.router.lifespan_context(app), client:
        yield client


async def sg(client: httpx.AsyncClient, **params: str) -> dict:
    """A StarGame call's JSON answer (StarGame answers every call with 200)."""
    r = await client.get("/stargame", params=params)
    assert r.status_code == 200
    return r.json()


def reconciler_for(settings: Settings, wallet: Wallet) -> Reconciler:
    return Reconciler(wallet.scripts, wallet.keys, settings.stargame, directory_of(settings.data_path))
