"""redis.replica_acks against a real primary and replica (AOF always; tests/redis_replicas.py):
an answered booking is on the replica when the answer comes; a booking the replica does
not confirm in time answers "outcome unknown" in each protocol's way (OIA OP_47, StarGame
fail settled by the reconciler), is never re-sent, and its retry answers the original once
the replica has it; reads never wait; with replica_acks = 0 nothing waits."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import redis

from app.errors import OutcomeUnknown
from app.redis_pipe import PipelinedRedis
from app.runtime import Runtime
from app.settings import Settings
from app.wallet import Wallet
from tests.oia_calls import call, change, error_code, new_session
from tests.redis_replicas import ReplicatedRedis
from tests.support import OPERATOR, open_client, reconciler_for, sg

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

# The replica is paused this long while a booking waits for it (the booking's WAIT outlasts it).
PAUSE_S = 0.3


@pytest.fixture
def acks(settings: Settings, replicated: ReplicatedRedis) -> Settings:
    settings.redis.url = replicated.url
    settings.redis.replica_acks = 1
    # Generous (the default is 20 ms): a replica fsyncing on a loaded 2-core machine can take
    # longer, and these tests pause the replica when they mean it not to confirm.
    settings.redis.replica_ack_timeout_ms = 500
    settings.stargame.budget_ms = 2000  # (the WAIT may take at most half of it)
    return settings


@pytest.fixture
async def acks_wallet(acks: Settings) -> AsyncIterator[Wallet]:
    async with Runtime(acks, acks.redis.url) as runtime:
        yield runtime.wallet


@contextlib.asynccontextmanager
async def instance(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, PipelinedRedis]]:
    """A walletd server in process (one instance: its own Redis connection) and its script client."""
    client, app = await open_client(settings)
    async with app.router.lifespan_context(app), client:  # type: ignore[attr-defined]
        script_client = app.state.service.runtime.script_client  # type: ignore[attr-defined]
        assert isinstance(script_client, PipelinedRedis)
        yield client, script_client


@contextlib.contextmanager
def node(replicated: ReplicatedRedis, primary: bool) -> Iterator[redis.Redis]:
    with contextlib.closing(replicated.client(replicated.primary if primary else replicated.replica)) as client:
        yield client


def balance_on(replicated: ReplicatedRedis, wallet: Wallet, player: str, primary: bool) -> int:
    with node(replicated, primary) as client:
        return int(client.hget(wallet.keys.account(player), "bal"))


def waits_sent(replicated: ReplicatedRedis) -> int:
    with node(replicated, primary=True) as client:
        return int(client.info("commandstats").get("cmdstat_wait", {}).get("calls", 0))


async def paused_until_resumed(replicated: ReplicatedRedis, request: Any) -> tuple[Any, bool]:
    """request's result, with the replica paused until PAUSE_S after it began, and whether
    the replica had been resumed by the time the result came."""
    resumed = asyncio.Event()

    def resume() -> None:
        replicated.resume()
        resumed.set()

    replicated.pause()
    asyncio.get_running_loop().call_later(PAUSE_S, resume)
    result = await request
    answered_after_resume = resumed.is_set()
    await resumed.wait()
    return result, answered_after_resume


async def player_611(wallet: Wallet) -> str:
    await wallet.create_player("611", "EUR", 10000, "DE", "en", "John Doe", [], operator_id=OPERATOR)
    return "611"


async def test_an_answered_booking_is_on_the_replica_when_its_answer_comes(
        acks: Settings, acks_wallet: Wallet, replicated: ReplicatedRedis) -> None:
    acks.redis.replica_ack_timeout_ms = 1000  # longer than the pause: the WAIT outlasts it
    player = await player_611(acks_wallet)
    async with instance(acks) as (client, _):
        token = await new_session(client, player)
        assert (await sg(client, cmd="getBalance", uid=player))["status"] == "success"

        bet, after_resume = await paused_until_resumed(
            replicated, call(client, "changebalance", change(player, 1, "BET", 5, token=token)))
        assert error_code(bet) is None and bet["data"]["balance"] == 95.0
        assert after_resume  # held until the replica confirmed it (replica_acks = 0 answers at once)
        assert balance_on(replicated, acks_wallet, player, primary=False) == 9500

        spin, after_resume = await paused_until_resumed(
            replicated, sg(client, cmd="writeBet", uid=player, bet="200", win="50"))
        assert spin["status"] == "success" and spin["cash"] == 9350
        assert after_resume
        assert balance_on(replicated, acks_wallet, player, primary=False) == 9350


async def test_a_bet_the_replica_does_not_confirm_is_op_47_and_its_retry_the_original_once_it_does(
        acks: Settings, acks_wallet: Wallet, replicated: ReplicatedRedis) -> None:
    player = await player_611(acks_wallet)
    await acks_wallet.create_player("612", "EUR", 10000, "DE", "en", "Jane Doe", [], operator_id=OPERATOR)
    async with instance(acks) as (first, first_client), instance(acks) as (second, second_client):
        token = await new_session(first, player)
        # The second instance's connection wrote last before the pause, and the replica
        # confirmed that: a WAIT of its own covers nothing newer.
        assert error_code(await call(second, "changebalance", change("612", 9, "WIN", 1))) is None

        replicated.pause()
        try:
            bet = change(player, 1, "BET", 5, token=token)
            answer = await call(first, "changebalance", bet)
            assert error_code(answer) == "OP_47" and "outcome unknown" in answer["data"]["error_message"]
            assert balance_on(replicated, acks_wallet, player, primary=True) == 9500  # it ran on the primary
            # The retry on the other instance answers from the record: the record is rewritten
            # as it is (lib/ledger.lua reaffirm), so its WAIT covers the original booking too.
            retry = await call(second, "changebalance", bet)
            assert error_code(retry) == "OP_47"
            status = await call(second, "status", {"user_id": player, "transaction_id": 1})
            assert error_code(status) == "OP_47"
            assert balance_on(replicated, acks_wallet, player, primary=True) == 9500  # nothing re-sent, nothing twice
        finally:
            replicated.resume()
        replicated.wait_synced()

        retry = await call(second, "changebalance", bet)
        assert error_code(retry) is None and retry["data"]["balance"] == 95.0
        assert balance_on(replicated, acks_wallet, player, primary=True) == 9500
        assert balance_on(replicated, acks_wallet, player, primary=False) == 9500
        assert first_client.replica_ack_shortfalls() == 1
        assert second_client.replica_ack_shortfalls() == 2


async def test_a_writebet_the_replica_does_not_confirm_fails_and_the_reconciler_reverses_it(
        acks: Settings, acks_wallet: Wallet, replicated: ReplicatedRedis) -> None:
    await acks_wallet.create_player("sg1", "EUR", 5000, "DE", "de", "", [], operator_id=OPERATOR)
    reconciler = reconciler_for(acks, acks_wallet)  # its settlements wait for the replica too
    async with instance(acks) as (client, _):
        assert (await sg(client, cmd="getBalance", uid="sg1"))["status"] == "success"
        replicated.pause()
        try:
            spin = await sg(client, cmd="writeBet", uid="sg1", bet="100", win="0")
            assert spin["status"] == "fail" and "outcome unknown" in spin["error"]
            assert balance_on(replicated, acks_wallet, "sg1", primary=True) == 4900  # ran on the primary
            # The reversal runs too, but unconfirmed: the note is not settled yet.
            with pytest.raises(OutcomeUnknown):
                await reconciler.reconcile_all()
            assert balance_on(replicated, acks_wallet, "sg1", primary=True) == 5000
        finally:
            replicated.resume()
        replicated.wait_synced()
    assert await reconciler.reconcile_all() == 1  # the same note again: settled before, now confirmed
    assert reconciler.counts == {"done": 1}  # (the reversal's own answer never came: unconfirmed)
    assert await reconciler.reconcile_all() == 0
    # What the platform was told (fail) is what both nodes hold: the spin moved nothing.
    assert balance_on(replicated, acks_wallet, "sg1", primary=True) == 5000
    assert balance_on(replicated, acks_wallet, "sg1", primary=False) == 5000


async def test_reads_do_not_wait_for_replicas(
        acks: Settings, acks_wallet: Wallet, replicated: ReplicatedRedis) -> None:
    player = await player_611(acks_wallet)
    async with instance(acks) as (client, script_client):
        token = await new_session(client, player)
        before = waits_sent(replicated)
        replicated.pause()
        try:
            assert (await sg(client, cmd="getBalance", uid=player))["status"] == "success"
            answer = await call(client, "balance", {"user_id": player, "token": token, "currency_code": "EUR"})
            assert error_code(answer) is None and answer["data"]["balance"] == 100.0
            assert error_code(await call(client, "authenticate", {"token": token})) is None
        finally:
            replicated.resume()
        assert waits_sent(replicated) == before
        assert script_client.replica_ack_shortfalls() == 0


async def test_with_replica_acks_0_a_booking_is_answered_without_the_replica(
        acks: Settings, acks_wallet: Wallet, replicated: ReplicatedRedis) -> None:
    player = await player_611(acks_wallet)
    acks.redis.replica_acks = 0
    async with instance(acks) as (client, _):
        token = await new_session(client, player)
        before = waits_sent(replicated)
        bet, after_resume = await paused_until_resumed(
            replicated, call(client, "changebalance", change(player, 1, "BET", 5, token=token)))
        assert error_code(bet) is None and not after_resume  # answered while the replica was paused
        assert waits_sent(replicated) == before
