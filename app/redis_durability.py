"""Is the Redis walletd books in durable? Checked by `walletd serve` at start.

An answered booking must survive a crash: that needs the AOF on, fsynced before
every reply, and no key ever evicted (an evicted account or ledger stream is
money lost). See README "Durability".

On Redis Cluster every node CLUSTER NODES lists is asked, primaries and replicas (a
replica becomes the primary of its slots at a failover, with its own settings; CLUSTER
SLOTS, redis-py's node list, leaves out a replica that has not synced yet), each problem
naming its node. A node that cannot be reached is skipped with a warning rather than
refusing the start: its partitions are refused anyway while it is down, and refusing
the start would stop every other primary's partitions too.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError, ResponseError, TimeoutError as RedisTimeoutError

from app.redis_client import RedisClient

log = logging.getLogger("walletd.redis")

# CONFIG GET parameter -> the value durability needs.
REQUIRED = {"appendonly": "yes", "appendfsync": "always", "maxmemory-policy": "noeviction"}


# CLUSTER NODES flags of a node that is not to be asked: failed, no address, joining.
UNREACHABLE_FLAGS = {"fail", "noaddr", "handshake"}
# CONFIG GET of one parameter on one server: {parameter: value}.
ConfigGet = Callable[[str], Awaitable[Mapping[str | None, str | None]]]


class NotDurable(Exception):
    pass


async def problems(redis: RedisClient) -> list[str]:
    """What is wrong with the server's settings, in words (empty: durable)."""
    if isinstance(redis, RedisCluster):
        return await cluster_problems(redis)
    return await settings_problems(redis.config_get)


async def cluster_problems(redis: RedisCluster) -> list[str]:
    """Every node's problems, each prefixed with the node's address and role."""
    listed = await redis.cluster_nodes()  # address -> its fields
    wrong: list[str] = []
    for address, fields in sorted(listed.items()):
        flags = str(fields["flags"])
        role = "replica" if "slave" in flags.split(",") else "primary"
        try:
            found = await node_problems(redis, address, flags)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            log.warning("Redis Cluster node %s (%s) cannot be reached to check its durability settings (%s); "
                        "checked at the next start", address, role, exc)
            continue
        wrong += [f"node {address} ({role}): {problem}" for problem in found]
    return wrong


async def node_problems(redis: RedisCluster, address: str, flags: str) -> list[str]:
    """One node's problems, asked on a connection of its own (closed after)."""
    if UNREACHABLE_FLAGS & set(flags.split(",")):
        raise RedisConnectionError(f"the cluster marks it {flags}")
    host, _, port = address.rpartition(":")
    node = ClusterNode(host, int(port), **redis.connection_kwargs)

    async def config_get(name: str) -> Mapping[str | None, str | None]:
        reply: Mapping[str | None, str | None] = await node.execute_command("CONFIG GET", name)
        return reply

    try:
        return await settings_problems(config_get)
    finally:
        await node.disconnect()


async def settings_problems(config_get: ConfigGet) -> list[str]:
    """One server's problems, asked through config_get (CONFIG GET of one parameter)."""
    try:
        found = {name: await config_get(name) for name in REQUIRED}
    except ResponseError as exc:  # CONFIG renamed away, or an ACL without +config|get
        refused = f"its settings cannot be read (CONFIG GET refused: {exc}); allow CONFIG GET for walletd's user"
        return [refused]
    wrong = []
    for name, wanted in REQUIRED.items():
        value = found[name].get(name)
        if value != wanted:
            wrong.append(f"{name} is {value!r}, needs {wanted!r}")
    return wrong


async def check(redis: RedisClient, require_durable: bool) -> None:
    """Raise NotDurable naming each wrong setting; with require_durable off, warn instead."""
    wrong = await problems(redis)
    if not wrong:
        return
    text = "; ".join(wrong)
    if require_durable:
        raise NotDurable(f"Redis is not durable: {text}. Fix Redis, or set [redis] require_durable = false "
                         f"to run without the durability guarantee")
    log.warning("[redis] require_durable = false: Redis is not durable (%s); an answered booking "
                "may be lost if Redis crashes", text)
