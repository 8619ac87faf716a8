"""app/scripts.Script with redis-py as the script client: its connection errors
and time-outs become app/errors.py's kinds, conservatively (OutcomeUnknown
whenever the script may have been sent), against a real redis-server; and
redis-py's own commands' errors, through app/redis_client.command_errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis
from redis.asyncio import BlockingConnectionPool, Redis

from app.errors import ConnectionFailed, OutcomeUnknown, WalletRefused, WalletUnavailable
from app.redis_client import command_errors, connect
from app.redis_pipe import PipelinedRedis
from app.scripts import Script
from app.settings import RedisSettings
from tests.redis_servers import Proxy, private_redis
from tests.support import BUSY_LUA, port_of

pytestmark = pytest.mark.anyio

INCRBY = "return redis.call('INCRBY', KEYS[1], ARGV[1])"
SHORT = RedisSettings(socket_timeout_ms=300, connect_timeout_ms=500, script_client="redis-py")


@pytest.fixture
async def proxy(redis_url: str) -> AsyncIterator[Proxy]:
    running = await Proxy(port_of(redis_url)).start()
    yield running
    await running.aclose()


async def test_unreachable_redis_is_unavailable() -> None:
    client = connect("redis://127.0.0.1:1/0", SHORT)
    with pytest.raises(WalletUnavailable, match="not sent"):
        await Script(client, INCRBY)(keys=["n"], args=[1])
    await client.aclose()


@pytest.mark.slow
async def test_a_wrong_password_is_unavailable(tmp_path: Path) -> None:
    with private_redis(tmp_path, password="right") as server:
        client = connect(f"redis://:wrong@127.0.0.1:{server.port}/0", SHORT)
        with pytest.raises(WalletUnavailable) as caught:
            await Script(client, INCRBY)(keys=["n"], args=[1])
        assert "wrong" not in str(caught.value)
        await client.aclose()


async def test_a_time_out_is_outcome_unknown(redis_url: str) -> None:
    client = connect(redis_url, SHORT)
    with pytest.raises(OutcomeUnknown, match="may have run"):
        await Script(client, BUSY_LUA)(args=[800_000])
    await asyncio.sleep(0.6)  # let Redis finish before the next test flushes it
    await client.aclose()


async def test_a_connection_cut_after_the_write_is_outcome_unknown(proxy: Proxy, sync_redis: redis.Redis) -> None:
    client = connect(f"redis://127.0.0.1:{proxy.port}/0", RedisSettings(socket_timeout_ms=5000))
    script = Script(client, INCRBY)
    assert await script(keys=["booked"], args=[1]) == 1
    proxy.hold = True
    call = asyncio.ensure_future(script(keys=["booked"], args=[5]))
    for _ in range(100):
        if sync_redis.get("booked") == "6":
            break
        await asyncio.sleep(0.01)
    proxy.cut()
    with pytest.raises(OutcomeUnknown):
        await call
    assert sync_redis.get("booked") == "6"  # it ran
    await client.aclose()


async def test_no_free_pool_connection_is_unavailable(redis_url: str, sync_redis: redis.Redis) -> None:
    pool = BlockingConnectionPool.from_url(redis_url, max_connections=1, timeout=0.1, socket_timeout=2)
    client = Redis.from_pool(pool)
    busy = asyncio.ensure_future(Script(client, BUSY_LUA)(args=[400_000]))
    await asyncio.sleep(0.05)
    with pytest.raises(WalletUnavailable, match="No connection available"):
        await Script(client, INCRBY)(keys=["n"], args=[1])
    assert await busy == 1
    assert sync_redis.get("n") is None
    await client.aclose()


async def test_noscript_falls_back_to_eval(redis_url: str, sync_redis: redis.Redis) -> None:
    client = connect(redis_url, SHORT)
    script = Script(client, INCRBY)
    sync_redis.script_flush()
    assert await script(keys=["n"], args=[2]) == 2
    assert sync_redis.script_exists(script.sha) == [True]
    await client.aclose()


@pytest.mark.parametrize("kind", ["redis-py", "pipelined"])
async def test_a_lua_error_is_wallet_refused(redis_url: str, kind: str) -> None:
    client = connect(redis_url, SHORT) if kind == "redis-py" else PipelinedRedis(redis_url, 0.3, 0.5)
    with pytest.raises(WalletRefused, match="boom"):
        await Script(client, "return redis.error_reply('boom')")()
    await client.aclose()


# --- redis-py's own commands (app/redis_client.command_errors) ---

async def test_a_command_to_an_unreachable_redis_is_connection_failed() -> None:
    client = connect("redis://127.0.0.1:1/0", SHORT)
    with pytest.raises(ConnectionFailed, match="connecting to"), command_errors():
        await client.get("k")
    await client.aclose()


async def test_an_error_reply_to_a_command_is_wallet_refused(redis_url: str, sync_redis: redis.Redis) -> None:
    sync_redis.hset("h", "f", "v")
    client = connect(redis_url, SHORT)
    with pytest.raises(WalletRefused, match="WRONGTYPE"), command_errors():
        await client.get("h")
    await client.aclose()


async def test_a_command_timed_out_is_outcome_unknown(redis_url: str) -> None:
    blocker = connect(redis_url, RedisSettings(socket_timeout_ms=5000))
    busy = asyncio.ensure_future(Script(blocker, BUSY_LUA)(args=[800_000]))
    await asyncio.sleep(0.05)
    client = connect(redis_url, SHORT)
    with pytest.raises(OutcomeUnknown), command_errors():
        await client.get("k")
    assert await busy == 1
    await client.aclose()
    await blocker.aclose()
