"""Issue 11, section 2: every decision walletd takes reaches the ledger store with every
field RECORD.md names. A mixed OIA, StarGame and admin workload goes through the real
paths (walletd serve over HTTP, the walletd CLI) against a real redis-server; the store's
read() must then show each entry exactly."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import redis

from app.keys import Keys
from app.ledger import JOURNAL_KINDS, LedgerEntry, open_store
from app.settings import WalletSettings
from tests.oia_calls import call, cancel, change, error_code
from tests.process import Server, walletd
from tests.support import OPERATOR

pytestmark = pytest.mark.anyio

PARTITIONS = WalletSettings().partitions  # the default, which the Server's config keeps
READ_LIMIT = 1000  # more than the workload writes in any partition


def stored_entries(storage_url: str) -> list[LedgerEntry]:
    store = open_store(storage_url)
    try:
        return [e for partition in range(PARTITIONS) for e in store.read(partition, 0, READ_LIMIT)]
    finally:
        store.close()


def fields(e: LedgerEntry) -> tuple:
    """Everything of an entry but its id and time."""
    return (e.kind, e.amount_minor, e.balance_after_minor, e.source, e.ref, e.operator, e.currency, e.round_id,
            e.game_id, e.round_finished, e.fp, e.code, e.profile)


def oia(kind: str, amount: int, balance: int, tx: int | str, currency: str = "EUR", round_id: str = "7",
        game: str = "200", fin: str = "", fp: str = "", code: str = "") -> tuple:
    return (kind, amount, balance, "oia", f"{OPERATOR}|{tx}", OPERATOR, currency, round_id, game, fin, fp, code, None)


def fp(kind: str, player: str, amount: int, round_id: int = 7, game: int = 200) -> str:
    return f"{kind}|{player}|{amount}|EUR|{round_id}|{game}"


@pytest.mark.slow
async def test_a_mixed_workload_reaches_the_store_with_every_field(
    tmp_path: Path, redis_url: str, sync_redis: redis.Redis
) -> None:
    server = Server(tmp_path, redis_url, budget_ms=1000)
    config = server.config
    walletd(config, "player", "create", "p1", "--currency", "EUR", "--balance", "100.00", "--country", "DE",
            "--language", "de", "--name", "Max", "--alias", "stargame:901")
    walletd(config, "player", "create", "p2", "--currency", "JPY", "--balance", "500")
    walletd(config, "player", "deposit", "p1", "25.00", "--ref", "dep-1")
    walletd(config, "player", "withdraw", "p1", "5.00", "--ref", "wd-1")
    walletd(config, "player", "block", "p2")
    walletd(config, "player", "unblock", "p2")
    token = json.loads(walletd(config, "session", "new", "p1", "--game", "200").stdout)["token"]
    server.start()
    try:
        async with httpx.AsyncClient(base_url=server.base_url) as client:
            async def oia_code(command: str, data: dict) -> str:
                answer = await call(client, command, data)
                return error_code(answer) or answer["data"].get("transaction_status", "OK")

            assert await oia_code("changebalance", change("p1", 1, "BET", 1.00, token=token, round_id=7)) == "OK"
            assert await oia_code("changebalance", change("p1", 2, "WIN", 2.50, round_id=7, finished=True)) == "OK"
            assert await oia_code("changebalance", change("p1", 3, "REFUND", 0.50, round_id=7, finished=None)) == "OK"
            assert await oia_code("changebalance", change("p1", 4, "BET", 1000.00, token=token)) == "OP_31"
            assert await oia_code("changebalance", change("p1", 5, "BET", 1.00, token="nope")) == "OP_21"
            assert await oia_code("changebalance", change("ghost", 6, "WIN", 1.00)) == "OP_34"
            assert await oia_code("cancel", cancel("p1", 1)) == "CANCELED"
            assert await oia_code("cancel", cancel("p1", 4)) == "CANCELED"  # a refusal: nothing to give back
            assert await oia_code("cancel", cancel("p1", 8)) == "OP_41"  # a tombstone
            assert await oia_code("changebalance", change("p1", 8, "BET", 1.00, token=token)) == "OP_49"
            assert await oia_code("changebalance", change("p1", 10, "BET", 1.00, token=token, round_id=11)) == "OK"
            assert await oia_code("finishround", {"user_id": "p1", "round_id": 11, "game_id": 200}) == "OK"
            assert await oia_code("finishround", {"user_id": "p1", "round_id": 11, "game_id": 200}) == "OK"
            spin = (await client.get("/stargame", params={"cmd": "writeBet", "uid": "901", "bet": "100",
                                                          "win": "250"})).json()
            assert spin["status"] == "success", spin
    finally:
        server.stop()
    assert walletd(config, "verify").returncode == 0  # drains the rest; journal entries leave the sums alone

    entries = stored_entries(f"sqlite:///{tmp_path / 'ledger.db'}")
    p1 = [e for e in entries if e.player_id == "p1"]
    request_id = p1[-1].ref
    profile = {"cur": "EUR", "country": "DE", "lang": "de", "name": "Max", "aliases": "stargame:901", "op": OPERATOR}
    assert [fields(e) for e in p1] == [
        ("open", 10000, 10000, "admin", "", OPERATOR, "EUR", "", "", "", "", "", profile),
        ("deposit", 2500, 12500, "admin", "dep-1", "", "EUR", "", "", "", "", "", None),
        ("withdraw", -500, 12000, "admin", "wd-1", "", "EUR", "", "", "", "", "", None),
        oia("bet", -100, 11900, 1, fin="0", fp=fp("BET", "p1", 100)),
        oia("win", 250, 12150, 2, fin="1", fp=fp("WIN", "p1", 250)),
        oia("refund", 50, 12200, 3, fp=fp("REFUND", "p1", 50)),
        oia("refusal", 0, 12200, 4, round_id="1", fin="0", fp=fp("BET", "p1", 100000, round_id=1), code="OP_31"),
        oia("refusal", 0, 12200, 5, round_id="1", fin="0", fp=fp("BET", "p1", 100, round_id=1), code="OP_21"),
        oia("cancel", 100, 12300, 1, round_id="1"),  # the cancel's own round, game and round_finished
        oia("cancel", 0, 12300, 4, round_id="1"),
        ("tombstone", 0, 12300, "oia", f"{OPERATOR}|8", OPERATOR, "", "", "", "", "", "", None),
        oia("refusal", 0, 12300, 8, currency="", round_id="1", fin="0", fp=fp("BET", "p1", 100, round_id=1),
            code="OP_49"),
        oia("bet", -100, 12200, 10, round_id="11", fin="0", fp=fp("BET", "p1", 100, round_id=11)),
        ("finish", 0, 12200, "oia", f"{OPERATOR}|", OPERATOR, "", "11", "", "", "", "", None),  # once
        ("bet", -100, 12100, "stargame", request_id, "", "EUR", "", "", "", "", "", None),
        ("win", 250, 12350, "stargame", request_id, "", "EUR", "", "", "", "", "", None),
    ]
    # The StarGame ref is the request id that names the request's record (what the reconciler reads).
    keys = Keys(PARTITIONS)
    record = sync_redis.get(keys.stargame_request(keys.partition("p1"), request_id))
    assert record == f"booked|100|250|{p1[-2].entry_id},{p1[-1].entry_id}"
    p2 = [fields(e) for e in entries if e.player_id == "p2"]
    assert p2 == [
        ("open", 500, 500, "admin", "", OPERATOR, "JPY", "", "", "", "", "",
         {"cur": "JPY", "country": "", "lang": "en", "name": "", "aliases": "", "op": OPERATOR}),
        ("block", 0, 500, "admin", "", "", "JPY", "", "", "", "", "", None),
        ("unblock", 0, 500, "admin", "", "", "JPY", "", "", "", "", "", None),
    ]
    ghost = [fields(e) for e in entries if e.player_id == "ghost"]
    assert ghost == [oia("refusal", 0, 0, 6, currency="", round_id="1", fin="0", fp=fp("WIN", "ghost", 100, round_id=1),
                         code="OP_34")]
    assert {e.player_id for e in entries} == {"p1", "p2", "ghost"}
    assert all(e.amount_minor == 0 for e in entries if e.kind in JOURNAL_KINDS)
