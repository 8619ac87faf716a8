"""The flusher on Redis Cluster (the session's three primaries): each partition's stream
read by its own XREADGROUP (several streams in one are CROSSSLOT there), pipelined per
primary, in the same fair shares and bounds as one multi-stream read on one Redis;
every entry stored once, acknowledged and trimmed on the primary that holds it."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from app.ledger.flusher import GROUP, STREAM_COUNT_MIN, Flusher
from app.runtime import Runtime
from app.settings import Settings
from tests.redis_cluster import LocalCluster, slot_of
from tests.support import OPERATOR, ledger_rows

pytestmark = pytest.mark.anyio

# Small bounds, so that a hundred entries take several reads and batches; PARTITIONS
# streams fit one window both on one Redis (read_max streams) and on a cluster
# (read_max / STREAM_COUNT_MIN), so both read the same windows.
PARTITIONS = 4
READ_MAX = 64
BATCH_MAX = 64
PLAYERS = 40
BUSY_DEPOSITS = 100  # on one player: a partition with more than a batch of its own
# A batch's composition: (partition, entries) in the order read.
Batch = list[tuple[int, int]]


def settings_for(url: str, directory: Path, partitions: int = PARTITIONS) -> Settings:
    settings = Settings(data_dir=str(directory / "var"))
    settings.redis.url = url
    settings.storage.url = f"sqlite:///{directory / 'ledger.db'}"
    settings.wallet.partitions = partitions
    settings.flusher.read_max = READ_MAX
    settings.flusher.batch_max = BATCH_MAX
    settings.flusher.claim_idle_ms = 0
    return settings


async def book(runtime: Runtime) -> int:
    """Opening entries for every player and a busy partition; returns the entries written."""
    wallet = runtime.wallet
    for i in range(PLAYERS):
        await wallet.create_player(f"p{i}", "EUR", 1000, "", "en", "", [], operator_id=OPERATOR)
    for n in range(BUSY_DEPOSITS):
        await wallet.adjust("p0", "deposit", 1, f"ref{n}")
    return PLAYERS + BUSY_DEPOSITS


async def flush_in_batches(flusher: Flusher) -> list[Batch]:
    """Every batch read_batches() makes until none is left, each stored as the flusher does."""
    await flusher.setup()
    batches: list[Batch] = []
    for _ in range(PLAYERS + BUSY_DEPOSITS):  # at least one entry a batch
        read, _ = await flusher.read_batches()
        if not read:
            return batches
        batches.append([(partition, len(messages)) for partition, messages in read])
        await flusher.store_batches(read)
    raise AssertionError("the flusher never ran out of entries")


async def batches_on(url: str, directory: Path) -> tuple[list[Batch], Settings, bool]:
    settings = settings_for(url, directory)
    async with Runtime(settings, url, ledger=True) as runtime:
        written = await book(runtime)
        assert runtime.flusher is not None
        batches = await flush_in_batches(runtime.flusher)
    assert sum(n for batch in batches for _, n in batch) == written
    return batches, settings, runtime.cluster


async def test_batches_are_those_of_one_redis(redis_url: str, cluster_url: str, tmp_path: Path) -> None:
    """The same bookings make the same batches on the cluster (one XREADGROUP per stream)
    as on one Redis (one XREADGROUP per window): fair shares, read_max, batch_max kept."""
    assert PARTITIONS <= READ_MAX // STREAM_COUNT_MIN, "one window on both"
    alone, _, alone_cluster = await batches_on(redis_url, tmp_path / "alone")
    spread, settings, spread_cluster = await batches_on(cluster_url, tmp_path / "cluster")
    assert (alone_cluster, spread_cluster) == (False, True)
    assert spread == alone
    assert all(sum(n for _, n in batch) <= BATCH_MAX for batch in spread)
    assert any(len(batch) > 1 for batch in spread), "windows of several streams were read"
    assert max(n for batch in spread for _, n in batch) > READ_MAX // PARTITIONS, "the busy one took what others left"
    rows = ledger_rows(settings)
    assert len({(r["partition"], r["seq"]) for r in rows}) == len(rows) == PLAYERS + BUSY_DEPOSITS


def getkeys_calls(cluster: LocalCluster) -> int:
    """COMMAND GETKEYS the primaries served: redis-py's round trip to find a command's keys."""
    total = 0
    for node in cluster.primaries:
        with contextlib.closing(node.client()) as direct:
            total += direct.info("commandstats").get("cmdstat_command|getkeys", {}).get("calls", 0)
    return total


async def test_each_entry_is_stored_once_and_trimmed_on_its_primary(
    cluster_url: str, redis_cluster: LocalCluster, tmp_path: Path
) -> None:
    settings = settings_for(cluster_url, tmp_path, partitions=256)
    async with Runtime(settings, cluster_url, ledger=True) as runtime:
        written = await book(runtime)
        assert runtime.flusher is not None
        windows = runtime.flusher.windows  # narrower than read_max streams: several entries a command
        assert {len(window) for window in windows[:-1]} == {READ_MAX // STREAM_COUNT_MIN}
        assert sorted(s for window in windows for s in window) == sorted(runtime.flusher.partition_of)
        asked = getkeys_calls(redis_cluster)
        assert await runtime.flusher.drain() == written
        assert getkeys_calls(redis_cluster) == asked, "each XREADGROUP went to its stream's primary by name"
        redis = runtime.redis
        keys = runtime.wallet.keys
        used = sorted({r["partition"] for r in ledger_rows(settings)})
        for partition in used:
            stream = keys.ledger(partition)
            assert await redis.xlen(stream) == 0, f"partition {partition} trimmed"
            assert (await redis.xpending(stream, GROUP))["pending"] == 0
    owners = {redis_cluster.owner(slot_of(keys.ledger(p))).port for p in used}
    assert owners == {node.port for node in redis_cluster.primaries}, "entries came from all three primaries"
    rows = ledger_rows(settings)
    assert len(rows) == written
    for partition in used:
        seqs = [r["seq"] for r in rows if r["partition"] == partition]
        assert seqs == list(range(1, len(seqs) + 1))


async def test_setup_creates_each_group_on_its_primary_once(
    cluster_url: str, redis_cluster: LocalCluster, tmp_path: Path
) -> None:
    settings = settings_for(cluster_url, tmp_path)
    async with Runtime(settings, cluster_url, ledger=True) as runtime:
        assert runtime.flusher is not None and isinstance(runtime.redis, RedisCluster)
        await runtime.flusher.setup()
        await runtime.flusher.setup()  # BUSYGROUP: the groups exist
        keys = runtime.wallet.keys
        for partition in range(PARTITIONS):
            owner = redis_cluster.owner(slot_of(keys.ledger(partition)))
            with contextlib.closing(owner.client()) as direct:
                assert [g["name"] for g in direct.xinfo_groups(keys.ledger(partition))] == [GROUP]
        await runtime.redis.set(keys.ledger(3), "not a stream")
        with pytest.raises(ResponseError, match="WRONGTYPE"):  # any other refusal is not swallowed
            await runtime.flusher.setup()
