"""The cluster script client against real local Redis Clusters (tests/redis_cluster.py):
every partition's calls run on the primary owning its slot, MOVED and ASK are followed
(a slot moved away, a slot mid-migration, bookings racing a reshard with exact counts),
a stalled node's calls end "outcome unknown" and are never re-sent, a killed primary's
slots are refused unrun and served again after its restart, a password-protected
cluster works, and the standalone client refuses a cluster's redirects cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis
from redis.exceptions import RedisError

from app.errors import OutcomeUnknown, WalletUnavailable
from app.keys import Keys
from app.ledger.guard import look_at_redis
from app.redis_client import connect
from app.redis_cluster_pipe import ClusterPipelinedRedis
from app.redis_link import CALL_DEADLINE_MS
from app.redis_pipe import ClusterRefusal, PipelinedRedis
from app.runtime import Runtime
from app.scripts import Script, Scripts
from app.settings import RedisSettings, Settings
from tests.cluster_walletd import Placement, account_on
from tests.oia_calls import call, change, new_session
from tests.redis_cluster import LocalCluster, local_cluster, slot_of
from tests.support import OPERATOR, serving

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

KEYS = Keys(256)
PLAYER = "player-1"
SOURCE = "oia:op"
# A booking's shape: the transaction record written once (NX), then the balance moved;
# a second call with the same id moves nothing. Answers the balance after, or -1.
BOOK_LUA = """
if redis.call('SET', KEYS[2], ARGV[1], 'NX') then
  return redis.call('HINCRBY', KEYS[1], 'balance', ARGV[1])
end
return -1
"""
# Generous for a loaded 2-core machine; no test asserts a speed.
TIMEOUT_S = 1.0
WAIT_S = 30.0


def account(partition: int, player: str = PLAYER) -> str:
    return KEYS.account_at(partition, player)


def tx(partition: int, tx_id: str, player: str = PLAYER) -> str:
    return KEYS.tx(partition, SOURCE, player, tx_id)


def address(node: object) -> str:
    return f"127.0.0.1:{node.port}"  # type: ignore[attr-defined]


def balance_on(cluster: LocalCluster, partition: int, player: str = PLAYER) -> int:
    with contextlib.closing(cluster.owner(slot_of(KEYS.tag(partition))).client()) as client:
        return int(client.hget(account(partition, player), "balance") or 0)


@contextlib.asynccontextmanager
async def cluster_client(url: str, timeout_s: float = TIMEOUT_S) -> AsyncIterator[ClusterPipelinedRedis]:
    client = ClusterPipelinedRedis(url, timeout_s, TIMEOUT_S)
    try:
        yield client
    finally:
        await client.aclose()


async def book(script: Script, partition: int, tx_id: str, amount: int = 1) -> int:
    return int(await script(keys=[account(partition), tx(partition, tx_id)], args=[amount]))


def partition_in(cluster: LocalCluster, node: object, avoid: int = -1) -> int:
    """A partition whose slot the node serves."""
    return next(p for p in range(KEYS.partitions)
                if p != avoid and cluster.owner(slot_of(KEYS.tag(p))) is node)


async def until(condition: object, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if await condition():  # type: ignore[operator]
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def test_every_partitions_calls_run_on_the_primary_owning_its_slot(redis_cluster: LocalCluster,
                                                                          cluster_url: str) -> None:
    async with cluster_client(cluster_url) as client:
        script = Script(client, BOOK_LUA)
        answers = await asyncio.gather(*(book(script, p, f"t{p}", p + 1) for p in range(KEYS.partitions)))
        assert answers == [p + 1 for p in range(KEYS.partitions)]
        assert client.redirects == {"moved": 0, "ask": 0, "retry": 0}  # the map was right from the start
        used = set()
        for partition in range(KEYS.partitions):
            owner = redis_cluster.owner(slot_of(KEYS.tag(partition)))
            assert client.owner(slot_of(KEYS.tag(partition))) == address(owner)
            with contextlib.closing(owner.client()) as node:  # a node holds only its own slots' keys
                assert node.hget(account(partition), "balance") == str(partition + 1)
                assert node.get(tx(partition, f"t{partition}")) == str(partition + 1)
            used.add(owner.port)
        assert used == {node.port for node in redis_cluster.primaries}  # spread over all three
        ranges = await client.slot_ranges()
        assert [(start, end) for start, end, _ in ranges] == [(0, 5460), (5461, 10921), (10922, 16383)]


async def test_hostile_transaction_ids_hash_by_the_partition_tag(redis_cluster: LocalCluster,
                                                                 cluster_url: str) -> None:
    """A tx id may hold braces, colons and bars: the key's first {...} is the partition's, so
    the record lands with the account (no CROSSSLOT) on the partition's owner."""
    async with cluster_client(cluster_url) as client:
        script = Script(client, BOOK_LUA)
        hostile = ["{p7}", "}{", "{", "}", "{}", "a}:acct:{b", "x|y:{z}|", "{" * 40 + "}" * 40]
        for i, tx_id in enumerate(hostile):
            assert await book(script, 3, tx_id) == i + 1
            assert slot_of(tx(3, tx_id)) == slot_of(account(3))
        assert await book(script, 3, hostile[0]) == -1  # the same id again: nothing moved
        assert balance_on(redis_cluster, 3) == len(hostile)


