"""walletd verify: passes on a clean run, names every kind of difference."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
import pytest
import redis

from app.keys import Keys
from app.ledger import open_store
from app.ledger.verify import verify
from app.protocols.stargame.wallet import book as stargame_book
from app.runtime import Runtime
from app.scripts import BOOK, LEDGER, read
from app.settings import Settings, WalletSettings
from app.wallet import Wallet
from tests.oia_calls import call, change
from tests.process import Server, walletd
from tests.support import OPERATOR

pytestmark = pytest.mark.anyio


async def run_verify(wallet: Wallet, settings: Settings) -> list[str]:
    runtime = Runtime(settings, settings.redis.url, ledger=True)
    try:
        assert runtime.flusher is not None
        return await verify(runtime.flusher)
    finally:
        await runtime.close()


@pytest.fixture
async def booked(wallet: Wallet) -> Wallet:
    await wallet.create_player("a", "EUR", 10_000, "", "en", "", [], operator_id=OPERATOR)
    await wallet.create_player("b", "JPY", 500, "", "en", "", [], operator_id=OPERATOR)
    await stargame_book(wallet, "a", 250, 1000, 0)
    await stargame_book(wallet, "b", 500, 0, 0)
    await wallet.adjust("a", "deposit", 99, "dep-1")
    return wallet


async def test_clean_run_passes(booked: Wallet, settings: Settings) -> None:
    assert await run_verify(booked, settings) == []


async def test_tampered_balance_is_reported(booked: Wallet, settings: Settings, sync_redis: redis.Redis) -> None:
    sync_redis.hincrby(booked.keys.account("a"), "bal", 5)
    problems = await run_verify(booked, settings)
    assert problems == ["player a: balance 10854 in Redis, ledger says 10849 (differs by 5)"]


async def test_lost_ledger_entry_is_reported(booked: Wallet, settings: Settings) -> None:
    assert await run_verify(booked, settings) == []
    partition = booked.keys.partition("a")
    db = sqlite3.connect(settings.storage_url.removeprefix("sqlite:///"))
    db.execute("DELETE FROM ledger WHERE entry_id = ?", (f"{partition}:2",))
    db.commit()
    db.close()
    problems = await run_verify(booked, settings)
    assert f"partition {partition}: 1 ledger entries missing below seq" in problems[0]
    assert any("player a: balance" in p for p in problems)


async def test_entry_never_flushed_is_reported(booked: Wallet, settings: Settings, sync_redis: redis.Redis) -> None:
    assert await run_verify(booked, settings) == []
    partition = booked.keys.partition("b")
    sync_redis.incr(booked.keys.seq(partition))  # Redis counted an entry the store never got
    problems = await run_verify(booked, settings)
    assert any(f"partition {partition}: Redis wrote" in p for p in problems)


@pytest.mark.slow
def test_cli_verify_exit_codes(tmp_path: Path, redis_url: str, sync_redis: redis.Redis) -> None:
    server = Server(tmp_path, redis_url)
    walletd(server.config, "player", "create", "c", "--currency", "EUR", "--balance", "12.34")
    walletd(server.config, "player", "withdraw", "c", "2.34", "--ref", "w1")
    ok = walletd(server.config, "verify")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "verify: OK" in ok.stdout
    sync_redis.hincrby(Keys(WalletSettings().partitions).account("c"), "bal", -1)  # the config keeps the default
    bad = walletd(server.config, "verify", check=False)
    assert bad.returncode == 1
    assert "player c: balance 999 in Redis, ledger says 1000" in bad.stdout


async def test_hostile_oia_user_id_does_not_break_verify(
    booked: Wallet, settings: Settings, client: httpx.AsyncClient, sync_redis: redis.Redis,
) -> None:
    """A signed call with user_id 'x}:acct:y' once wrote tx/round keys that matched the
    account pattern, and verify died with a TypeError."""
    for tx, user_id in enumerate(["x}:acct:y", "a}:acct:b|c", "611}:acct:611"]):
        await call(client, "changebalance", change(user_id, tx, "WIN", 1))
        await call(client, "cancel", {"user_id": user_id, "transaction_id": 100 + tx, "round_id": 1, "game_id": 1})
    assert await run_verify(booked, settings) == []


@pytest.mark.parametrize("key", [
    "w:{p3}:tx:oia:op:x}:acct:y|5",          # a hash without 'bal'
    "w:{p3}:round:oia:op:x}:acct:y|5",
    "w:{p3}:acct:a}:acct:b",                  # not a player id
    "w:{p99999}:acct:a",                      # partition out of range
    "w:{p1}:acct:a",                          # player 'a' lives in another partition
    "w:{px}:acct:y",
])
async def test_verify_scans_exactly_the_account_keys(
    booked: Wallet, settings: Settings, sync_redis: redis.Redis, key: str,
) -> None:
    assert booked.keys.partition("a") != 1
    sync_redis.hset(key, mapping={"st": "OK", "fin": "0"})
    assert await run_verify(booked, settings) == []
    sync_redis.delete(key)
    sync_redis.set(key, "a string")  # not even a hash
    assert await run_verify(booked, settings) == []


async def test_account_key_without_a_balance_is_a_problem_not_a_crash(
    booked: Wallet, settings: Settings, sync_redis: redis.Redis,
) -> None:
    sync_redis.hdel(booked.keys.account("b"), "bal")
    problems = await run_verify(booked, settings)
    assert any("player b" in p and "no balance" in p for p in problems), problems


# A transfer leg of a player's account as the transfer scripts will book it (docs/transfers.md):
# through walletd's own book() (lua/lib/book.lua), source 'transfer', the counterparty in 'peer'.
TRANSFER_LEG = """
local b = {acct = KEYS[1], seq_key = KEYS[2], ledger_key = KEYS[3], partition = ARGV[1], player = ARGV[2],
           source = 'transfer', ref = ARGV[3], now = now_ms()}
