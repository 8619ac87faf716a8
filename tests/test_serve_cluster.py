"""End to end on Redis Cluster: `walletd serve` (cluster mode detected) on the session's
three primaries, players on each of them created through the admin API and the CLI,
an OIA bet and win and StarGame writeBets answered, the flusher storing every entry
once, and `walletd verify` (which drains, then compares) run as a command against it."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import httpx
import pytest

from app.keys import partition_of
from tests.cluster_walletd import KEYS, PARTITIONS, Placement, balance_in_cluster, keys_on
from tests.oia_calls import call, change, new_session
from tests.process import Server, walletd
from tests.redis_cluster import LocalCluster
from tests.support import ADMIN_TOKEN, OPERATOR

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
OPENING = "100.00"
OPENING_MINOR = 10_000
# The flusher stores within a few ticks (20 ms in tests/process.py); generous for a loaded machine.
STORED_WAIT_S = 30.0


def stored_entries(server: Server) -> list[tuple[int, int, str]]:
    with sqlite3.connect(server.config.parent / "ledger.db") as db:
        return db.execute("SELECT partition, seq, player_id FROM ledger ORDER BY partition, seq").fetchall()


async def wait_stored(server: Server, count: int) -> list[tuple[int, int, str]]:
    deadline = time.monotonic() + STORED_WAIT_S
    while time.monotonic() < deadline:
        try:
            rows = stored_entries(server)
        except sqlite3.OperationalError:  # the flusher has not created the table yet
            rows = []
        if len(rows) >= count:
            return rows
        await asyncio.sleep(0.1)
    raise AssertionError(f"{len(rows)} of {count} entries stored:\n" + server.log.read_text()[-3000:])


async def test_serve_books_and_flushes_on_every_primary(cluster_walletd: Server, redis_cluster: LocalCluster) -> None:
    placement = Placement(redis_cluster)
    players = [placement.players_on(node, 1, f"smoke{i}-")[0] for i, node in enumerate(redis_cluster.primaries)]
    async with httpx.AsyncClient(base_url=cluster_walletd.base_url, timeout=10) as client:
        for player in players[:-1]:
            r = await client.post("/admin/players", headers=AUTH, json={
                "player_id": player, "currency": "EUR", "balance": OPENING, "operator_id": OPERATOR,
                "aliases": [f"stargame:sg-{player}"]})
            assert r.status_code == 201, r.text
        # The last one by the CLI: a command on the cluster (redis-py's cluster client).
        walletd(cluster_walletd.config, "player", "create", players[-1], "--currency", "EUR",
                "--balance", OPENING, "--operator", OPERATOR)
        for n, player in enumerate(players):
            token = await new_session(client, player)
            bet = await call(client, "changebalance", change(player, 100 + n, "BET", 1.00, token=token))
            assert bet["status"] == "OK", bet
            win = await call(client, "changebalance", change(player, 200 + n, "WIN", 2.50, token=token))
            assert win["status"] == "OK" and win["data"]["balance"] == 101.5, win
            uid = f"sg-{player}" if player != players[-1] else player
            r = await client.get("/stargame", params={"cmd": "writeBet", "uid": uid, "bet": "100", "win": "0"})
            assert r.json()["status"] == "success" and r.json()["cash"] == OPENING_MINOR + 150 - 100, r.text
    # Each player's partition on its own primary, and its balance there.
    for node, player in zip(redis_cluster.primaries, players, strict=True):
        assert keys_on(node, KEYS.account(player)) == [KEYS.account(player)]
        assert balance_in_cluster(redis_cluster, player) == OPENING_MINOR + 50
    entries = 4 * len(players)  # opening, bet, win, writeBet
    rows = await wait_stored(cluster_walletd, entries)
    assert len(rows) == len(set((p, s) for p, s, _ in rows)) == entries
    assert {p for p, _, _ in rows} == {partition_of(player, PARTITIONS) for player in players}
    # verify, a command against the cluster: it drains the streams, then compares every balance.
    verified = walletd(cluster_walletd.config, "verify", check=False)
    assert verified.returncode == 0, verified.stdout + verified.stderr