async def test_scripts_are_loaded_on_every_primary_and_again_on_one_that_lost_them(
        redis_cluster: LocalCluster, cluster_url: str) -> None:
    async with cluster_client(cluster_url) as client:
        scripts = Scripts(client)
        await scripts.load(None)  # type: ignore[arg-type]  # in cluster mode through the cluster client
        shas = [script.sha for script in scripts.all()]
        for node in redis_cluster.primaries:
            with contextlib.closing(node.client()) as direct:
                assert all(direct.script_exists(*shas))
        assert await scripts.reload_missing(None) == 0  # type: ignore[arg-type]
        victim = redis_cluster.primaries[1]
        with contextlib.closing(victim.client()) as direct:
            direct.script_flush()
        partition = partition_in(redis_cluster, victim)
        # NOSCRIPT on that node: Script falls back to EVAL (routed alike), the node gets them back.
        assert await scripts.balance(keys=[account(partition)]) == []

        async def reloaded() -> bool:
            with contextlib.closing(victim.client()) as direct:
                return all(direct.script_exists(*shas))

        await until(reloaded, "the scripts loaded again on the node that lost them")


async def test_standalone_client_on_a_cluster_node_refuses_redirects_unrun(redis_cluster: LocalCluster,
                                                                          cluster_url: str) -> None:
    seed = redis_cluster.primaries[0]
    partition = next(p for p in range(KEYS.partitions) if redis_cluster.owner(slot_of(KEYS.tag(p))) is not seed)
    pipe = PipelinedRedis(cluster_url, TIMEOUT_S, TIMEOUT_S)
    try:
        with pytest.raises(WalletUnavailable, match=r"MOVED .*set \[redis\] cluster = true") as refused:
            await pipe.execute("HINCRBY", account(partition), "balance", 5)
        assert isinstance(refused.value, ClusterRefusal) and refused.value.kind == "MOVED"
        assert not pipe.link.down  # the node answered: no outage logged
        assert await pipe.execute("PING") == "PONG"  # the connection is still in step
    finally:
        await pipe.aclose()
    assert balance_on(redis_cluster, partition) == 0


async def test_a_moved_slot_is_followed_and_the_map_refreshed(tmp_path: Path) -> None:
    with local_cluster(tmp_path) as cluster:
        async with cluster_client(cluster.url) as client:
            script = Script(client, BOOK_LUA)
            source, target = cluster.primaries[0], cluster.primaries[2]
            first = partition_in(cluster, source)
            second = partition_in(cluster, source, avoid=first)
            assert await book(script, first, "a") == 1 and await book(script, second, "a") == 1
            await asyncio.to_thread(cluster.migrate, slot_of(KEYS.tag(first)), target)
            await asyncio.to_thread(cluster.migrate, slot_of(KEYS.tag(second)), target)
            assert await book(script, first, "b") == 2  # MOVED, followed: ran once, on the target
            assert client.redirects["moved"] == 1
            assert client.owner(slot_of(KEYS.tag(first))) == address(target)

            async def refreshed() -> bool:
                return client.owner(slot_of(KEYS.tag(second))) == address(target)

            await until(refreshed, "the full map read the MOVED started")
            assert await book(script, second, "b") == 2
            assert client.redirects["moved"] == 1  # the refreshed map sent it right
            assert balance_on(cluster, first) == 2 and balance_on(cluster, second) == 2