local balance = tonumber(redis.call('HGET', KEYS[1], 'bal'))
local extra = {'peer', ARGV[6], 'cur', 'EUR'}
if ARGV[7] ~= '' then extra[#extra + 1] = 'akind'; extra[#extra + 1] = ARGV[7] end
local code = book(b, balance, {{ARGV[4], tonumber(ARGV[5]), extra}}, nil)
return code
"""


async def test_verify_pairs_transfer_legs_an_unpaired_credit_is_reported_a_debit_in_flight_is_not(
    booked: Wallet, settings: Settings, sync_redis: redis.Redis,
) -> None:
    keys, partition = booked.keys, booked.keys.partition("a")
    script = read(LEDGER) + read(BOOK) + TRANSFER_LEG
    booking = [keys.account("a"), keys.seq(partition), keys.ledger(partition)]
    assert sync_redis.eval(script, 3, *booking, partition, "a", "player:a|w1", "transfer_out", -30,
                           "agent:a17", "") == "OK"
    assert await run_verify(booked, settings) == []  # in flight: the agent's credit may come
    assert sync_redis.eval(script, 3, *booking, partition, "a", "agent:a17|d1", "transfer_in", 40,
                           "agent:a17", "") == "OK"
    problems = await run_verify(booked, settings)
    assert problems == ["transfer agent:a17|d1: credited or reversed without a debit "
                        "(0 debit(s), 1 credit(s), 0 reversal(s))"]
    # the agent's debit arrives (its own partition, its own account): the pair is settled, and the
    # agent's entries are nobody's player entries (else: "player a17 ... not in Redis")
    agent_partition = keys.partition("a17")
    sync_redis.hset(keys.agent("a17"), mapping={"bal": 1_000, "cur": "EUR"})
    assert sync_redis.eval(script, 3, keys.agent("a17"), keys.seq(agent_partition), keys.ledger(agent_partition),
                           agent_partition, "a17", "agent:a17|d1", "transfer_out", -40, "player:a", "agent") == "OK"
    assert await run_verify(booked, settings) == []
    store = open_store(settings.storage_url)
    try:
        (stored,) = [e for e in store.read(agent_partition, 0, 100)
                     if e.kind == "transfer_out" and e.player_id == "a17"]
    finally:
        store.close()
    assert (stored.player_id, stored.account_kind, stored.counterparty, stored.amount_minor) == (
        "a17", "agent", "player:a", -40)
