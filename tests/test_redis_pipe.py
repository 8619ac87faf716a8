"""The pipelined hot-path client against a real redis-server: replies reach the
right callers, errors and time-outs never shift them, NOSCRIPT and lost
connections recover, nothing is ever re-sent, and every failure is exactly one
of app/errors.py's kinds: WalletUnavailable when the call's bytes were never
written, OutcomeUnknown once they were."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
from redis.exceptions import ResponseError

from app import redis_link, redis_pipe
from app.errors import OutcomeUnknown, WalletUnavailable
from app.redis_link import CALL_DEADLINE_MS
from app.redis_pipe import PipelinedRedis, encode_command, encode_parts, evalsha_head
from app.scripts import Script
from tests.redis_servers import PrivateRedis, Proxy, private_redis
from tests.support import BUSY_LUA, port_of

pytestmark = pytest.mark.anyio


@pytest.fixture(params=[pytest.param("asyncio", id="asyncio"),
                        pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop")])
def anyio_backend(request: pytest.FixtureRequest) -> object:
    """walletd serves on uvloop, whose transports differ from asyncio's: both are tested."""
    return request.param


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


def test_a_pre_encoded_evalsha_is_the_same_bytes_as_the_whole_command() -> None:
    sha = "a" * 40
    keys_and_args = ("{3}:acct:p1", "seq", 17, "x|y", b"\xff", "", 0, -5)
    sent = evalsha_head(sha, 3, len(keys_and_args)) + encode_parts(keys_and_args)
    assert sent == encode_command(("EVALSHA", sha, 3, *keys_and_args))


async def test_script_calls_with_each_shape_get_their_replies(pipe: PipelinedRedis) -> None:
    """Each (KEYS, ARGV) count has its own pre-encoded head: a head reused for
    another count would make Redis read the arguments wrongly."""
    echo = Script(pipe, "return {#KEYS, #ARGV, KEYS[1] or '', ARGV[#ARGV] or ''}")
    replies = await asyncio.gather(echo(keys=["k"], args=["a", 2]), echo(keys=[], args=["b"]),
                                   echo(keys=["k", "l"], args=[]), echo(keys=["k"], args=["a", 3]))
    assert replies == [[1, 2, "k", "2"], [0, 1, "", "b"], [2, 0, "k", ""], [1, 2, "k", "3"]]


async def test_noscript_falls_back_to_eval_once(pipe: PipelinedRedis, sync_redis: redis.Redis) -> None:
    script = Script(pipe, "return redis.call('INCRBY', KEYS[1], ARGV[1])")
    sync_redis.script_flush()
    assert await script(keys=["n"], args=[5]) == 5
    assert sync_redis.script_exists(script.sha) == [True]
    assert await script(keys=["n"], args=[2]) == 7


async def test_a_timed_out_call_fails_and_its_late_reply_is_dropped(pipe: PipelinedRedis) -> None:
    busy = asyncio.ensure_future(pipe.execute("EVAL", BUSY_LUA, 0, 800_000))  # 0.8 s > 0.3 s time-out
    echo = asyncio.ensure_future(pipe.execute("ECHO", "queued behind"))
    with pytest.raises(OutcomeUnknown):
        await busy
    with pytest.raises(OutcomeUnknown):
        await echo  # waited past the time-out behind the busy script: outcome unknown too
    await asyncio.sleep(0.7)  # Redis is free again; both late replies arrive and are dropped
    assert await pipe.execute("ECHO", "fresh") == "fresh"


async def test_a_lost_connection_fails_calls_in_flight_and_reconnects(pipe: PipelinedRedis,
                                                                       sync_redis: redis.Redis) -> None:
    assert await pipe.execute("PING") == "PONG"
    sync_redis.client_kill_filter(_type="normal", skipme=True)
    await asyncio.sleep(0.1)
    with contextlib.suppress(WalletUnavailable, OutcomeUnknown):
        await pipe.execute("PING")  # may fail once: the kill may still be in flight
    assert await pipe.execute("ECHO", "again") == "again"


