"""Slots resharded under load: the partitions of active players move from one primary to
another step by step (CLUSTER SETSLOT MIGRATING/IMPORTING, MIGRATE in batches, SETSLOT
NODE), as `redis-cli --cluster reshard` does, while `walletd serve` books OIA BETs and
StarGame writeBets and answers getBalance for them. Redis refuses a booking script
whose keys are split mid-migration (TRYAGAIN: not run), redirects a read of a moved key
(ASK) and, once the slot is moved, every call to the old owner (MOVED): walletd follows
the redirections, never books twice, never loses a booking. Redis's own error counts
(INFO errorstats) show that ASK and MOVED really were answered to walletd."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import httpx
import pytest

from tests.cluster_walletd import (
    KEYS,
    Placement,
    cluster_server,
    keys_on,
    redirects,
    sg_balances_settled,
    slot_of_player,
)
from tests.outage import (
    Load,
    first_ok_after,
    late_answers,
    money_problems,
    sequence_problems,
    summary,
    wait_for,
    wrong_answers,
)
from tests.process import walletd
from tests.redis_cluster import ClusterNode, LocalCluster, local_cluster

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

LOAD_S = 1.0
AFTER_S = 1.5
MOVING_PLAYERS = 2  # of each protocol, on the slots that move (one slot each)
STILL_PLAYERS = 2  # of each protocol, elsewhere
STEP_KEYS = 10  # keys per MIGRATE step
STEP_PAUSE_S = 0.1  # bookings and reads go on between steps
STEPS_MAX = 10  # then the rest moves at once (finish_migration)
ASK_WINDOW_S = 0.5  # accounts on the target, slot not yet handed over: reads get ASK
READ_PAUSE_S = 0.01  # between one reader's getBalance calls
# From a slot handed over to its players' first OK: MOVED followed at once; slack for a
# loaded machine.
BACK_WITHIN_S = 3.0


class Reader:
    """getBalance calls for the moving players, all the while: each must be answered
    (an account already on the target is reached through ASK)."""

    def __init__(self, base_url: str, players: list[str]) -> None:
        self.client = httpx.AsyncClient(base_url=base_url, timeout=10)
        self.players = players
        self.answers: list[tuple[str, dict]] = []
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(self.run())

    async def run(self) -> None:
        while not self.stop.is_set():
            for player in self.players:
                r = await self.client.get("/stargame", params={"cmd": "getBalance", "uid": player})
                self.answers.append((player, r.json()))
            await asyncio.sleep(READ_PAUSE_S)

    async def finish(self) -> list[tuple[str, dict]]:
        self.stop.set()
        await self.task
        await self.client.aclose()
        return self.answers


def move_accounts(cluster: LocalCluster, source: ClusterNode, target: ClusterNode, players: list[str]) -> None:
    """MIGRATE the players' account keys now, whichever batch GETKEYSINSLOT would have
    put them in: their reads go to the target through ASK from here on."""
    auth = ["AUTH", cluster.password] if cluster.password else []
    with contextlib.closing(source.client()) as client:
        for player in players:
            client.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, *auth, "KEYS",
                                   KEYS.account(player))


async def reshard(cluster: LocalCluster, slot: int, source: ClusterNode, target: ClusterNode,
                  players: list[str]) -> None:
    """The slot's keys to the target in steps, the load going on meanwhile."""
    await asyncio.to_thread(cluster.begin_migration, slot, source, target)
    for _ in range(STEPS_MAX):
        if not await asyncio.to_thread(cluster.move_keys, slot, source, target, STEP_KEYS):
            break
        await asyncio.sleep(STEP_PAUSE_S)
    await asyncio.to_thread(move_accounts, cluster, source, target, players)
    await asyncio.sleep(ASK_WINDOW_S)
    await asyncio.to_thread(cluster.finish_migration, slot, source, target)


async def test_slots_resharded_under_load(tmp_path: Path) -> None:
    with local_cluster(tmp_path / "cluster") as cluster:
        placement = Placement(cluster)
        source, target = cluster.primaries[1], cluster.primaries[2]
        # Each moving player alone on its slot, so MOVING_PLAYERS * 2 slots move.
        moving: list[str] = []
        for n in range(2 * MOVING_PLAYERS):
            taken = frozenset(slot_of_player(p) for p in moving)
            moving += placement.players_on(source, 1, f"mv{n}-", exclude_slots=taken)
        slots = [slot_of_player(p) for p in moving]
        still = [p for i, node in enumerate(cluster.primaries)
                 for p in placement.players_on(node, 2 * STILL_PLAYERS, f"st{i}-", exclude_slots=frozenset(slots))]
        server = cluster_server(tmp_path / "w", cluster)
        storage_url = f"sqlite:///{tmp_path / 'w' / 'ledger.db'}"
        try:
            server.start()
            oia = moving[:MOVING_PLAYERS] + still[::2]
            sg = moving[MOVING_PLAYERS:] + still[1::2]
            load = Load(server.base_url, oia, sg, workers=8)
            await load.create_players()
            before = redirects(source)
            load.start()
            reader = Reader(server.base_url, moving)
            await asyncio.sleep(LOAD_S)
            ends = []
            for slot, player in zip(slots, moving, strict=True):
                await reshard(cluster, slot, source, target, [player])
                ends.append(time.monotonic())
            await asyncio.sleep(AFTER_S)
            answers = await load.finish()
            reads = await reader.finish()
            counted = redirects(source) - before
            print(f"\n{summary(answers)}\nredirects answered by the source: {dict(counted)}")
            settled = await wait_for(lambda: sg_balances_settled(cluster, answers))
            server.stop()  # verify drains the rest alone
            check = walletd(server.config, "verify", check=False)
            placed = Placement(cluster)
            misplaced = [p for p in moving if placed.node_of(p) is not target or not keys_on(target, KEYS.account(p))]
        finally:
            server.stop()
    assert "Traceback" not in server.log.read_text()
    assert [slot for slot in slots if placed.node_of_slot(slot) is not target] == []
    assert misplaced == []
    assert counted["ASK"] > 0, counted
    assert counted["MOVED"] > 0, counted
    assert wrong_answers(answers) == []
    assert late_answers(answers) == []
    assert [(p, a) for p, a in reads if a["status"] != "success"] == []
    for player, end in zip(moving, ends, strict=True):
        protocol = "oia" if player in oia else "stargame"
        assert first_ok_after([a for a in answers if a.player == player], end, protocol) < BACK_WITHIN_S, player
    assert settled, "StarGame balances never matched the answered successes"
    assert check.returncode == 0, check.stdout + check.stderr
    assert money_problems(answers, storage_url) == []
    assert sequence_problems(storage_url) == []
