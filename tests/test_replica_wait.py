"""redis.replica_acks, the mechanism, against the session's redis-server (it has no
replica, so a WAIT for one always comes short): which calls wait and how each ends.
tests/test_replica_acks.py runs it against a real primary and replica."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis
from redis.exceptions import ResponseError

from app.errors import OutcomeUnknown
from app.redis_pipe import PipelinedRedis
from app.scripts import PRELUDES, Script, source
from app.settings import ConfigError, Settings, check

pytestmark = pytest.mark.anyio

# A script that writes: its reply waits for the replicas when called with confirm.
INCR = "return redis.call('INCR', KEYS[1])"
# The scripts whose answers vouch for money moved or a decision recorded (app/scripts.py).
CONFIRMED = {"admin_adjust", "create_player", "set_blocked", "stargame_book", "stargame_reconcile", "oia_change",
             "oia_cancel", "oia_finish", "oia_status"}


@pytest.fixture
async def acks_pipe(redis_url: str, sync_redis: redis.Redis) -> AsyncIterator[PipelinedRedis]:
    sync_redis.config_resetstat()  # WAITs are counted from here (waits_sent)
    client = PipelinedRedis(redis_url, timeout_s=2.0, connect_timeout_s=1.0, replica_acks=1,
                            replica_ack_timeout_ms=30)
    yield client
    await client.aclose()


def waits_sent(sync_redis: redis.Redis) -> int:
    return int(sync_redis.info("commandstats").get("cmdstat_wait", {}).get("calls", 0))


async def test_a_confirmed_call_that_no_replica_confirms_is_outcome_unknown_and_ran(
        acks_pipe: PipelinedRedis, sync_redis: redis.Redis) -> None:
    with pytest.raises(OutcomeUnknown, match="ran on the primary"):
        await acks_pipe.execute("INCR", "booked", confirm=True)
    assert sync_redis.get("booked") == "1"  # it ran, and it is never re-sent
    assert acks_pipe.replica_ack_shortfalls() == 1
    assert waits_sent(sync_redis) == 1


async def test_in_one_batch_only_the_confirmed_calls_wait_and_one_wait_covers_them(
        acks_pipe: PipelinedRedis, sync_redis: redis.Redis) -> None:
    await acks_pipe.execute("PING")  # connected: the calls below go out in one batch
    sync_redis.config_resetstat()
    results = await asyncio.gather(
        acks_pipe.execute("INCR", "a", confirm=True), acks_pipe.execute("GET", "a"),
        acks_pipe.execute("INCRBY", "a", "x", confirm=True), acks_pipe.execute("INCR", "a", confirm=True),
        acks_pipe.execute("ECHO", "read"), return_exceptions=True)
    first, read, error, second, echo = results
    assert isinstance(first, OutcomeUnknown) and isinstance(second, OutcomeUnknown)
    assert read == "1" and echo == "read"  # reads are not held
    # An error reply is not held: the script refused before writing (or Redis refused it).
    assert isinstance(error, ResponseError) and not isinstance(error, OutcomeUnknown)
    assert sync_redis.get("a") == "2"
    assert waits_sent(sync_redis) == 1
    assert acks_pipe.replica_ack_shortfalls() == 2


async def test_the_answer_comes_at_the_timeout_even_when_redis_times_wait_out_later(
        redis_url: str, sync_redis: redis.Redis) -> None:
    """Redis ends a WAIT at its hz resolution (100 ms at hz 10): the client does not wait
    for that, the held reply fails at replica_ack_timeout_ms. No timing asserted: the
    late WAIT reply must be dropped and the calls after it still get their own replies."""
    sync_redis.config_set("hz", 1)  # Redis times its WAIT out up to a second late
    client = PipelinedRedis(redis_url, timeout_s=5.0, connect_timeout_s=1.0, replica_acks=1,
                            replica_ack_timeout_ms=10)
    try:
        with pytest.raises(OutcomeUnknown, match="no WAIT answer within 10 ms"):
            await client.execute("INCR", "n", confirm=True)
        assert await client.execute("INCR", "n") == 2  # behind the WAIT, its own reply
        with pytest.raises(OutcomeUnknown):
            await client.execute("INCR", "n", confirm=True)
        assert await client.execute("GET", "n") == "3"
        assert client.replica_ack_shortfalls() == 2
    finally:
        sync_redis.config_set("hz", 10)
        await client.aclose()


async def test_without_replica_acks_nothing_waits(redis_url: str, sync_redis: redis.Redis) -> None:
    sync_redis.config_resetstat()
    client = PipelinedRedis(redis_url, timeout_s=2.0, connect_timeout_s=1.0)
    try:
        script = Script(client, *source("set_blocked"))
        assert script.confirm  # a confirmed script, on a client that confirms nothing
        assert await client.execute("INCR", "n", confirm=True) == 1
        assert await script(keys=["{0}:acct:x", "{0}:seq", "{0}:ledger"], args=[1, "x", 0]) == ["NO_PLAYER"]
        assert waits_sent(sync_redis) == 0
        assert client.replica_ack_shortfalls() == 0
    finally:
        await client.aclose()


async def test_scripts_wait_as_their_header_says_and_evalsha_after_noscript_too(
        acks_pipe: PipelinedRedis, sync_redis: redis.Redis) -> None:
    assert {name for name in PRELUDES if source(name)[1].confirm} == CONFIRMED
    blocked = Script(acks_pipe, *source("set_blocked"))
    balance = Script(acks_pipe, *source("balance"))
    keys = ["{0}:acct:x", "{0}:seq", "{0}:ledger"]
    with pytest.raises(OutcomeUnknown):  # NOSCRIPT, then EVAL: confirmed as well
        await blocked(keys=keys, args=[1, "x", 0])
    with pytest.raises(OutcomeUnknown):  # EVALSHA
        await blocked(keys=keys, args=[1, "x", 0])
    assert await balance(keys=["{0}:acct:x"]) == []
    assert waits_sent(sync_redis) == 2
    # An ad-hoc script (no header) confirms nothing.
    assert await Script(acks_pipe, INCR)(keys=["k"]) == 1


async def test_a_lost_connection_fails_held_replies_as_outcome_unknown(
        acks_pipe: PipelinedRedis, sync_redis: redis.Redis) -> None:
    await acks_pipe.execute("PING")
    sync_redis.config_set("hz", 1)
    try:
        call = asyncio.ensure_future(acks_pipe.execute("INCR", "lost", confirm=True))
        for _ in range(100):  # the reply is held once INCR has run
            if sync_redis.get("lost") == "1":
                break
            await asyncio.sleep(0.001)
        sync_redis.client_kill_filter(_type="normal", skipme=True)
        with pytest.raises(OutcomeUnknown):
            await call
        assert sync_redis.get("lost") == "1"
    finally:
        sync_redis.config_set("hz", 10)


def test_settings_keep_the_replicas_wait_within_half_of_each_budget(settings: Settings) -> None:
    settings.redis.replica_acks = 1
    settings.redis.replica_ack_timeout_ms = 20
    check(settings)  # StarGame's 40 ms: 20 to book, 20 for the replicas
    settings.redis.replica_ack_timeout_ms = 21
    with pytest.raises(ConfigError, match=r"half of stargame\.budget_ms"):
        check(settings)
    settings.stargame.budget_ms = 100
    settings.oia.budget_ms = 40
    with pytest.raises(ConfigError, match=r"half of oia\.budget_ms"):
        check(settings)
    settings.redis.replica_acks = 0  # no WAIT: nothing comes out of the budgets
    check(settings)


async def test_a_reply_that_comes_after_its_timer_is_decided_by_its_own_wait(
        acks_pipe: PipelinedRedis, sync_redis: redis.Redis) -> None:
    """A batch written behind a WAIT that Redis is still blocking on gets its replies after
    its own timer has passed (nothing was held then): its WAIT's reply must fail them, not
    leave the callers waiting forever (it did: the shortfall path emptied the held list
    before failing it)."""
    await acks_pipe.execute("PING")
    first = asyncio.ensure_future(acks_pipe.execute("INCR", "q", confirm=True))
    await asyncio.sleep(0.005)  # the first batch and its WAIT are written; Redis blocks on the WAIT
    second = asyncio.ensure_future(acks_pipe.execute("INCR", "q", confirm=True))
    done, _ = await asyncio.wait({first, second}, timeout=5.0)
    assert done == {first, second}, "a held reply was never decided"
    assert all(isinstance(call.exception(), OutcomeUnknown) for call in (first, second))
    assert sync_redis.get("q") == "2"