async def test_unreachable_redis_is_wallet_unavailable() -> None:
    client = PipelinedRedis("redis://127.0.0.1:1/0", timeout_s=0.3, connect_timeout_s=0.5)
    with pytest.raises(WalletUnavailable, match=r"cannot connect to Redis at 127\.0\.0\.1:1"):
        await client.execute("PING")
    await client.aclose()


@pytest.fixture
async def proxy(redis_url: str) -> AsyncIterator[Proxy]:
    running = await Proxy(port_of(redis_url)).start()
    yield running
    await running.aclose()


async def test_a_call_written_then_cut_off_is_outcome_unknown_and_did_run(proxy: Proxy,
                                                                           sync_redis: redis.Redis) -> None:
    client = PipelinedRedis(f"redis://127.0.0.1:{proxy.port}/0", timeout_s=5.0, connect_timeout_s=1.0)
    try:
        assert await client.execute("PING") == "PONG"
        proxy.hold = True  # Redis runs the call; its reply never comes back
        call = asyncio.ensure_future(client.execute("INCRBY", "booked", 5))
        for _ in range(100):
            if sync_redis.get("booked"):
                break
            await asyncio.sleep(0.01)
        proxy.cut()
        with pytest.raises(OutcomeUnknown, match="after the call was written"):
            await call
        assert sync_redis.get("booked") == "5"  # it did run: "unavailable" would have been a lie
        proxy.hold = False
        assert await client.execute("INCRBY", "booked", 1) == 6  # reconnected; never re-sent
    finally:
        await client.aclose()


async def test_a_call_queued_when_the_connection_dies_is_unavailable_and_never_sent(
        pipe: PipelinedRedis, sync_redis: redis.Redis) -> None:
    connection = await pipe.connect()
    queued = connection.send(encode_command(("INCRBY", "booked", 5)))  # written at the end of this turn
    assert connection.transport is not None
    connection.transport.abort()  # the connection dies first
    with pytest.raises(WalletUnavailable, match="before the call was written"):
        await queued
    await asyncio.sleep(0.05)
    assert sync_redis.get("booked") is None
    with pytest.raises(WalletUnavailable):  # a call on the dead connection is refused, not queued
        await connection.send(encode_command(("INCRBY", "booked", 5)))
    assert await pipe.execute("INCRBY", "booked", 1) == 1  # the client reconnects


async def test_too_many_calls_in_flight_are_refused_unsent(proxy: Proxy, sync_redis: redis.Redis,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redis_pipe, "PENDING_MAX", 3)
    client = PipelinedRedis(f"redis://127.0.0.1:{proxy.port}/0", timeout_s=0.3, connect_timeout_s=1.0)
    try:
        await client.connect()
        proxy.hold = True
        stalled = [asyncio.ensure_future(client.execute("INCR", "n")) for _ in range(3)]
        await asyncio.sleep(0)
        with pytest.raises(WalletUnavailable, match="already in flight"):
            await client.execute("INCR", "n")
        for call in stalled:
            with pytest.raises(OutcomeUnknown):
                await call
        assert sync_redis.get("n") == "3"  # the refused one never reached Redis
    finally:
        await client.aclose()


@pytest.mark.slow
async def test_busy_redis_refuses_unrun_so_the_call_is_unavailable(tmp_path: Path) -> None:
    with private_redis(tmp_path, extra=("--lua-time-limit", "50")) as server:
        client = PipelinedRedis(server.admin_url, timeout_s=2.0, connect_timeout_s=1.0)
        blocker = PipelinedRedis(server.admin_url, timeout_s=2.0, connect_timeout_s=1.0)
        try:
            await client.connect()
            busy = asyncio.ensure_future(blocker.execute("EVAL", BUSY_LUA, 0, 400_000))
            await asyncio.sleep(0.2)  # past lua-time-limit: Redis answers BUSY to everyone else
            with pytest.raises(WalletUnavailable, match="BUSY"):
                await client.execute("INCR", "n")
            assert await busy == 1
            assert await client.execute("GET", "n") is None
        finally:
            await client.aclose()
            await blocker.aclose()


