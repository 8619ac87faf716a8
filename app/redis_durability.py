"""Is the Redis walletd books in durable? Checked by `walletd serve` at start.

An answered booking must survive a crash: that needs the AOF on, fsynced before
every reply, and no key ever evicted (an evicted account or ledger stream is
money lost). See README "Durability".

On Redis Cluster every node is asked, primaries and replicas (a replica becomes the
primary of its slots at a failover, with its own settings), each problem naming its
node. A node that cannot be reached is skipped with a warning rather than refusing
the start: its partitions are refused anyway while it is down, and refusing the start
would stop every other primary's partitions too.
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
    await redis.initialize()  # the nodes, from CLUSTER SLOTS
    wrong: list[str] = []
    for node in sorted(redis.get_nodes(), key=lambda n: n.name):
        try:
            found = await settings_problems(on_node(redis, node))
        except (RedisConnectionError, RedisTimeoutError) as exc:
            log.warning("Redis Cluster node %s (%s) cannot be reached to check its durability settings (%s); "
                        "checked at the next start", node.name, node.server_type, exc)
            continue
        wrong += [f"node {node.name} ({node.server_type}): {problem}" for problem in found]
    return wrong


def on_node(redis: RedisCluster, node: ClusterNode) -> ConfigGet:
    async def config_get(name: str) -> Mapping[str | None, str | None]:
        return await redis.config_get(name, target_nodes=node)

    return config_get


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
