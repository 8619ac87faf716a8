"""Model-based test of one player's Operator Integration API life.

A hypothesis state machine drives the real app (in-process ASGI client, the real
Redis, the real SQLite ledger store) through BET, WIN and REFUND with new ids,
identical retries and retries with other data, cancels before and after the
transaction, status, balance, and the retention expiry of the records; a pure
Python model of the wallet says what each answer must be. After every step the
answer's code and balance, the balance in Redis and the player's ledger rows in
the store (after a drain) must agree with the model.

Retention expiry is simulated deterministically: drain the flusher into the store,
then delete the player's transaction and round record keys, which is exactly what
their expiry in Redis does. After it, walletd knows a booked transaction only from
the ledger store and answers its retries as before (README "Late retries", issue 9
items 1 and 9): identical -> the original answer, other data -> OP_40, cancelled ->
OP_49, nothing moved. Recorded refusals and cancel tombstones are in the store
too (journal entries, RECORD.md), so after the expiry they answer as before: a
refused id its refusal (or OP_40), a tombstoned id OP_49 for a late booking and
OP_41 for a cancel, and nothing is written twice. transaction_timestamp is current
or a month old, so both the Bloom filter's path and the timestamp's path to the
store are taken.

Each example plays a fresh player, so examples share the Redis and the store
without seeing each other. Hypothesis explores normally (no example database, so
nothing depends on earlier runs); the bounds keep the test to a few seconds.
"""

from __future__ import annotations

import itertools
import sqlite3
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from decimal import Decimal
from functools import partial
from typing import Any, TypeVar

import anyio
import anyio.from_thread
import anyio.to_thread
import httpx
import pytest
import redis
from hypothesis import HealthCheck, settings as hsettings, strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from app.keys import Keys
from app.ledger.flusher import Flusher
from app.runtime import Runtime
from app.settings import Settings
from app.wallet import Wallet
from tests.oia_calls import call, error_code, new_session
from tests.support import OPERATOR

pytestmark = pytest.mark.anyio

T = TypeVar("T")

OPENING_MINOR = 10_000  # EUR 100.00: a few bets succeed, larger ones meet OP_31
SESSION_GAME = 200  # the session is opened for this game: a BET on another is OP_21
OTHER_GAME = 201
ROUNDS = (1, 2)
STEPS_MAX = 40  # per example: long enough for book -> cancel -> expire -> retry chains
EXAMPLES_MAX = 50  # about 10 s on a shared 2-core machine
FIRST_TX_ID = 10**15  # large ids, well inside INT 20
DRAIN_ROUNDS_MAX = 100  # a step books at most a few entries; batch_max each round
OLD_AGE_S = 30 * 24 * 3600  # a transaction_timestamp a month old
DEFAULT_LATE = ("BET", 100, 1, SESSION_GAME)  # what a platform sends on an id known only from a cancel


@dataclass(frozen=True)
class Request:
    """The data of one changebalance that its fingerprint covers (plus its timestamp)."""

    kind: str  # BET, WIN, REFUND
    amount: int  # minor units
    round_id: int
    game_id: int
    stamp: str  # transaction_timestamp, resent unchanged by a retry

    def same_data(self, other: Request) -> bool:
        return (self.kind, self.amount, self.round_id, self.game_id) == (
            other.kind, other.amount, other.round_id, other.game_id)

    def delta(self) -> int:
        return -self.amount if self.kind == "BET" else self.amount


@dataclass
class Record:
    """What walletd knows about one transaction id of the player."""

    state: str  # OK (booked), ERROR (refused), CANCELED, TOMB (cancel came first)
    request: Request | None  # the fingerprinted data; None for a tombstone
    code: str = "OK"  # the recorded answer: OK or the refusal's OP code
    answer_balance: int | None = None  # balance of the original OK answer


@dataclass(frozen=True)
class Row:
    kind: str
    amount: int
    balance_after: int
    ref: str
    code: str = ""  # a refusal's OP code


@dataclass(frozen=True)
class Expect:
    """One expected answer: OK, an OP code or a transaction status, with the
    balance an OK changebalance or balance answer must show (else None)."""

    code: str
    balance: int | None = None


