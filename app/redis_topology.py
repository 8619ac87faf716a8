"""Whether redis.url names a node of a Redis Cluster (README "Scaling out").

`redis.cluster = "auto"` asks the node once, at start (INFO cluster); `walletd serve`
asks in its parent and hands the answer to its children (WALLETD_REDIS_CLUSTER), so a
worker or flush process restarted during a Redis outage starts as its siblings did.
A Redis that cannot be asked (unreachable, a wrong password or db, an ACL refusing INFO)
is taken as standalone: the process fails on its first call anyway, and a standalone
client on a cluster node never books on another node's slots (Redis answers MOVED,
unrun; app/redis_pipe.py refuses it).
"""

from __future__ import annotations

import contextlib
import logging

import redis
from redis.exceptions import RedisError

from app.settings import RedisSettings

log = logging.getLogger("walletd.redis")

# Set by `walletd serve` for its children: "true" or "false".
ENV_CLUSTER = "WALLETD_REDIS_CLUSTER"


def cluster_enabled(url: str, settings: RedisSettings) -> bool:
    """Asks the node: INFO cluster's cluster_enabled. Raises redis-py's errors."""
    client = redis.Redis.from_url(url, socket_timeout=settings.socket_timeout_ms / 1000,
                                  socket_connect_timeout=settings.connect_timeout_ms / 1000)
    with contextlib.closing(client):
        return bool(client.info("cluster").get("cluster_enabled"))


def cluster_mode(url: str, settings: RedisSettings) -> bool:
    """redis.cluster, asking the node when it is "auto" (see the module docstring)."""
    if settings.cluster != "auto":
        return settings.cluster
    if url == "embedded":
        return False
    try:
        return cluster_enabled(url, settings)
    except RedisError as exc:
        # Unreachable, a wrong password or db, an ACL refusing INFO: serve's preflight and a
        # command's first call report the real problem; a cluster taken as standalone moves
        # nothing (its MOVED replies are refused, naming [redis] cluster = true).
        log.debug("cannot ask Redis whether it is a cluster (%s): taken as standalone", exc)
        return False
