"""redis.replica_acks on Redis Cluster (a private cluster of three AOF-always primaries,
the first with one replica; tests/redis_cluster.py): a booking waits for replicas of the
primary that ran it. The replicated primary's partitions are answered once its replica
has them; a primary without a replica cannot confirm (answered outcome unknown, as the
README says: every primary needs replica_acks replicas); the replica paused, the
replicated primary's bookings are outcome unknown too."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import pytest

from app.runtime import Runtime
from app.settings import Settings
from tests.cluster_walletd import KEYS, Placement, slot_of_player
from tests.redis_cluster import ClusterNode, LocalCluster, local_cluster
from tests.support import OPERATOR, open_client, sg

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

# A replica that confirms a write within this long is taken as following its primary.
PROMPT_ACK_MS = 200
PROMPT_TRIES = 150


def replica_balance(replica: ClusterNode, player: str) -> int:
    with contextlib.closing(replica.client()) as client:
        client.execute_command("READONLY")  # a replica answers its primary's slots, not MOVED
        return int(client.hget(KEYS.account(player), "bal"))


def wait_prompt_acks(primary: ClusterNode, player: str) -> None:
    """Until the replica confirms a write in the player's slot at once (after its sync it
    first confirms only with its once-a-second ACK; tests/redis_replicas.py)."""
    probe = f"{KEYS.tag(KEYS.partition(player))}:replication-probe"
    with contextlib.closing(primary.client()) as client:
        for _ in range(PROMPT_TRIES):
            client.set(probe, "1")
            client.delete(probe)
            if client.execute_command("WAIT", 1, PROMPT_ACK_MS) == 1:
                return
    raise AssertionError("the replica does not confirm writes")


async def test_a_booking_waits_for_replicas_of_the_primary_that_ran_it(settings: Settings, tmp_path: Path) -> None:
    with local_cluster(tmp_path / "cluster", primaries=3, replicas=1) as cluster:
        await check_cluster(settings, cluster)


async def check_cluster(settings: Settings, cluster: LocalCluster) -> None:
    replicated, alone = cluster.primaries[0], cluster.primaries[1]
    replica = cluster.replicas[0]  # (replica i follows primary i % primaries)
    placement = Placement(cluster)
    (with_replica,) = placement.players_on(replicated, 1, "r")
    (without,) = placement.players_on(alone, 1, "n")
    assert cluster.owner(slot_of_player(with_replica)) is replicated

    settings.redis.url = cluster.url
    settings.redis.cluster = True
    settings.redis.replica_ack_timeout_ms = 500  # generous: a loaded 2-core machine
    settings.stargame.budget_ms = 2000
    async with Runtime(settings, settings.redis.url) as runtime:  # replica_acks 0: both players made at once
        for player in (with_replica, without):
            await runtime.wallet.create_player(player, "EUR", 5000, "DE", "en", "", [], operator_id=OPERATOR)
    wait_prompt_acks(replicated, with_replica)

    settings.redis.replica_acks = 1
    client, app = await open_client(settings)
    async with app.router.lifespan_context(app), client:  # type: ignore[attr-defined]
        for player in (with_replica, without):
            assert (await sg(client, cmd="getBalance", uid=player))["status"] == "success"  # reads: no WAIT

        spin = await sg(client, cmd="writeBet", uid=with_replica, bet="100", win="0")
        assert spin["status"] == "success" and spin["cash"] == 4900
        assert replica_balance(replica, with_replica) == 4900  # on the replica when answered

        # A primary without replicas confirms nothing: every booking there is outcome unknown.
        spin = await sg(client, cmd="writeBet", uid=without, bet="100", win="0")
        assert spin["status"] == "fail" and "outcome unknown" in spin["error"]

        assert replica.process is not None
        os.kill(replica.process.pid, signal.SIGSTOP)
        try:
            spin = await sg(client, cmd="writeBet", uid=with_replica, bet="100", win="0")
            assert spin["status"] == "fail" and "outcome unknown" in spin["error"]
        finally:
            os.kill(replica.process.pid, signal.SIGCONT)
        script_client = app.state.service.runtime.script_client  # type: ignore[attr-defined]
        assert script_client.replica_ack_shortfalls() == 2