OUTAGE_CALLS = 50
CALLING_S = 0.5
# Connect attempts while calls keep coming for CALLING_S: the backoff doubles from
# BACKOFF_MIN_S (10, 20, 40, 80 ms) to BACKOFF_MAX_S (100 ms), so 8 at most.
ATTEMPTS_MAX = 8


@pytest.mark.slow
async def test_an_outage_is_logged_once_each_way_and_connect_attempts_are_spaced(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="walletd.redis")
    server = PrivateRedis(tmp_path).start()
    client = PipelinedRedis(server.admin_url, timeout_s=1.0, connect_timeout_s=1.0)
    try:
        assert await client.execute("PING") == "PONG"
        server.stop()
        await asyncio.sleep(0.1)  # the loss reached the client: the next calls are not written
        burst = await asyncio.gather(*(client.execute("PING") for _ in range(OUTAGE_CALLS)), return_exceptions=True)
        assert all(isinstance(r, WalletUnavailable) for r in burst), burst
        assert client.link.failures == 1  # one connect attempt for all of them
        with pytest.raises(WalletUnavailable, match="next connect attempt in"):
            await client.execute("PING")  # inside the backoff: no attempt at all
        assert client.link.failures == 1
        until = time.monotonic() + CALLING_S
        while time.monotonic() < until:
            with pytest.raises(WalletUnavailable):
                await client.execute("PING")
            await asyncio.sleep(0.001)
        assert 2 <= client.link.failures <= ATTEMPTS_MAX
        server.start()  # same port
        up = time.monotonic()
        while True:
            with contextlib.suppress(WalletUnavailable):
                assert await client.execute("PING") == "PONG"
                break
            await asyncio.sleep(0.001)
        assert time.monotonic() - up < redis_link.BACKOFF_MAX_S + 0.2  # slack for a busy machine
    finally:
        await client.aclose()
        server.stop()
    lines = [r.getMessage() for r in caplog.records if r.name == "walletd.redis"]
    assert len(lines) == 2, lines
    assert "unavailable (cannot connect" in lines[0] and "answers again" in lines[1], lines


@pytest.fixture
def blackhole() -> Iterator[int]:
    """A port whose SYNs go unanswered, like a Redis host that is off or cut off: a
    listener whose accept queue (length 1) one connection already fills."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port))
    yield port
    filler.close()
    listener.close()


CONNECT_TIMEOUT_S = 1.0
BUDGET_MS = 50
# A busy 2-core machine's event loop; far below CONNECT_TIMEOUT_S.
LOOP_SLACK_S = 0.3


async def test_a_call_stops_waiting_for_a_connect_at_its_deadline(blackhole: int) -> None:
    client = PipelinedRedis(f"redis://127.0.0.1:{blackhole}/0", timeout_s=1.0, connect_timeout_s=CONNECT_TIMEOUT_S)
    try:
        async def call_with_budget() -> float:
            CALL_DEADLINE_MS.set(int(time.time() * 1000) + BUDGET_MS)  # as a callback's handler does
            started = time.monotonic()
            with pytest.raises(WalletUnavailable, match="before the call's deadline; the call was not sent"):
                await client.execute("INCR", "n")
            return time.monotonic() - started

        waited = await asyncio.gather(*(asyncio.create_task(call_with_budget()) for _ in range(5)))
        assert max(waited) < BUDGET_MS / 1000 + LOOP_SLACK_S, waited
        assert client.connecting is not None and client.link.failures == 0  # the one connect goes on
        started = time.monotonic()
        with pytest.raises(WalletUnavailable, match="cannot connect to Redis"):
            await client.execute("INCR", "n")  # no deadline (not a callback): the whole connect time-out
        assert time.monotonic() - started > CONNECT_TIMEOUT_S / 2
        assert client.link.failures == 1 and client.link.down
    finally:
        await client.aclose()


def test_amounts_are_never_floats() -> None:
    assert encode_command(("INCRBY", b"k", 5)) == b"*3\r\n$6\r\nINCRBY\r\n$1\r\nk\r\n$1\r\n5\r\n"
    with pytest.raises(AssertionError):
        encode_command(("INCRBY", "k", 0.1))
