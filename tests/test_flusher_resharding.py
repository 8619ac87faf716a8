"""The flusher while partitions' slots move between primaries (a private cluster): its
XREADGROUPs go to the primary its slot map names, so a stream that moved is answered
ASK (migrating) or MOVED (moved), which redis-py follows (neither ran where it was sent);
every entry is stored exactly once, acknowledged and trimmed on its new primary."""

from __future__ import annotations

import contextlib
from collections import Counter
from pathlib import Path

import pytest

from app.keys import Keys
from app.ledger.flusher import GROUP
from app.runtime import Runtime
from app.settings import Settings
from tests.redis_cluster import ClusterNode, LocalCluster, local_cluster, slot_of
from tests.support import OPERATOR, ledger_rows

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

PARTITIONS = 8
PLAYERS = 24
DEPOSITS = 5  # each player's, per round
# More than the keys of one partition's slot in this test (accounts, seq, stream, tx records).
KEYS_IN_SLOT_MAX = 1000


def redirects(node: ClusterNode) -> Counter[str]:
    """MOVED and ASK replies the node has sent (INFO errorstats)."""
    with contextlib.closing(node.client()) as client:
        stats = client.info("errorstats")
    return Counter({kind: int(stats.get(f"errorstat_{kind}", {}).get("count", 0)) for kind in ("MOVED", "ASK")})


async def deposit_all(runtime: Runtime, players: list[str], round_name: str) -> None:
    for player in players:
        for n in range(DEPOSITS):
            await runtime.wallet.adjust(player, "deposit", 1, f"{round_name}-{n}")


async def test_entries_are_stored_once_while_slots_move(tmp_path: Path) -> None:
    with local_cluster(tmp_path / "cluster", primaries=3) as cluster:
        await stored_once_while_slots_move(cluster, tmp_path)


async def stored_once_while_slots_move(cluster: LocalCluster, tmp_path: Path) -> None:
    settings = Settings(data_dir=str(tmp_path / "var"))
    settings.redis.url = cluster.url
    settings.storage.url = f"sqlite:///{tmp_path / 'ledger.db'}"
    settings.wallet.partitions = PARTITIONS
    settings.flusher.claim_idle_ms = 0
    keys = Keys(PARTITIONS)
    players = [f"r{i}" for i in range(PLAYERS)]
    async with Runtime(settings, cluster.url, ledger=True) as runtime:
        flusher = runtime.flusher
        assert flusher is not None
        for player in players:
            await runtime.wallet.create_player(player, "EUR", 0, "", "en", "", [], operator_id=OPERATOR)
        assert await flusher.drain() == PLAYERS  # the client's slot map is read here
        partition = keys.partition(players[0])
        slot = slot_of(keys.tag(partition))
        source = cluster.owner(slot)
        target = next(node for node in cluster.primaries if node is not source)
        before = redirects(source)

        # Migrating: the partition's stream (and some other keys) are on the target already.
        await deposit_all(runtime, players, "migrating")
        cluster.begin_migration(slot, source, target)
        with contextlib.closing(source.client()) as direct:
            for _ in range(KEYS_IN_SLOT_MAX):  # one key at a time until the stream has moved
                held = direct.execute_command("CLUSTER", "GETKEYSINSLOT", slot, KEYS_IN_SLOT_MAX)
                if keys.ledger(partition) not in held:
                    break
                cluster.move_keys(slot, source, target, count=1)
            assert direct.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) > 0, "the slot is half moved"
        await flusher.drain()
        assert redirects(source)["ASK"] > before["ASK"], "the stream's read was answered ASK and followed"

        # Moved: the target owns the slot; the flusher's map still names the source.
        cluster.finish_migration(slot, source, target)
        await deposit_all(runtime, players, "moved")
        await flusher.drain()
        assert redirects(source)["MOVED"] > before["MOVED"], "a read was answered MOVED and followed"

        with contextlib.closing(target.client()) as direct:
            assert direct.xlen(keys.ledger(partition)) == 0
            assert direct.xpending(keys.ledger(partition), GROUP)["pending"] == 0
    rows = ledger_rows(settings)
    assert len(rows) == len({(r["partition"], r["seq"]) for r in rows}) == PLAYERS * (1 + 2 * DEPOSITS)
    for p in range(PARTITIONS):
        seqs = [r["seq"] for r in rows if r["partition"] == p]
        assert seqs == list(range(1, len(seqs) + 1))
