"""app/redis_client.connect on Redis Cluster: redis-py's cluster client, routing each
command to the primary that owns its key's slot, never re-sending a command whose
outcome is unknown, refusing what a cluster cannot be (a db other than 0, unix://)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError

from app import redis_durability
from app.errors import ConnectionFailed, OutcomeUnknown
from app.keys import Keys
from app.redis_client import ClusterClient, command_errors, connect
from app.redis_server import free_port
from app.runtime import Runtime
from app.settings import ConfigError, RedisSettings, Settings
from tests.redis_cluster import LocalCluster, slot_of

# Long enough for a reply on a loaded machine, short enough that a paused node times it out.
SHORT = RedisSettings(socket_timeout_ms=300, connect_timeout_ms=300)
# How long a busy script holds a node: well past SHORT's time-out, below Redis's
# busy-reply-threshold (5 s: past it Redis answers BUSY instead of waiting).
BUSY_MS = 1500
# A script that keeps its node busy for ARGV[1] ms: commands sent meanwhile wait in their sockets.
BUSY_LUA = """
local function now() local t = redis.call('TIME') return t[1] * 1000 + t[2] / 1000 end
local start = now()
while now() - start < tonumber(ARGV[1]) do end
"""


@pytest.mark.anyio
async def test_commands_reach_every_primary(cluster_url: str, redis_cluster: LocalCluster) -> None:
    client = connect(cluster_url, RedisSettings(), cluster=True)
    assert isinstance(client, ClusterClient)
    keys = Keys(256)
    try:
        for partition in range(keys.partitions):
            await client.set(keys.seq(partition), partition)
        owners = {redis_cluster.owner(slot_of(keys.seq(p))).port for p in range(keys.partitions)}
        assert owners == {node.port for node in redis_cluster.primaries}, "partitions on all three primaries"
        for node in redis_cluster.primaries:  # each key is on its slot's owner, not where the URL points
            with contextlib.closing(node.client()) as direct:
                held = direct.keys("*")
            assert held and all(redis_cluster.owner(slot_of(key)) is node for key in held)
        assert [int(v) for v in [await client.get(keys.seq(p)) for p in range(keys.partitions)]] == list(range(256))
    finally:
        await client.aclose()


@pytest.mark.anyio
async def test_standalone_by_default(redis_url: str) -> None:
    client = connect(redis_url, RedisSettings())
    assert isinstance(client, Redis)
    await client.aclose()


@pytest.mark.parametrize(("url", "said"), [
    ("redis://127.0.0.1:7000/3", "a Redis Cluster has only db 0"),
    ("unix:///tmp/redis.sock", "redis:// or rediss://"),
])
def test_what_a_cluster_cannot_be_is_refused(url: str, said: str) -> None:
    with pytest.raises(ConfigError, match=said):
        connect(url, RedisSettings(), cluster=True)


def test_db_zero_is_a_cluster_url() -> None:
    assert isinstance(connect("redis://127.0.0.1:7000/0", RedisSettings(), cluster=True), RedisCluster)


@pytest.mark.anyio
async def test_unreachable_cluster_is_a_connection_error() -> None:
    """redis-py raises RedisClusterException (no RedisError) when no node answers; walletd's
    outage handling expects a connection error, and the protocols ConnectionFailed."""
    client = connect(f"redis://127.0.0.1:{free_port()}", SHORT, cluster=True)
    try:
        with pytest.raises(RedisConnectionError):
            await client.get("w:alias:stargame:1")
        with pytest.raises(ConnectionFailed):
            with command_errors():
                await client.get("w:alias:stargame:1")
    finally:
        await client.aclose()


@pytest.mark.anyio
async def test_a_timed_out_command_is_not_sent_again(cluster_url: str, redis_cluster: LocalCluster) -> None:
    """A write its node could not serve before the socket time-out (a busy script) ran
    once when the node was free again: redis-py's cluster client (10 retries by default,
    each a new INCR) did not send it again."""
    key = Keys.alias("stargame", "timeout-probe")
    owner = redis_cluster.owner(slot_of(key))
    client = connect(cluster_url, SHORT, cluster=True)
    try:
        await client.get(key)  # the slot map is read before the node is busy
        with contextlib.closing(owner.client()) as direct:
            busy = asyncio.create_task(asyncio.to_thread(direct.eval, BUSY_LUA, 0, BUSY_MS))
            await asyncio.sleep(0.2)  # the script has started
            with pytest.raises(OutcomeUnknown), command_errors():
                await client.incr(key)
            await busy
            await asyncio.sleep(0.5)  # the INCR waiting in its socket runs
            assert direct.get(key) == "1"
    finally:
        await client.aclose()


@pytest.mark.anyio
async def test_runtime_uses_the_cluster_client(cluster_url: str, tmp_path: Path) -> None:
    settings = Settings(data_dir=str(tmp_path / "var"))
    settings.redis.url = cluster_url
    settings.storage.url = f"sqlite:///{tmp_path / 'ledger.db'}"
    async with Runtime(settings, cluster_url) as runtime:
        assert runtime.cluster is True
        assert isinstance(runtime.redis, RedisCluster)
        assert await runtime.redis.hget(Keys.meta(), "partitions") == str(settings.wallet.partitions)



@pytest.mark.anyio
async def test_durability_is_checked_on_every_node(cluster_url: str, redis_cluster: LocalCluster) -> None:
    client = connect(cluster_url, RedisSettings(), cluster=True)
    lax = redis_cluster.primaries[1]
    try:
        assert await redis_durability.problems(client) == []
        with contextlib.closing(lax.client()) as direct:
            direct.config_set("appendfsync", "everysec")
            try:
                assert await redis_durability.problems(client) == [
                    f"node 127.0.0.1:{lax.port} (primary): appendfsync is 'everysec', needs 'always'"]
            finally:
                direct.config_set("appendfsync", "always")
    finally:
        await client.aclose()
