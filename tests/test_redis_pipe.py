"""The pipelined hot-path client against a real redis-server: replies reach the
right callers, errors and time-outs never shift them, NOSCRIPT and lost
connections recover, and nothing is ever re-sent."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError, ResponseError, TimeoutError as RedisTimeout

from app.redis_pipe import PipelinedRedis, encode_command
from app.scripts import Script
from tests.test_oia_transactions import BUSY_LUA

pytestmark = pytest.mark.anyio


@pytest.fixture
async def pipe(redis_url: str) -> AsyncIterator[PipelinedRedis]:
    client = PipelinedRedis(redis_url, timeout_s=0.3, connect_timeout_s=1.0)
    yield client
    await client.aclose()


async def test_concurrent_calls_each_get_their_own_reply(pipe: PipelinedRedis) -> None:
    replies = await asyncio.gather(*(pipe.execute("INCRBY", "counter", i) for i in range(1, 301)))
    assert sorted(replies) == sorted(set(replies))  # 300 distinct running totals
    assert max(replies) == sum(range(1, 301))
    echoes = await asyncio.gather(*(pipe.execute("ECHO", f"v{i}") for i in range(300)))
    assert echoes == [f"v{i}" for i in range(300)]


async def test_an_error_reply_goes_to_its_caller_only(pipe: PipelinedRedis) -> None:
    ok, failed, after = await asyncio.gather(pipe.execute("SET", "k", "1"), pipe.execute("INCRBY", "k", "x"),
                                             pipe.execute("GET", "k"), return_exceptions=True)
    assert ok == "OK"
    assert isinstance(failed, ResponseError) and "not an integer" in str(failed)
    assert after == "1"


async def test_noscript_falls_back_to_eval_once(pipe: PipelinedRedis, sync_redis: redis.Redis) -> None:
    script = Script(pipe, "return redis.call('INCRBY', KEYS[1], ARGV[1])")
    sync_redis.script_flush()
    assert await script(keys=["n"], args=[5]) == 5
    assert sync_redis.script_exists(script.sha) == [True]
    assert await script(keys=["n"], args=[2]) == 7


async def test_a_timed_out_call_fails_and_its_late_reply_is_dropped(pipe: PipelinedRedis) -> None:
    busy = asyncio.ensure_future(pipe.execute("EVAL", BUSY_LUA, 0, 800_000))  # 0.8 s > 0.3 s time-out
    echo = asyncio.ensure_future(pipe.execute("ECHO", "queued behind"))
    with pytest.raises(RedisTimeout):
        await busy
    with pytest.raises(RedisTimeout):
        await echo  # waited past the time-out behind the busy script: outcome unknown too
    await asyncio.sleep(0.7)  # Redis is free again; both late replies arrive and are dropped
    assert await pipe.execute("ECHO", "fresh") == "fresh"


async def test_a_lost_connection_fails_calls_in_flight_and_reconnects(pipe: PipelinedRedis,
                                                                       sync_redis: redis.Redis) -> None:
    assert await pipe.execute("PING") == "PONG"
    sync_redis.client_kill_filter(_type="normal", skipme=True)
    await asyncio.sleep(0.1)
    with contextlib.suppress(RedisConnectionError):
        await pipe.execute("PING")  # may fail once: the kill may still be in flight
    assert await pipe.execute("ECHO", "again") == "again"


async def test_unreachable_redis_is_a_connection_error() -> None:
    client = PipelinedRedis("redis://127.0.0.1:1/0", timeout_s=0.3, connect_timeout_s=0.5)
    with pytest.raises(RedisConnectionError):
        await client.execute("PING")
    await client.aclose()


def test_amounts_are_never_floats() -> None:
    assert encode_command(("INCRBY", b"k", 5)) == b"*3\r\n$6\r\nINCRBY\r\n$1\r\nk\r\n$1\r\n5\r\n"
    with pytest.raises(AssertionError):
        encode_command(("INCRBY", "k", 0.1))