async def test_a_slot_mid_migration_is_followed_by_ask_and_split_keys_retried(tmp_path: Path) -> None:
    with local_cluster(tmp_path) as cluster:
        async with cluster_client(cluster.url) as client:
            script = Script(client, BOOK_LUA)
            source, target = cluster.primaries[0], cluster.primaries[1]
            partition = partition_in(cluster, source)
            slot = slot_of(KEYS.tag(partition))
            players = [f"p{i}" for i in range(4)]
            for player in players:
                assert await client.execute("HINCRBY", account(partition, player), "balance", 10) == 10
            cluster.begin_migration(slot, source, target)
            with contextlib.closing(source.client()) as direct:
                keys = sorted(direct.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 10))
                direct.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", keys[0])
            moved = next(p for p in players if account(partition, p) == keys[0])
            stayed = next(p for p in players if p != moved)
            # Moved already: the source answers ASK; ASKING + the call on the target.
            assert await client.execute("HINCRBY", account(partition, moved), "balance", 1) == 11
            # A new key: the source has not got it, ASK; created on the target.
            assert await client.execute("HINCRBY", account(partition, "newcomer"), "balance", 7) == 7
            # Still on the source: served there.
            assert await client.execute("HINCRBY", account(partition, stayed), "balance", 1) == 11
            asks = client.redirects["ask"]
            assert asks == 2 and client.redirects["moved"] == 0
            # A script on moved keys alone: ASK, then EVALSHA (NOSCRIPT there: EVAL) on the target.
            adjust = Script(client, "return redis.call('HINCRBY', KEYS[1], 'balance', ARGV[1])")
            assert await adjust(keys=[account(partition, moved)], args=[1]) == 12
            assert client.redirects["ask"] > asks
            # Keys split between the nodes (the account stayed, the new record would go to the
            # target): TRYAGAIN, retried a few times, then refused unrun.
            with pytest.raises(WalletUnavailable, match="did not run"):
                await script(keys=[account(partition, stayed), tx(partition, "s", stayed)], args=[1])
            assert client.redirects["retry"] > 0
            cluster.finish_migration(slot, source, target)
            assert int(await script(keys=[account(partition, stayed), tx(partition, "s", stayed)], args=[1])) == 12
        with contextlib.closing(target.client()) as direct:
            assert direct.hget(account(partition, moved), "balance") == "12"
            assert direct.get(tx(partition, "s", stayed)) == "1"
            assert direct.hget(account(partition, stayed), "balance") == "12"  # the refused call moved nothing
            assert direct.hget(account(partition, "newcomer"), "balance") == "7"


async def test_bookings_racing_a_reshard_are_counted_exactly(tmp_path: Path) -> None:
    """Bookings on one partition while its slot moves key batch by key batch: every booking
    answered OK is there once, every refused one (not run) is absent; none is doubled."""
    with local_cluster(tmp_path) as cluster:
        async with cluster_client(cluster.url, timeout_s=5.0) as client:
            script = Script(client, BOOK_LUA)
            source, target = cluster.primaries[2], cluster.primaries[0]
            partitions = [partition_in(cluster, source)]
            slot = slot_of(KEYS.tag(partitions[0]))
            players = [f"racer{i}" for i in range(20)]
            outcomes: dict[tuple[str, int], object] = {}
            stop = asyncio.Event()

            async def booker(player: str) -> None:
                i = 0
                while not stop.is_set() or i < 5:
                    keys = [account(partitions[0], player), tx(partitions[0], f"t{i}", player)]
                    try:
                        outcomes[(player, i)] = int(await script(keys=keys, args=[1]))
                    except WalletUnavailable as exc:
                        outcomes[(player, i)] = exc
                    i += 1
                    await asyncio.sleep(0)

            def reshard() -> None:
                time.sleep(0.2)
                cluster.begin_migration(slot, source, target)
                while cluster.move_keys(slot, source, target, count=3):
                    time.sleep(0.01)
                cluster.finish_migration(slot, source, target)
                time.sleep(0.2)

            tasks = [asyncio.create_task(booker(player)) for player in players]
            await asyncio.to_thread(reshard)
            stop.set()
            await asyncio.gather(*tasks)
        booked = {key for key, outcome in outcomes.items() if isinstance(outcome, int)}
        assert all(outcomes[key] != -1 for key in booked)  # no id was ever booked twice
        assert client.redirects["moved"] + client.redirects["ask"] > 0  # the race did happen
        with contextlib.closing(target.client()) as direct:
            for player in players:
                mine = {i for p, i in booked if p == player}
                assert int(direct.hget(account(partitions[0], player), "balance") or 0) == len(mine)
                present = {i for p, i in outcomes if p == player
                           if direct.exists(tx(partitions[0], f"t{i}", player))}
                assert present == mine


