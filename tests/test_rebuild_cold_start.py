"""Issue 11's end-to-end rebuild: a mixed OIA and StarGame workload booked through
`walletd serve` (embedded Redis, AOF), everything stopped, the AOF deleted; walletd
started again refuses every callback on the empty Redis, `walletd rebuild` (run beside
it) restores Redis from the ledger store, and walletd serves again, answering old ids as
before (README "Rebuild": an identical retry as the original,
a cancelled id and a late BET for a tombstoned one OP_49, nothing moved)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import pytest

from tests.oia_calls import call, cancel, change, error_code, new_session, now_stamp
from tests.process import Server, walletd
from tests.support import ADMIN_TOKEN, sg

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

BOOKED, CANCELLED, TOMBSTONED = 1, 2, 3  # the OIA transaction ids of the workload
SERVING_AGAIN_S = 10.0  # the guard re-checks every second; generous for a loaded machine


async def create(client: httpx.AsyncClient, player_id: str, currency: str, balance: str,
                 aliases: list[str] | None = None) -> None:
    body = {"player_id": player_id, "currency": currency, "balance": balance, "aliases": aliases or []}
    response = await client.post("/admin/players", json=body, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert response.status_code == 201, response.text


async def workload(client: httpx.AsyncClient, stamp: str) -> dict:
    """Bookings of both protocols; the original answer of the booking retried later."""
    await create(client, "611", "EUR", "100.00", ["stargame:117"])
    await create(client, "612", "EUR", "50.00")
    token = await new_session(client, "611")
    original = await call(client, "changebalance", change("611", BOOKED, "BET", 2.50, token=token, stamp=stamp))
    assert original["status"] == "OK"
    for tx, kind in ((10, "WIN"), (11, "BET"), (12, "REFUND")):
        assert (await call(client, "changebalance", change("611", tx, kind, 1.00, token=token)))["status"] == "OK"
    assert (await call(client, "changebalance", change("611", CANCELLED, "BET", 3.00, token=token,
                                                        stamp=stamp)))["status"] == "OK"
    assert (await call(client, "cancel", cancel("611", CANCELLED)))["status"] == "OK"
    assert error_code(await call(client, "cancel", cancel("611", TOMBSTONED))) == "OP_41"  # a tombstone
    for uid, bet, win in (("117", "100", "250"), ("612", "300", "0"), ("612", "0", "80")):
        assert (await sg(client, cmd="writeBet", uid=uid, bet=bet, win=win))["status"] == "success"
    return original


def lose_the_aof(server: Server) -> None:
    data_dir = server.config.parent / "var" / "redis"
    files = [path for path in data_dir.rglob("*") if "appendonly" in path.name]
    assert files, list(data_dir.iterdir())
    for path in files:
        path.unlink() if path.is_file() else None


async def serving_again(client: httpx.AsyncClient) -> None:
    """The guard re-checks every second: /healthz is 200 soon after the rebuild ends."""
    deadline = time.monotonic() + SERVING_AGAIN_S
    while (await client.get("/healthz")).status_code != 200:
        assert time.monotonic() < deadline, "walletd did not serve again after the rebuild"
        await asyncio.sleep(0.1)


def balance(server: Server, player: str) -> int:
    return json.loads(walletd(server.config, "player", "show", player).stdout)["balance_minor"]


async def test_a_redis_rebuilt_from_the_store_answers_old_ids_as_before(tmp_path: Path) -> None:
    server = Server(tmp_path).start()
    stamp = now_stamp()
    try:
        async with httpx.AsyncClient(base_url=server.base_url) as client:
            original = await workload(client, stamp)
    finally:
        server.stop()
    assert walletd(server.config, "verify").stdout.strip().endswith("verify: OK")  # every entry stored
    lose_the_aof(server)

    server.start(ready_status=503)  # the cold-start guard: Redis is behind the store
    try:
        async with httpx.AsyncClient(base_url=server.base_url) as client:
            assert (await client.get("/healthz")).status_code == 503
            token_refused = await client.post("/admin/sessions", json={"player_id": "611", "game_id": 200},
                                              headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
            assert token_refused.status_code == 503, token_refused.text
            booking = change("611", 99, "WIN", 1.00, stamp=stamp)
            assert error_code(await call(client, "changebalance", booking)) == "OP_50"
            assert (await sg(client, cmd="writeBet", uid="612", bet="0", win="5"))["status"] == "fail"

            rebuilt = walletd(server.config, "rebuild")  # while walletd runs, refusing
            assert "rebuild: done" in rebuilt.stdout and "partitions," in rebuilt.stderr, rebuilt.stderr
            await serving_again(client)

            token = await new_session(client, "611")
            before = balance(server, "611")
            retry = await call(client, "changebalance", change("611", BOOKED, "BET", 2.50, token=token, stamp=stamp))
            assert retry["status"] == "OK" and retry["data"] == original["data"]  # the original answer
            cancelled = change("611", CANCELLED, "BET", 3.00, token=token, stamp=stamp)
            assert error_code(await call(client, "changebalance", cancelled)) == "OP_49"
            late = change("611", TOMBSTONED, "BET", 1.00, token=token, stamp=stamp)
            assert error_code(await call(client, "changebalance", late)) == "OP_49"
            assert balance(server, "611") == before  # nothing moved
        checked = walletd(server.config, "verify", check=False)  # every balance equals the store's sum
        assert checked.returncode == 0 and checked.stdout.strip().endswith("verify: OK"), checked.stdout
    finally:
        server.stop()