class Model:
    """The wallet as the README and issue 9 describe it, for one player and one operator."""

    def __init__(self) -> None:
        self.balance = OPENING_MINOR
        self.records: dict[int, Record] = {}
        self.ledger: list[Row] = []

    def book(self, tx: int, kind: str, delta: int) -> None:
        self.balance += delta
        self.ledger.append(Row(kind, delta, self.balance, f"{OPERATOR}|{tx}"))

    def journal(self, tx: int, kind: str, code: str = "") -> None:
        """A decision that moves nothing (RECORD.md): amount 0, the balance then."""
        self.ledger.append(Row(kind, 0, self.balance, f"{OPERATOR}|{tx}", code))

    def decide_new(self, tx: int, req: Request) -> Expect:
        """A changebalance for an id walletd does not know (any more)."""
        refusal = None
        if req.kind == "BET" and req.game_id != SESSION_GAME:
            refusal = "OP_21"
        elif req.kind == "BET" and req.amount > self.balance:
            refusal = "OP_31"
        if refusal is not None:
            self.records[tx] = Record("ERROR", req, code=refusal)
            self.journal(tx, "refusal", refusal)
            return Expect(refusal)
        self.book(tx, req.kind.lower(), req.delta())
        self.records[tx] = Record("OK", req, answer_balance=self.balance)
        return Expect("OK", self.balance)

    def change(self, tx: int, req: Request) -> Expect:
        rec = self.records.get(tx)
        if rec is None:
            return self.decide_new(tx, req)
        if rec.state == "TOMB":
            # The late transaction is refused and that refusal recorded under its data.
            self.records[tx] = Record("ERROR", req, code="OP_49")
            self.journal(tx, "refusal", "OP_49")
            return Expect("OP_49")
        assert rec.request is not None
        if not req.same_data(rec.request):
            return Expect("OP_40")  # issue 9 item 1: also after the retention
        if rec.state == "CANCELED":
            return Expect("OP_49")  # items 1 and 9: also after the retention
        if rec.state == "ERROR":
            return Expect(rec.code)
        # Booked: the original answer, also after the retention (item 1, README
        # "Late retries"), however the balance moved since; nothing moves now.
        return Expect("OK", rec.answer_balance)

    def cancel(self, tx: int) -> Expect:
        rec = self.records.get(tx)
        if rec is None:
            self.records[tx] = Record("TOMB", None)
            self.journal(tx, "tombstone")
            return Expect("OP_41")
        if rec.state == "TOMB":
            return Expect("OP_41")
        if rec.state == "OK":
            assert rec.request is not None
            self.book(tx, "cancel", -rec.request.delta())
        elif rec.state == "ERROR":
            self.book(tx, "cancel", 0)  # nothing to give back; the CANCELED state is stored
        rec.state = "CANCELED"
        return Expect("CANCELED")

    def status(self, tx: int) -> Expect:
        rec = self.records.get(tx)
        if rec is None or rec.state == "TOMB":
            return Expect("OP_41")
        return Expect(rec.state)

    def expire(self) -> None:
        """Retention: every decision stays known through the ledger store (bookings,
        cancels, refusals, tombstones), so nothing is forgotten."""


@dataclass
class Env:
    """The test's fixtures, for the state machine running in a worker thread."""

    client: httpx.AsyncClient
    wallet: Wallet
    settings: Settings
    sync_redis: redis.Redis
    flusher: Flusher


def run(fn: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
    """Run a coroutine on the test's event loop from the state machine's thread."""
    return anyio.from_thread.run(fn, *args)


def wire_amount(minor: int) -> float:
    # repr of this float is the 2-decimal text itself, so the JSON carries it exactly.
    return float(Decimal(minor) / 100)


def minor_of(balance: float) -> int:
    return int(Decimal(repr(balance)) * 100)


def now_stamp(age_s: int = 0) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(time.time() - age_s))