async def test_a_stalled_node_ends_in_outcome_unknown_never_resent(tmp_path: Path) -> None:
    with local_cluster(tmp_path) as cluster:
        async with cluster_client(cluster.url, timeout_s=0.5) as client:
            script = Script(client, BOOK_LUA)
            stalled, healthy = cluster.primaries[1], cluster.primaries[2]
            mine, other = partition_in(cluster, stalled), partition_in(cluster, healthy)
            assert await book(script, mine, "warm") == 1  # connections and scripts in place
            assert stalled.process is not None
            stalled.process.send_signal(signal.SIGSTOP)
            try:
                with pytest.raises(OutcomeUnknown):
                    await book(script, mine, "stalled")
                assert await book(script, other, "meanwhile") == 1  # the other nodes serve on
            finally:
                stalled.process.send_signal(signal.SIGCONT)
            # The stalled node ran the call it had received, once: not re-sent.
            await until(lambda: asyncio.to_thread(lambda: balance_on(cluster, mine) == 2),
                        "the stalled call to run when the node resumes")
            await asyncio.sleep(0.5)
            assert balance_on(cluster, mine) == 2
            assert await book(script, mine, "stalled") == -1  # booked exactly once


async def test_a_killed_primary_is_refused_unrun_and_served_after_its_restart(tmp_path: Path) -> None:
    with local_cluster(tmp_path) as cluster:
        async with cluster_client(cluster.url) as client:
            restarts: list[int] = []
            client.on_restart = lambda: restarts.append(1)
            script = Script(client, BOOK_LUA)
            victim, healthy = cluster.primaries[0], cluster.primaries[1]
            mine, other = partition_in(cluster, victim), partition_in(cluster, healthy)
            assert await book(script, mine, "before") == 1 and await book(script, other, "before") == 1
            cluster.kill(victim)
            await asyncio.sleep(0.5)  # the lost connections seen (a call written before: outcome unknown)
            started = time.monotonic()
            token = CALL_DEADLINE_MS.set(int(time.time() * 1000) + 2000)
            try:
                with pytest.raises(WalletUnavailable):
                    await book(script, mine, "during")
            finally:
                CALL_DEADLINE_MS.reset(token)
            assert time.monotonic() - started < 2.5  # refused within the callback's deadline
            assert client.link.down
            assert await book(script, other, "during") == 2  # the live primaries serve on
            await asyncio.to_thread(cluster.restart, victim)

            async def served() -> bool:
                try:
                    return await book(script, mine, "after") == 2
                except WalletUnavailable:
                    return False

            await until(served, "the restarted primary to serve again")
            assert restarts == [1]  # its restart was noticed (the guard compares it with the store)
            assert not client.link.down
        assert balance_on(cluster, mine) == 2  # "during" never ran


async def test_a_password_protected_cluster(tmp_path: Path) -> None:
    password = "cluster-secret-:@/7"
    with local_cluster(tmp_path, password=password) as cluster:
        async with cluster_client(cluster.url) as client:
            script = Script(client, BOOK_LUA)
            for node in cluster.primaries:
                assert await book(script, partition_in(cluster, node), "pw") == 1
        wrong = cluster.url.replace("cluster-secret", "guess")
        async with cluster_client(wrong) as client:
            with pytest.raises(WalletUnavailable) as refused:
                await client.execute("GET", account(0))
            assert "guess" not in str(refused.value)
        bare = redis.Redis(port=cluster.primaries[0].port)  # the nodes do require the password
        with contextlib.closing(bare), pytest.raises(redis.AuthenticationError):
            bare.ping()



async def test_the_app_books_through_the_cluster_client_on_every_primary(
        redis_cluster: LocalCluster, cluster_url: str, settings: Settings) -> None:
    """walletd in process on the session cluster (cluster mode detected): its scripts go
    through the cluster client, for the server and for a command (create_player), and
    OIA bookings of players on each primary land on that primary, counted exactly."""
    settings.redis.url = cluster_url
    placement = Placement(redis_cluster)
    players = placement.spread(2, "cp")
    async with Runtime(settings, cluster_url) as command:  # a command's Runtime: scripts through it too
        assert isinstance(command.script_client, ClusterPipelinedRedis)
        for node_players in players.values():
            for player in node_players:
                await command.wallet.create_player(player, "EUR", 10_000, "DE", "en", "P", [], operator_id=OPERATOR)
    async with serving(settings) as client:
        bets = 3
        for node, node_players in players.items():
            for player in node_players:
                token = await new_session(client, player)
                answers = await asyncio.gather(*(call(client, "changebalance", change(player, tx, token=token))
                                                 for tx in range(bets)))
                assert [a["status"] for a in answers] == ["OK"] * bets
                again = await call(client, "changebalance", change(player, 0, token=token))  # a retry: no 2nd booking
                assert again["status"] == "OK"
                assert account_on(node, player)["bal"] == str(10_000 - 100 * bets)
        scrape = await client.get("/metrics")
    assert 'walletd_redis_cluster_redirects_total{kind="moved"} 0.0' in scrape.text


