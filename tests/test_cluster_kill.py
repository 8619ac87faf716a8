"""One primary of a three-primary Redis Cluster killed (-9) under a running `walletd serve`
with OIA and StarGame load, then restarted on its port, nodes.conf and AOF (appendfsync
always): the players on the other primaries are served all along; those on the dead one
get clean refusals within budget, and are served again once it is back; every booking
answered OK is stored exactly once, nothing refused as unsent is stored, and each
partition's ledger has no gap (README "Scaling out")."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.cluster_walletd import Placement, cluster_server, sg_balances_settled
from tests.outage import (
    Answer,
    Load,
    first_ok_after,
    late_answers,
    money_problems,
    oks_between,
    sequence_problems,
    summary,
    wait_for,
    wrong_answers,
)
from tests.process import walletd
from tests.redis_cluster import local_cluster

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

LOAD_S = 1.5
# A StarGame uid's alias key (w:alias:stargame:<uid>) has a slot of its own, often on
# another primary than the player's partition: the live primaries' StarGame players whose
# alias keys the dead primary holds are served from the alias cache (read before the kill),
# also past its 10 s expiry (app/wallet.py ALIAS_STALE_MAX_S, tests/test_alias_stale.py).
DOWN_S = 2.5
AFTER_S = 2.5
PLAYERS_PER_NODE = 2  # of each protocol
# Refusals the dead primary's players must have had: the load did reach it.
REFUSALS_MIN = 10
# Bookings the live primaries' players must have had while it was down.
LIVE_OKS_MIN = 50
# Share of StarGame calls to live primaries answered OK during the outage: a loaded
# 2-core machine may push a few writeBets past StarGame's budget (a clean "fail").
LIVE_SG_OK_SHARE_MIN = 0.9
# From the restarted primary answering to its players' first OK: walletd reconnects by
# itself; the rest is slack for a loaded machine.
BACK_WITHIN_S = 5.0


def during(answers: list[Answer], players: set[str], start: float, end: float) -> list[Answer]:
    return [a for a in answers if a.player in players and start < a.sent and a.received < end]


@pytest.mark.parametrize("victim_index", [1, 0], ids=["another-primary", "the-url-primary"])
async def test_a_primary_killed_and_restarted_under_load(tmp_path: Path, victim_index: int) -> None:
    """the-url-primary: the node redis.url names, which walletd learned the cluster from."""
    with local_cluster(tmp_path / "cluster") as cluster:
        placement = Placement(cluster)
        spread = {node: placement.players_on(node, 2 * PLAYERS_PER_NODE, f"k{i}-")
                  for i, node in enumerate(cluster.primaries)}
        victim = cluster.primaries[victim_index]
        dead = set(spread[victim])
        live = {p for node, players in spread.items() if node is not victim for p in players}
        server = cluster_server(tmp_path / "w", cluster)
        storage_url = f"sqlite:///{tmp_path / 'w' / 'ledger.db'}"
        try:
            server.start()
            load = Load(server.base_url, [p for ps in spread.values() for p in ps[:PLAYERS_PER_NODE]],
                        [p for ps in spread.values() for p in ps[PLAYERS_PER_NODE:]], workers=8)
            await load.create_players()
            load.start()
            await asyncio.sleep(LOAD_S)
            cluster.kill(victim)
            killed = time.monotonic()
            await asyncio.sleep(DOWN_S)
            restarting = time.monotonic()
            await asyncio.to_thread(cluster.restart, victim)  # waits until the cluster agrees again
            up = time.monotonic()
            await asyncio.sleep(AFTER_S)
            answers = await load.finish()
            print(f"\n{summary(answers)}")
            settled = await wait_for(lambda: sg_balances_settled(cluster, answers))
            server.stop()  # verify drains the rest alone, not racing serve's flusher
            check = walletd(server.config, "verify", check=False)
        finally:
            server.stop()
    log = server.log.read_text()
    assert "Traceback" not in log, log
    assert wrong_answers(answers) == []
    assert late_answers(answers) == []
    dead_during = during(answers, dead, killed, restarting)
    assert len(dead_during) >= REFUSALS_MIN, summary(dead_during)
    assert oks_between(dead_during, killed, restarting) == [], "OK from a dead primary"
    live_during = during(answers, live, killed, restarting)
    print(f"during the outage: dead primary's players {summary(dead_during)}; others {summary(live_during)}")
    assert [a for a in live_during if a.protocol == "oia" and a.outcome != "OK"] == []
    sg_live = [a for a in live_during if a.protocol == "stargame"]
    assert sum(a.outcome == "OK" for a in sg_live) >= LIVE_SG_OK_SHARE_MIN * len(sg_live), summary(sg_live)
    assert len(oks_between(live_during, killed, restarting)) >= LIVE_OKS_MIN
    back = {protocol: first_ok_after([a for a in answers if a.player in dead], up, protocol)
            for protocol in ("oia", "stargame")}
    assert max(back.values()) < BACK_WITHIN_S, back
    assert settled, "StarGame balances never matched the answered successes"
    assert check.returncode == 0, check.stdout + check.stderr
    assert money_problems(answers, storage_url) == []
    assert sequence_problems(storage_url) == []