amounts = st.integers(0, 3000)
kinds = st.sampled_from(["BET", "BET", "WIN", "REFUND"])
games = st.sampled_from([SESSION_GAME, SESSION_GAME, SESSION_GAME, SESSION_GAME, OTHER_GAME])
rounds = st.sampled_from(ROUNDS)
# How old the platform says a transaction is: a fresh one, or one from before any
# retention or late-retry horizon (walletd may then look in the ledger store first).
ages = st.sampled_from([0, 0, OLD_AGE_S])


class OiaLife(RuleBasedStateMachine):
    env: Env  # set by the test before the machine runs
    players = itertools.count()

    transactions = Bundle("transactions")

    def __init__(self) -> None:
        super().__init__()
        self.model = Model()
        self.sent: dict[int, Request] = {}  # the first data sent with each id
        self.ids = itertools.count(FIRST_TX_ID)
        self.player = f"model.{next(self.players)}@oia-life"
        self.keys = Keys(self.env.settings.wallet.partitions)
        create = partial(self.env.wallet.create_player, operator_id=OPERATOR)
        run(create, self.player, "EUR", OPENING_MINOR, "DE", "en", "Model", [])
        self.token = run(new_session, self.env.client, self.player, SESSION_GAME)

    # -- requests ------------------------------------------------------------------

    def changebalance(self, tx: int, req: Request) -> dict:
        data = {"transaction_type": req.kind, "amount": wire_amount(req.amount), "currency_code": "EUR",
                "transaction_id": tx, "transaction_timestamp": req.stamp, "round_id": req.round_id,
                "round_finished": False, "game_id": req.game_id, "user_id": self.player,
                "token": self.token if req.kind == "BET" else None, "context": {"reason": "not_provided"}}
        return run(call, self.env.client, "changebalance", data)

    def check(self, what: str, answer: dict, expected: Expect) -> None:
        got = error_code(answer) or "OK"
        if answer["status"] == "OK" and "transaction_status" in answer["data"]:
            got = answer["data"]["transaction_status"]
        assert got == expected.code, f"{what}: answered {got} ({answer['data']}), model says {expected}"
        if expected.balance is not None:
            assert answer["data"]["currency_code"] == "EUR"
            balance = minor_of(answer["data"]["balance"])
            assert balance == expected.balance, f"{what}: answered balance {balance}, model says {expected}"

    def send(self, what: str, tx: int, req: Request) -> None:
        expected = self.model.change(tx, req)
        self.check(f"{what} tx {tx} {req}", self.changebalance(tx, req), expected)

    def new_id(self) -> int:
        return next(self.ids)

    def original(self, tx: int) -> Request:
        """The data first sent with tx; an id only cancelled so far gets a late BET."""
        if tx not in self.sent:
            kind, amount, round_id, game = DEFAULT_LATE
            self.sent[tx] = Request(kind, amount, round_id, game, now_stamp())
        return self.sent[tx]

    # -- rules -----------------------------------------------------------------------

    @rule(target=transactions, kind=kinds, amount=amounts, round_id=rounds, game=games, age=ages)
    def new_transaction(self, kind: str, amount: int, round_id: int, game: int, age: int) -> int:
        tx = self.new_id()
        self.sent[tx] = Request(kind, amount, round_id, game, now_stamp(age))
        self.send("new", tx, self.sent[tx])
        return tx

    @rule(target=transactions, beyond=st.integers(0, 5000), round_id=rounds)
    def bet_all_or_more(self, beyond: int, round_id: int) -> int:
        """A BET of exactly the balance (OK, down to zero) or more (OP_31)."""
        tx = self.new_id()
        self.sent[tx] = Request("BET", max(self.model.balance, 0) + beyond, round_id, SESSION_GAME, now_stamp())
        self.send("bet all or more", tx, self.sent[tx])
        return tx

    @rule(tx=transactions)
    def identical_retry(self, tx: int) -> None:
        self.send("identical retry", tx, self.original(tx))

    @rule(tx=transactions, field=st.sampled_from(["amount", "kind", "round_id", "game_id"]))
    def conflicting_retry(self, tx: int, field: str) -> None:
        req = self.original(tx)
        other: Any = {"amount": req.amount + 1, "kind": "WIN" if req.kind == "BET" else "BET",
                      "round_id": 3 - req.round_id,
                      "game_id": OTHER_GAME if req.game_id == SESSION_GAME else SESSION_GAME}[field]
        self.send(f"retry with other {field}", tx, replace(req, **{field: other}))

    @rule(tx=transactions)
    def cancel(self, tx: int) -> None:
        round_id = self.sent[tx].round_id if tx in self.sent else 1
        data = {"user_id": self.player, "transaction_id": tx, "round_id": round_id, "round_finished": None,
                "game_id": SESSION_GAME}
        expected = self.model.cancel(tx)
        self.check(f"cancel tx {tx}", run(call, self.env.client, "cancel", data), expected)

    @rule(target=transactions)
    def cancel_before_the_transaction(self) -> int:
        tx = self.new_id()
        self.cancel(tx)
        return tx

    @rule(tx=transactions)
    def status(self, tx: int) -> None:
        data = {"user_id": self.player, "transaction_id": tx, "transaction_type": "BET",
                "transaction_date": "2026-11-21", "transaction_ts": "1795000000000", "round_id": 1}
        expected = self.model.status(tx)
        self.check(f"status tx {tx}", run(call, self.env.client, "status", data), expected)

    @rule()
    def balance(self) -> None:
        data = {"token": self.token, "user_id": self.player, "currency_code": "EUR"}
        answer = run(call, self.env.client, "balance", data)
        self.check("balance", answer, Expect("OK", self.model.balance))

    def drain(self) -> None:
        """Flush the player's partition into the store (the flusher's own step)."""
        partition = self.keys.partition(self.player)
        for _ in range(DRAIN_ROUNDS_MAX):
            if run(self.env.flusher.flush_partition, partition) == 0:
                return
        raise AssertionError("the ledger stream did not drain")

    @rule()
    def retention_expires(self) -> None:
        self.drain()
        self.check_ledger()
        tag = f"{self.player}|"
        records = [key for pattern in (f"*:tx:*:{tag}*", f"*:round:*:{tag}*")
                   for key in self.env.sync_redis.scan_iter(match=pattern, count=1000)]
        if records:
            self.env.sync_redis.delete(*records)
        self.model.expire()

    # -- invariants ------------------------------------------------------------------

    @initialize()
    def opening_balance(self) -> None:
        self.balance_in_redis_agrees()

    @invariant()
    def balance_in_redis_agrees(self) -> None:
        stored = self.env.sync_redis.hget(self.keys.account(self.player), "bal")
        assert stored is not None and int(stored) == self.model.balance, (
            f"balance in Redis {stored!r}, model says {self.model.balance}")

    @invariant()
    def ledger_agrees(self) -> None:
        self.drain()
        self.check_ledger()

    def check_ledger(self) -> None:
        rows = ledger_of(self.env.settings, self.player)
        assert rows == self.model.ledger, f"ledger rows {rows}, model says {self.model.ledger}"


def ledger_of(settings: Settings, player: str) -> list[Row]:
    db = sqlite3.connect(settings.storage_url.removeprefix("sqlite:///"))
    try:
        cursor = db.execute(
            "SELECT kind, amount_minor, balance_after_minor, ref, code FROM ledger "
            "WHERE player_id = ? AND source = 'oia' ORDER BY partition, seq", (player,))
        return [Row(*row) for row in cursor]
    finally:
        db.close()


async def test_one_players_oia_life_agrees_with_the_model(
    client: httpx.AsyncClient, wallet: Wallet, settings: Settings, sync_redis: redis.Redis
) -> None:
    runtime = Runtime(settings, settings.redis.url, ledger=True)  # for its flusher; the client fixture serves
    flusher = runtime.flusher
    assert flusher is not None
    await flusher.setup()
    OiaLife.env = Env(client, wallet, settings, sync_redis, flusher)
    machine_settings = hsettings(max_examples=EXAMPLES_MAX, stateful_step_count=STEPS_MAX, deadline=None,
                                 database=None, suppress_health_check=[HealthCheck.too_slow])
    try:
        await anyio.to_thread.run_sync(lambda: run_state_machine_as_test(OiaLife, settings=machine_settings))
    finally:
        await runtime.close()