async def test_a_promoted_replica_takes_over_its_primarys_slots(tmp_path: Path) -> None:
    """With a replica, a killed primary's slots are refused unrun until the replica is
    promoted, then the map (re-read while calls fail) sends them to it; the new primary
    is reported like a restart (it may lack acknowledged writes: the guard compares)."""
    with local_cluster(tmp_path, primaries=3, replicas=1) as cluster:
        async with cluster_client(cluster.url) as client:
            restarts: list[int] = []
            client.on_restart = lambda: restarts.append(1)
            script = Script(client, BOOK_LUA)
            victim, replica = cluster.primaries[0], cluster.replicas[0]
            mine = partition_in(cluster, victim)
            assert await book(script, mine, "before") == 1

            def replicated() -> bool:
                with contextlib.closing(replica.client()) as direct:
                    direct.execute_command("READONLY")  # a replica's reads of its primary's slots
                    return direct.hget(account(mine), "balance") == "1"

            await until(lambda: asyncio.to_thread(replicated), "the replica to have the booking")
            cluster.kill(victim)

            async def served() -> bool:
                try:
                    return await book(script, mine, "after") == 2
                except (WalletUnavailable, OutcomeUnknown):
                    return False

            await until(served, "the replica to be promoted and serve the slot")
            assert client.owner(slot_of(KEYS.tag(mine))) == address(replica)
            assert restarts == [1]


async def test_a_hung_primarys_promoted_replica_is_found(tmp_path: Path) -> None:
    """A primary that hangs (SIGSTOP: a frozen host, a network partition) answers nothing:
    calls to it time out (outcome unknown, never re-sent) and its connection stays open.
    The cluster promotes its replica; the map is re-read after a time-out too, so the
    slot's calls go to the new primary instead of timing out for as long as the hung
    node's connection lives."""
    with local_cluster(tmp_path, primaries=3, replicas=1) as cluster:
        async with cluster_client(cluster.url) as client:
            restarts: list[int] = []
            client.on_restart = lambda: restarts.append(1)
            script = Script(client, BOOK_LUA)
            victim, replica = cluster.primaries[0], cluster.replicas[0]
            mine = partition_in(cluster, victim)
            assert await book(script, mine, "before") == 1
            settings = RedisSettings()
            settings.socket_timeout_ms = settings.connect_timeout_ms = int(TIMEOUT_S * 1000)
            commands = connect(cluster.primaries[1].url, settings, cluster=True)
            await look_at_redis(commands, KEYS)

            def replicated() -> bool:
                with contextlib.closing(replica.client()) as direct:
                    direct.execute_command("READONLY")
                    return direct.hget(account(mine), "balance") == "1"

            await until(lambda: asyncio.to_thread(replicated), "the replica to have the booking")
            assert victim.process is not None
            victim.process.send_signal(signal.SIGSTOP)
            try:
                attempt = 0

                async def served() -> bool:
                    nonlocal attempt
                    attempt += 1
                    try:  # a new id each time: one that timed out may yet run on the hung node
                        return await book(script, mine, f"after-{attempt}") == 2
                    except (WalletUnavailable, OutcomeUnknown):
                        return False

                await until(served, "the replica to be promoted and serve the slot")
                assert client.owner(slot_of(KEYS.tag(mine))) == address(replica)
                assert restarts == [1]  # the new primary is compared like a restarted one

                async def guard_reads() -> bool:  # redis-py's cluster client: the guard's reads
                    try:
                        await look_at_redis(commands, KEYS)
                    except RedisError:
                        return False
                    return True

                # The guard, told of the new primary, must be able to compare (else every
                # partition stays refused): redis-py's map is read again after its time-outs.
                await until(guard_reads, "the guard's reads to reach the promoted replica")
            finally:
                victim.process.send_signal(signal.SIGCONT)
                await commands.aclose()
