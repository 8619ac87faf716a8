"""Helpers of the rebuild tests: a mixed workload booked through the app, and Redis's
state as the Lua scripts leave it (what `walletd rebuild` must recreate)."""

from __future__ import annotations

from typing import Any

import httpx
import redis

from app.wallet import Wallet
from tests.oia_calls import call, cancel, change, error_code, new_session
from tests.support import OPERATOR, sg

# Keys rebuild does not restore (RECORD.md): sessions, the ledger streams, the
# late-retry filter's bitmaps, and the meta hash (compared field by field).
NOT_REBUILT = (":sess:", ":ledger", ":seen:")
# Expiries are compared as absolute times; the two reads are this far apart at most.
EXPIRY_SLACK_MS = 2_000


def snapshot(client: redis.Redis) -> dict[str, Any]:
    """Every rebuilt key: (value, expires at in ms rounded to EXPIRY_SLACK_MS or None)."""
    now_ms = int(client.time()[0]) * 1000
    state: dict[str, Any] = {}
    for key in client.keys("w:*"):
        if any(part in key for part in NOT_REBUILT) or key == "w:meta":
            continue
        value = client.hgetall(key) if client.type(key) == "hash" else client.get(key)
        ttl = client.pttl(key)
        state[key] = (value, None if ttl < 0 else (now_ms + ttl) // EXPIRY_SLACK_MS)
    return state


def same_state(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Differences, an expiry allowed one rounding step apart."""
    problems = [f"{key}: only before: {before[key]}" for key in sorted(before.keys() - after.keys())]
    problems += [f"{key}: only after: {after[key]}" for key in sorted(after.keys() - before.keys())]
    for key in sorted(before.keys() & after.keys()):
        (value, expiry), (value_after, expiry_after) = before[key], after[key]
        near = expiry == expiry_after or (expiry is not None and expiry_after is not None
                                          and abs(expiry - expiry_after) <= 1)
        if value != value_after or not near:
            problems.append(f"{key}: {before[key]} became {after[key]}")
    return problems


async def create_players(wallet: Wallet) -> None:
    await wallet.create_player("611", "EUR", 10000, "DE", "en", "John Doe", ["stargame:117"], operator_id=OPERATOR)
    await wallet.create_player("612", "RUB", 500000, "RU", "ru", "Ivan", [], operator_id=OPERATOR)
    await wallet.create_player("613", "EUR", 0, "", "en", "", [], operator_id=OPERATOR)


async def money_workload(client: httpx.AsyncClient, wallet: Wallet) -> None:
    """Bookings of every money kind: OIA bet, win, refund and cancel, StarGame bet and
    win (by alias and by id), admin deposit and withdrawal."""
    token = await new_session(client, "611")
    for tx, kind, amount, round_id in ((1, "BET", 1.50, 1), (2, "WIN", 3.00, 1), (3, "BET", 2.00, 2),
                                       (4, "REFUND", 2.00, 2), (5, "BET", 0.25, 3)):
        answer = await call(client, "changebalance", change("611", tx, kind, amount, token=token, round_id=round_id))
        assert answer["status"] == "OK", answer
    assert (await call(client, "cancel", cancel("611", 5) | {"round_id": 3}))["status"] == "OK"
    assert (await sg(client, cmd="writeBet", uid="117", bet="100", win="250"))["status"] == "success"
    assert (await sg(client, cmd="writeBet", uid="612", bet="0", win="700"))["status"] == "success"
    assert (await sg(client, cmd="writeBet", uid="612", bet="300", win="0"))["status"] == "success"
    assert (await wallet.adjust("613", "deposit", 5000, "dep-1")).code == "OK"
    assert (await wallet.adjust("613", "withdraw", 1200, "wd-1")).code == "OK"


async def journal_workload(client: httpx.AsyncClient, wallet: Wallet) -> None:
    """Decisions that move nothing (RECORD.md's journal kinds): a recorded refusal and its
    cancel, a cancel before its transaction and the refusal of its late BET, a finished
    round, block and unblock."""
    token = await new_session(client, "612")
    refused = change("612", 20, "BET", 100000.00, currency="RUB", token=token, round_id=7)
    assert error_code(await call(client, "changebalance", refused)) == "OP_31"
    assert (await call(client, "cancel", cancel("612", 20) | {"round_id": 7}))["status"] == "OK"  # refused, cancelled
    for tx in (21, 23):
        assert error_code(await call(client, "cancel", cancel("612", tx))) == "OP_41"  # a tombstone
    late = change("612", 21, "BET", 1.00, currency="RUB", token=token)
    assert error_code(await call(client, "changebalance", late)) == "OP_49"
    booked = change("612", 22, "BET", 1.00, currency="RUB", token=token, round_id=8)
    assert (await call(client, "changebalance", booked))["status"] == "OK"
    finish = {"user_id": "612", "round_id": 8, "game_id": 200}
    assert (await call(client, "finishround", finish))["status"] == "OK"
    await wallet.set_blocked("613", True)
    await wallet.set_blocked("611", True)
    await wallet.set_blocked("611", False)
